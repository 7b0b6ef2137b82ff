"""``unison-stream bench serve --json``: what a client of the server gets, measured at in-process
aiortc clients (and, with ``--chromium``, a headless Chromium page) against a server
subprocess on 127.0.0.1.

Per phase — ``s1`` (one session) and ``s4`` (four concurrent sessions, saying at once):

- ``first_media_ms``: ``say`` sent → first audible 20 ms audio frame decoded at the client
  (median over trials × sessions; ``…_all`` lists them); a trial starts only once the
  client's audio has been quiet for 0.5 s, so it never reads audio left over from the last.
- ``hops_ms``: the same path hop by hop (medians): the server's ``trace_ms`` of the
  ``started`` event (queued, planned, generated, decoded, in_clock, played: ms after the server
  received the say) and ``audible`` at the client (ms after the say was sent; same host).
- ``interrupt_ms``: ``interrupt`` sent → first quiet audio frame at the client.
- ``underrun_slots_during_speech``: idle slots the server cut into utterances (all sessions);
  ``served_rtf``: the engine's media seconds per wall second as the server reports it (median).
- ``loop_lag_ms_p50`` / ``_p99`` / ``_max``: the server's 10 ms ticker over the phase.

Then ``encode_once_cpu_ratio``: server CPU per viewer with 4 broadcast viewers ÷ with 1
viewer (1.0 would mean per-viewer encoding). ``--chromium``: a ``chromium`` phase with the
served page in headless Chromium (``say`` → first audio energy in its ``getStats``,
underruns during speech, A/V playout offsets). The engine is the real one unless
``--engine fake``; the host is printed (``runtime.host_info``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from unison_stream.server.media import AUDIO_FRAME_SAMPLES, HOPS
from unison_stream.server.webrtc import restrict_to_loopback

__all__ = ["register"]

log = logging.getLogger(__name__)

KEY = "bench-key"
LONG_TEXT = "This is a long sentence for the benchmark to interrupt half way through, " * 3


class _Viewer:
    def __init__(self) -> None:
        self.audio: list[tuple[float, int]] = []  # (monotonic arrival, pts from the first frame)
        self.video: list[tuple[float, int]] = []  # the same for video (90 kHz pts)
        self.messages: list[dict[str, Any]] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.http = aiohttp.ClientSession()
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.pc = RTCPeerConnection()

    async def open(self, base: str, body: dict[str, Any]) -> None:
        r = await self.http.post(
            f"{base}/v1/sessions", json=body, headers={"Authorization": f"Bearer {KEY}"}
        )
        info = await r.json()
        if r.status != 201:
            raise RuntimeError(f"session refused: {info}")
        self.ws = await self.http.ws_connect(info["ws_url"])
        self.tasks.append(asyncio.ensure_future(self._read()))
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.on("track", lambda t: self.tasks.append(asyncio.ensure_future(self._consume(t))))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        assert self.pc.localDescription is not None
        await self.send({"type": "offer", "sdp": self.pc.localDescription.sdp})
        ans = await self.wait(lambda m: m["type"] == "answer", 30)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=ans["sdp"], type="answer"))

    async def send(self, msg: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps(msg))

    async def _read(self) -> None:
        assert self.ws is not None
        async for m in self.ws:
            if m.type == aiohttp.WSMsgType.TEXT:
                self.messages.append(json.loads(m.data))

    async def _consume(self, track: Any) -> None:
        first: int | None = None
        into = self.audio if track.kind == "audio" else self.video
        try:
            while True:
                frame = await track.recv()
                first = frame.pts if first is None else first  # RTP timestamps: random origin
                into.append((time.monotonic(), (frame.pts - first) % 2**32))
        except MediaStreamError:
            pass

    def stat(self, key: str) -> float:
        """``key`` of the latest ``stats`` message from the server (0 before the first)."""
        for m in reversed(self.messages):
            if m.get("type") == "stats":
                return float(m.get(key, 0.0))
        return 0.0

    async def wait(self, pred: Any, timeout: float) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for m in self.messages:
                if pred(m):
                    return m
            await asyncio.sleep(0.01)
        raise TimeoutError("no matching message from the server")

    async def arrival(self, pts: int, timeout: float) -> float:
        """When the audio frame holding sample ``pts`` of this client's track arrived."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for t, p in reversed(self.audio):
                if p <= pts < p + AUDIO_FRAME_SAMPLES:
                    return t
            await asyncio.sleep(0.005)
        raise TimeoutError(f"audio sample {pts} never reached the client")

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await self.pc.close()
        if self.ws is not None:
            await self.ws.close()
        await self.http.close()


