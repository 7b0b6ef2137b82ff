// unison-stream browser client: session over HTTP, control over the websocket, media over
// WebRTC (docs/protocol.md). window.unison exposes connect/say/interrupt and the latest stats.
// The one page script: the server serves it at /static/app.js, and examples/web loads that
// same file with data-token-url="token" (its backend mints the session; no API key here).
"use strict";
(() => {
  const TOKEN_URL = document.currentScript && document.currentScript.dataset.tokenUrl;
  // acknowledge what was received (docs/protocol.md, Resume), so the server forgets it
  const ACK_EVERY = 32;  // messages …
  const ACK_PERIOD_MS = 1000;  // … or ms, whichever first
  const ack = { last: 0, sent: 0, at: 0 };
  const $ = (id) => document.getElementById(id);
  const state = { ws: null, pc: null, sessionId: null, token: null, nextId: 1, stats: {},
                  messages: [], prev: null };
  window.unison = state;

  const log = (line) => {
    const el = $("log");
    el.textContent = `${new Date().toISOString().slice(11, 23)} ${line}\n` + el.textContent;
  };
  const setStatus = (s) => { $("status").textContent = s; };
  const enable = (on) => {
    for (const id of ["text", "say", "interrupt", "listening", "disconnect"]) $(id).disabled = !on;
    $("connect").disabled = on;
  };
  const send = (msg) => { if (state.ws && state.ws.readyState === 1) state.ws.send(JSON.stringify(msg)); };

  const keyFromHash = new URLSearchParams(location.hash.slice(1)).get("key");
  if (keyFromHash) $("key").value = keyFromHash;

  async function waitGathering(pc) {
    if (pc.iceGatheringState === "complete") return;
    await new Promise((resolve) => {
      const check = () => { if (pc.iceGatheringState === "complete") resolve(); };
      pc.addEventListener("icegatheringstatechange", check);
      setTimeout(resolve, 3000);
    });
  }

  async function startMedia() {
    const pc = new RTCPeerConnection({ iceServers: [] });
    state.pc = pc;
    Object.assign(sync, { targetMs: 0, lastMs: -Infinity, prev: {} });
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    pc.ontrack = (ev) => {
      // both tracks share one stream id, so Chromium lip-syncs them
      $("video").srcObject = ev.streams[0];
      $("video").play().catch((e) => log(`play(): ${e}`));
    };
    pc.onconnectionstatechange = () => log(`peer connection ${pc.connectionState}`);
    await pc.setLocalDescription(await pc.createOffer());
    await waitGathering(pc);
    send({ type: "offer", id: "offer", sdp: pc.localDescription.sdp });
  }

  function ackDue(msg) {
    if (typeof msg.seq !== "number" || msg.seq <= ack.last) return;
    ack.last = msg.seq;
    const now = performance.now();
    if (ack.last - ack.sent >= ACK_EVERY || now - ack.at >= ACK_PERIOD_MS) {
      send({ type: "ack", seq: ack.last });
      Object.assign(ack, { sent: ack.last, at: now });
    }
  }

  async function onMessage(msg) {
    state.messages.push(msg);
    ackDue(msg);
    switch (msg.type) {
      case "ready":
        state.sessionId = msg.session_id;
        setStatus(`session ${msg.session_id} (${msg.media.width}×${msg.media.height} @ ${msg.media.fps} fps)`);
        enable(true);
        await startMedia();
        break;
      case "answer":
        await state.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
        break;
      case "utterance": log(`utterance ${msg.id} ${msg.event} @ ${msg.media_time_s}s`); break;
      case "state": log(`state ${msg.state}`); break;
      case "stats": state.serverStats = msg; break;
      case "error": log(`error ${msg.code}: ${msg.message}`); break;
    }
  }

  async function connect() {
    setStatus("connecting…");
    Object.assign(ack, { last: 0, sent: 0, at: 0 });
    // with data-token-url the page's own backend creates the session with the API key it holds
    // and hands back only a short-lived, single-session token and the avatar server's ws_url
    const r = TOKEN_URL ? await fetch(TOKEN_URL, { method: "POST" }) : await fetch("/v1/sessions", {
      method: "POST",
      headers: { "Authorization": `Bearer ${$("key").value}`, "Content-Type": "application/json" },
      // who the session shows: the avatar picked in the avatar panel (avatars.js), if any
      body: JSON.stringify(window.unisonAvatars ? window.unisonAvatars.sessionBody() : {}),
    });
    const body = await r.json();
    if (!r.ok) { setStatus(`error: ${body.error ? body.error.message : r.status}`); return false; }
    state.token = body.token;
    const ws = new WebSocket(body.ws_url);
    state.ws = ws;
    ws.onmessage = (ev) => onMessage(JSON.parse(ev.data));
    ws.onclose = (ev) => { log(`websocket closed ${ev.code} ${ev.reason}`); disconnect(); };
    return true;
  }

  function disconnect() {
    if (state.ws) { send({ type: "close" }); state.ws.close(); state.ws = null; }
    if (state.pc) { state.pc.close(); state.pc = null; }
    enable(false);
    setStatus("not connected");
  }

  function say(text, opts = {}) {
    const id = `u${state.nextId++}`;
    send({ type: "say", id, text, ...opts });
    return id;
  }

  // ---- lip-sync trim (docs/server.md "Lip sync in the browser") ----
  // Chromium lip-syncs tracks of one stream, but slowly: it ignores offsets under 30 ms and
  // corrects the rest over seconds, so a stream starts with video ahead of audio by about the
  // audio jitter buffer. The page delays video toward audio at once through the video
  // receiver's jitterBufferTarget: by the measured playout offset once sender reports give one,
  // before that by how much more the audio buffer holds. Audio is never delayed (that would add
  // latency to what the user hears). Chromium moves the video delay toward a new target by at
  // most ~100 ms per second, so the next correction waits until the last one has been applied
  // (and at least TRIM_EVERY_MS): as often as that allows, so the page follows the audio buffer
  // as it drains after a stall of the audio output.
  const STATS_EVERY_MS = 250;
  const TRIM_EVERY_MS = 500;
  const VIDEO_SLEW_MS_PER_S = 100;
  const TRIM_DEADBAND_MS = 8;
  const MAX_VIDEO_DELAY_MS = 1000;
  const sync = { targetMs: 0, nextMs: -Infinity, prev: {} };

  function recentBufferMs(r) {  // jitter-buffer delay over the last poll, not the lifetime mean
    const prev = sync.prev[r.kind];
    sync.prev[r.kind] = { delay: r.jitterBufferDelay || 0, count: r.jitterBufferEmittedCount || 0 };
    if (!prev || !r.jitterBufferEmittedCount || r.jitterBufferEmittedCount <= prev.count) return null;
    return 1000 * (r.jitterBufferDelay - prev.delay) / (r.jitterBufferEmittedCount - prev.count);
  }

  function trimLipSync(s) {
    const rx = state.pc && state.pc.getReceivers().find((r) => r.track && r.track.kind === "video");
    if (!rx || !("jitterBufferTarget" in rx)) return null;
    const t = performance.now();
    if (s.avOffsetMs === null) {  // before sender reports: follow the audio buffer's excess
      if (s.audioBufferNowMs == null || s.videoBufferNowMs == null) return sync.targetMs;
      const base = s.videoBufferNowMs - sync.targetMs;  // the video buffer without our delay
      const next = Math.round(Math.min(MAX_VIDEO_DELAY_MS, Math.max(0, s.audioBufferNowMs - base)));
      if (Math.abs(next - sync.targetMs) >= TRIM_DEADBAND_MS) {
        rx.jitterBufferTarget = next;
        sync.targetMs = next;
      }
      return sync.targetMs;
    }
    if (t < sync.nextMs) return sync.targetMs;
    const lead = s.avOffsetMs;  // > 0: the frame on screen is ahead of the sound being played
    if (lead === null || Math.abs(lead) < TRIM_DEADBAND_MS) return sync.targetMs;
    const next = Math.round(Math.min(MAX_VIDEO_DELAY_MS, Math.max(0, sync.targetMs + lead)));
    if (next !== sync.targetMs) {
      rx.jitterBufferTarget = next;
      const applyMs = 1000 * Math.abs(next - sync.targetMs) / VIDEO_SLEW_MS_PER_S;
      sync.targetMs = next;
      sync.nextMs = t + Math.max(TRIM_EVERY_MS, applyMs);
    }
    return sync.targetMs;
  }

  // ---- overlay from getStats(): fps, jitter buffer, audio/video playout offset ----
  async function pollStats() {
    if (!state.pc) return;
    const report = await state.pc.getStats();
    const s = { t: performance.now() };
    report.forEach((r) => {
      if (r.type !== "inbound-rtp") return;
      const buf = r.jitterBufferEmittedCount ? 1000 * r.jitterBufferDelay / r.jitterBufferEmittedCount : null;
      const now = recentBufferMs(r);
      if (r.kind === "video") {
        Object.assign(s, { framesDecoded: r.framesDecoded || 0, fps: r.framesPerSecond || 0,
          freezeCount: r.freezeCount || 0, videoBufferMs: buf, videoBufferNowMs: now,
          videoPlayout: r.estimatedPlayoutTimestamp });
      } else if (r.kind === "audio") {
        Object.assign(s, { samplesReceived: r.totalSamplesReceived || 0,
          concealedSamples: r.concealedSamples || 0, audioLevel: r.audioLevel || 0,
          audioBufferMs: buf, audioBufferNowMs: now, audioPlayout: r.estimatedPlayoutTimestamp });
      }
    });
    s.avOffsetMs = (s.videoPlayout && s.audioPlayout) ? s.videoPlayout - s.audioPlayout : null;
    s.videoDelayTargetMs = trimLipSync(s);
    state.stats = s;
    const f = (v, d = 0) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
    const srv = state.serverStats || {};
    $("overlay").textContent =
      `fps ${f(s.fps)}  decoded ${f(s.framesDecoded)}  freezes ${f(s.freezeCount)}\n` +
      `buffer v ${f(s.videoBufferMs)} ms  a ${f(s.audioBufferMs)} ms  server ${f(srv.buffer_ms)} ms\n` +
      `A/V offset ${f(s.avOffsetMs)} ms  video delay +${f(s.videoDelayTargetMs)} ms  underruns ${f(srv.underruns)}`;
  }
  setInterval(() => { pollStats().catch((e) => log(`stats: ${e}`)); }, STATS_EVERY_MS);

  $("connect").onclick = () => connect().catch((e) => setStatus(`error: ${e}`));
  $("disconnect").onclick = disconnect;
  $("say").onclick = () => { const t = $("text").value.trim(); if (t) { say(t); $("text").value = ""; } };
  $("text").addEventListener("keydown", (ev) => { if (ev.key === "Enter") $("say").onclick(); });
  $("interrupt").onclick = () => send({ type: "interrupt" });
  $("listening").onchange = (ev) => send({ type: "set_state", state: ev.target.checked ? "listening" : "idle" });
  Object.assign(state, { connect, disconnect, say, send });
})();
