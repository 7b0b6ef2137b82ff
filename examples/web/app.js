// unison-stream browser client (standalone variant of unison_stream/server/static/app.js):
// token from this page's backend, control over the avatar server's websocket, media over
// WebRTC (docs/protocol.md). window.unison exposes connect/say/interrupt and the latest stats.
"use strict";
(() => {
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

  async function onMessage(msg) {
    state.messages.push(msg);
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
    // the page's own backend (serve_page.py) creates the session with the API key it holds and
    // hands back only a short-lived, single-session token and the avatar server's ws_url
    const r = await fetch("token", { method: "POST" });
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

  // ---- overlay from getStats(): fps, jitter buffer, audio/video playout offset ----
  async function pollStats() {
    if (!state.pc) return;
    const report = await state.pc.getStats();
    const s = { t: performance.now() };
    report.forEach((r) => {
      if (r.type !== "inbound-rtp") return;
      const buf = r.jitterBufferEmittedCount ? 1000 * r.jitterBufferDelay / r.jitterBufferEmittedCount : null;
      if (r.kind === "video") {
        Object.assign(s, { framesDecoded: r.framesDecoded || 0, fps: r.framesPerSecond || 0,
          freezeCount: r.freezeCount || 0, videoBufferMs: buf, videoPlayout: r.estimatedPlayoutTimestamp });
      } else if (r.kind === "audio") {
        Object.assign(s, { samplesReceived: r.totalSamplesReceived || 0,
          concealedSamples: r.concealedSamples || 0, audioLevel: r.audioLevel || 0,
          audioBufferMs: buf, audioPlayout: r.estimatedPlayoutTimestamp });
      }
    });
    s.avOffsetMs = (s.videoPlayout && s.audioPlayout) ? s.videoPlayout - s.audioPlayout : null;
    state.stats = s;
    const f = (v, d = 0) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
    const srv = state.serverStats || {};
    $("overlay").textContent =
      `fps ${f(s.fps)}  decoded ${f(s.framesDecoded)}  freezes ${f(s.freezeCount)}\n` +
      `buffer v ${f(s.videoBufferMs)} ms  a ${f(s.audioBufferMs)} ms  server ${f(srv.buffer_ms)} ms\n` +
      `A/V offset ${f(s.avOffsetMs)} ms  underruns ${f(srv.underruns)}`;
  }
  setInterval(() => { pollStats().catch((e) => log(`stats: ${e}`)); }, 500);

  $("connect").onclick = () => connect().catch((e) => setStatus(`error: ${e}`));
  $("disconnect").onclick = disconnect;
  $("say").onclick = () => { const t = $("text").value.trim(); if (t) { say(t); $("text").value = ""; } };
  $("text").addEventListener("keydown", (ev) => { if (ev.key === "Enter") $("say").onclick(); });
  $("interrupt").onclick = () => send({ type: "interrupt" });
  $("listening").onchange = (ev) => send({ type: "set_state", state: ev.target.checked ? "listening" : "idle" });
  Object.assign(state, { connect, disconnect, say, send });
})();