def p50_max(xs: list[float]) -> dict[str, float]:
    """Median and maximum of ``xs`` (NaN for none): the bench harnesses' per-figure summary."""
    if not xs:
        return {"p50": float("nan"), "max": float("nan")}
    return {"p50": statistics.median(xs), "max": max(xs)}


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def _trial(v: _Viewer, uid: str) -> dict[str, float]:
    """One say → its first audio frame decoded at the client → interrupt → the first frame
    after the cut, at one client; with the hops of the utterance. The frames are found by the
    audio pts the server names in ``started`` / ``interrupted``, so a trial never takes audio
    left over from the last one (nor the synthetic world's ambience) for speech."""
    t0 = time.monotonic()
    await v.send({"type": "say", "id": uid, "text": LONG_TEXT})
    started = await v.wait(lambda m: m.get("event") == "started" and m.get("id") == uid, 60)
    t_on = await v.arrival(int(started["audio_pts"]), 10)
    await asyncio.sleep(1.0)
    t1 = time.monotonic()
    await v.send({"type": "interrupt"})
    cut = await v.wait(
        lambda m: m.get("event") == "interrupted" and m.get("id") == uid and "audio_pts" in m, 30
    )
    t_off = await v.arrival(int(cut["audio_pts"]), 10)
    out = {f"hop_{k}": float(x) for k, x in started.get("trace_ms", {}).items()}
    out.update(first=1000 * (t_on - t0), interrupt=1000 * (t_off - t1))
    out["hop_audible"] = out["first"]
    return out


async def _healthz(base: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        r = await http.get(f"{base}/healthz")
        out: dict[str, Any] = await r.json()
        return out


async def _latencies(base: str, trials: int, sessions: int) -> dict[str, Any]:
    """``trials`` rounds of every one of ``sessions`` private sessions saying at once."""
    viewers = [_Viewer() for _ in range(sessions)]
    try:
        for v in viewers:
            await v.open(base, {})
        await asyncio.sleep(3.0)  # idle streams settle
        under0 = [v.stat("speech_underruns") for v in viewers]
        t_phase = time.monotonic()
        rows: list[dict[str, float]] = []
        for i in range(trials):
            rows += await asyncio.gather(*(_trial(v, f"t{i}v{j}") for j, v in enumerate(viewers)))
            await asyncio.sleep(1.0)
        await asyncio.sleep(1.5)  # the last stats message after the last trial
        lag = (await _healthz(base))["loop_lag_ms"]
        phase_s = time.monotonic() - t_phase
        hops = sorted({k for r in rows for k in r if k.startswith("hop_")}, key=_hop_order)
        hop_ms = {k[4:]: statistics.median(r[k] for r in rows if k in r) for k in hops}
        return {
            "first_media_ms": statistics.median(r["first"] for r in rows),
            "first_media_ms_all": [round(r["first"], 1) for r in rows],
            "hops_ms": hop_ms,
            "interrupt_ms": statistics.median(r["interrupt"] for r in rows),
            "interrupt_ms_all": [round(r["interrupt"], 1) for r in rows],
            "underrun_slots_during_speech": sum(v.stat("speech_underruns") for v in viewers)
            - sum(under0),
            "served_rtf": statistics.median(v.stat("rtf") for v in viewers),
            "loop_lag_ms_p50": lag["p50"],
            "loop_lag_ms_p99": lag["p99"],
            "loop_lag_ms_max": lag["max"],
            "loop_lag_window_covers_phase": phase_s <= 30.0,
        }
    finally:
        for v in viewers:
            await v.close()


def _hop_order(name: str) -> int:
    order = [*HOPS, "audible"]
    return order.index(name[4:]) if name[4:] in order else len(order)


async def _cpu_ratio(base: str, pid: int, window_s: float) -> dict[str, Any]:
    body = {"mode": "broadcast", "channel": "bench"}
    viewers = [_Viewer()]
    await viewers[0].open(base, body)
    try:
        await asyncio.sleep(2.0)
        c0 = _cpu_s(pid)
        await asyncio.sleep(window_s)
        cpu1 = (_cpu_s(pid) - c0) / window_s
        for _ in range(3):
            v = _Viewer()
            await v.open(base, body)
            viewers.append(v)
        await asyncio.sleep(2.0)
        c0 = _cpu_s(pid)
        await asyncio.sleep(window_s)
        cpu4 = (_cpu_s(pid) - c0) / window_s
    finally:
        for v in viewers:
            await v.close()
    return {
        "server_cpu_1_viewer": cpu1,
        "server_cpu_4_viewers": cpu4,
        "encode_once_cpu_ratio": (cpu4 / 4) / cpu1 if cpu1 > 0 else float("nan"),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def served(engine: str, overrides: list[str]) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A ``serve`` subprocess on a free 127.0.0.1 port with the bench's key: (process, base
    URL); terminated on the way out. :func:`wait_healthy` before using it. When the bench
    fails, the server's last log lines go to stderr with the error (its log is kept in a
    temporary file, not shown otherwise)."""
    restrict_to_loopback()
    port = _free_port()
    cmd = [sys.executable, "-m", "unison_stream.cli", "serve", "--engine", engine]
    cmd += [f"server.port={port}", f"server.api_keys=[{KEY}]", *overrides]
    with tempfile.TemporaryFile() as log_file:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log_file)
        try:
            yield proc, f"http://127.0.0.1:{port}"
        except BaseException:
            log_file.seek(0)
            tail = log_file.read().decode(errors="replace").splitlines()[-30:]
            sys.stderr.write("the server's last log lines:\n" + "\n".join(tail) + "\n")
            raise
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


async def wait_healthy(base: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """``/healthz`` once the server answers it."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            return await _healthz(base)
        except aiohttp.ClientError:
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{base} never became healthy")


