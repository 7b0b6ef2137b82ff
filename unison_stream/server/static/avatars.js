// unison-stream page: your own avatars (docs/avatars.md). Upload a picture, design a
// character with a live preview, pick a saved avatar; app.js opens the session on the pick
// through window.unisonAvatars.sessionBody(). Every call carries the page's API key.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const A = { selected: null, traits: null, timer: null, urls: [] };
  window.unisonAvatars = A;

  const key = () => $("key").value;
  const auth = () => ({ "Authorization": `Bearer ${key()}` });
  const say = (line) => { $("avatar-status").textContent = line; };
  const errorOf = async (r) => {
    try { return (await r.json()).error.message; } catch (e) { return `HTTP ${r.status}`; }
  };

  // what POST /v1/sessions is asked for: the picked avatar, else a world identity
  A.sessionBody = () => {
    if (A.selected) return { avatar: A.selected };
    return { identity: Math.max(0, parseInt($("identity").value || "0", 10) || 0) };
  };

  async function imageUrl(path) {
    const r = await fetch(path, { headers: auth() });
    if (!r.ok) throw new Error(await errorOf(r));
    const url = URL.createObjectURL(await r.blob());
    A.urls.push(url);
    return url;
  }

  function pick(id) {
    A.selected = id;
    for (const el of $("avatar-list").children) {
      el.classList.toggle("picked", el.dataset.id === (id || ""));
    }
    say(id ? `sessions open on ${id}` : "sessions open on the world identity");
  }

  async function refresh() {
    if (!key()) return;
    const r = await fetch("/v1/avatars", { headers: auth() });
    if (!r.ok) { say(await errorOf(r)); return; }
    const listed = await r.json();
    for (const u of A.urls.splice(0)) URL.revokeObjectURL(u);
    const list = $("avatar-list");
    list.textContent = "";
    const world = document.createElement("div");
    world.className = "avatar";
    world.dataset.id = "";
    world.textContent = "world identity";
    world.onclick = () => pick(null);
    list.appendChild(world);
    for (const a of listed.avatars) {
      const card = document.createElement("div");
      card.className = "avatar";
      card.dataset.id = a.id;
      card.title = a.caption;
      const img = document.createElement("img");
      img.width = 64; img.height = 64;
      imageUrl(a.preview_url).then((u) => { img.src = u; }).catch((e) => say(`${e}`));
      const del = document.createElement("button");
      del.textContent = "×";
      del.title = "delete";
      del.onclick = async (ev) => {
        ev.stopPropagation();
        const d = await fetch(`/v1/avatars/${a.id}`, { method: "DELETE", headers: auth() });
        if (!d.ok) say(await errorOf(d));
        if (A.selected === a.id) A.selected = null;
        await refresh();
      };
      card.append(img, del);
      card.onclick = () => pick(a.id);
      list.appendChild(card);
    }
    $("avatar-usage").textContent =
      `${listed.usage.avatars} of ${listed.usage.max_avatars} avatars`;
    pick(listed.avatars.some((a) => a.id === A.selected) ? A.selected : null);
  }

  async function created(r) {
    if (!r.ok) { say(`refused (${r.status}): ${await errorOf(r)}`); return; }
    const a = await r.json();
    A.selected = a.id;
    await refresh();
    say(`saved ${a.id}`);
  }

  async function upload(file) {
    if (!file) return;
    say(`uploading ${file.name}…`);
    const r = await fetch("/v1/avatars", {
      method: "POST",
      headers: { ...auth(), "Content-Type": file.type || "application/octet-stream" },
      body: file,
    });
    await created(r);
  }

  // ---- the designer: one select per trait, colour slots also take a free colour ----
  function design() {
    const d = {};
    for (const sel of $("designer").querySelectorAll("select[data-trait]")) {
      const t = sel.dataset.trait;
      if (sel.value === "") continue;  // the seed's own
      d[t] = sel.value === "custom" ? $(`colour-${t}`).value : sel.value;
    }
    const worn = [...$("designer").querySelectorAll("input[data-accessory]:checked")];
    if (worn.length) d.accessories = worn.map((c) => c.dataset.accessory);
    d.seed = Math.max(0, parseInt($("design-seed").value || "0", 10) || 0);
    return d;
  }

  async function preview() {
    const r = await fetch("/v1/avatars/preview", {
      method: "POST",
      headers: { ...auth(), "Content-Type": "application/json" },
      body: JSON.stringify({ design: design() }),
    });
    if (!r.ok) { say(`design refused: ${await errorOf(r)}`); return; }
    const old = $("design-preview").src;
    $("design-preview").src = URL.createObjectURL(await r.blob());
    if (old.startsWith("blob:")) URL.revokeObjectURL(old);
  }
  const later = () => { clearTimeout(A.timer); A.timer = setTimeout(preview, 200); };

  async function buildDesigner() {
    if (A.traits || !key()) return;
    const r = await fetch("/v1/avatars/traits", { headers: auth() });
    if (!r.ok) { say(await errorOf(r)); return; }
    A.traits = await r.json();
    const box = $("designer");
    for (const [t, choices] of Object.entries(A.traits.traits)) {
      const label = document.createElement("label");
      label.textContent = `${t.replace("_", " ")} `;
      const sel = document.createElement("select");
      sel.dataset.trait = t;
      sel.id = `trait-${t}`;
      for (const c of ["", ...choices]) sel.add(new Option(c || "(from seed)", c));
      label.appendChild(sel);
      if (A.traits.colour_slots.includes(t)) {
        sel.add(new Option("custom colour", "custom"));
        const colour = document.createElement("input");
        colour.type = "color";
        colour.id = `colour-${t}`;
        colour.oninput = () => { sel.value = "custom"; later(); };
        label.appendChild(colour);
      }
      sel.onchange = later;
      box.appendChild(label);
    }
    for (const a of A.traits.accessories) {
      const label = document.createElement("label");
      const c = document.createElement("input");
      c.type = "checkbox";
      c.dataset.accessory = a;
      c.onchange = later;
      label.append(c, ` ${a}`);
      box.appendChild(label);
    }
    await preview();
  }

  async function saveDesign() {
    const r = await fetch("/v1/avatars", {
      method: "POST",
      headers: { ...auth(), "Content-Type": "application/json" },
      body: JSON.stringify({ design: design() }),
    });
    await created(r);
  }

  const start = () => { buildDesigner().then(refresh).catch((e) => say(`${e}`)); };
  $("avatar-file").onchange = (ev) => upload(ev.target.files[0]).catch((e) => say(`${e}`));
  $("design-save").onclick = () => saveDesign().catch((e) => say(`${e}`));
  $("design-seed").oninput = later;
  $("key").addEventListener("change", start);
  A.refresh = refresh;
  if (key()) start();
})();