def print_figures(res: dict[str, Any], as_json: bool) -> None:
    rounded = _rounded(res)
    if as_json:
        sys.stdout.write(json.dumps(rounded) + "\n")
    else:
        for k, v in rounded.items():
            sys.stdout.write(f"{k}: {v}\n")


def run(args: argparse.Namespace) -> int:
    with served(args.engine, list(args.overrides)) as (proc, base):

        async def main() -> dict[str, Any]:
            from unison_stream.runtime import host_info

            model = (await wait_healthy(base))["model"]
            out: dict[str, Any] = {"engine": args.engine, "model": model, "host": host_info()}
            for n in (1, 4):
                log.info("phase s%d: %d trials of %d concurrent sessions", n, args.trials, n)
                try:
                    out[f"s{n}"] = await _latencies(base, args.trials, n)
                except TimeoutError as e:  # reported, the other phases still run
                    out[f"s{n}"] = {"error": str(e)}
                log.info("phase s%d: %s", n, out[f"s{n}"])
            if args.chromium:
                from unison_stream.server.bench_browser import chromium_phase

                log.info("phase chromium: %d trials in headless Chromium", args.trials)
                out["chromium"] = await chromium_phase(base, KEY, args.trials)
            out.update(await _cpu_ratio(base, proc.pid, args.window))
            return out

        res = asyncio.run(main())
    print_figures(res, args.json)
    return 0


def _rounded(x: Any) -> Any:
    if isinstance(x, float):
        return round(x, 3)
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    return x


def register(sub: Any) -> None:
    """Called by ``unison_stream.bench`` for ``bench serve``."""
    p = sub.add_parser("serve", help="server latencies and encode-once CPU (JSON figures)")
    p.add_argument("--engine", choices=("real", "fake"), default="real")
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--window", type=float, default=4.0, help="CPU measuring window (s)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--chromium", action="store_true", help="also a headless Chromium viewer")
    p.add_argument("overrides", nargs="*", help="key=value passed to serve")
    p.set_defaults(func=run)
    from unison_stream.server.soak import register as register_soak

    register_soak(sub)
    from unison_stream.server.faults import register as register_faults

    register_faults(sub)
    from unison_stream.server.load import register as register_load

    register_load(sub)
    from unison_stream.server.hostile import register as register_hostile

    register_hostile(sub)
