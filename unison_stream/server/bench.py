"""``unison-stream bench serve --json``: the server's latencies and encode-once CPU, measured at
an in-process aiortc client against a server subprocess on 127.0.0.1.

- ``first_media_ms``: ``say`` sent → first audible 20 ms audio frame decoded at the client.
- ``interrupt_ms``: ``interrupt`` sent → first quiet audio frame at the client.
- ``encode_once_cpu_ratio``: server CPU per viewer with 4 broadcast viewers ÷ with 1 viewer
  (1.0 would mean per-viewer encoding; encode-once makes it well below 1).
Medians of ``--trials``; the engine is the real one unless ``--engine fake``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

import aiohttp
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from unison_stream.server.webrtc import restrict_to_loopback

__all__ = ["register"]

KEY = "bench-key"
LONG_TEXT = "This is a long sentence for the benchmark to interrupt half way through, " * 3


class _Viewer:
    def __init__(self) -> None:
        self.audio: list[tuple[float, float]] = []  # (monotonic arrival, rms)
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
        try:
            while True:
                frame = await track.recv()
                if track.kind == "audio":
                    pcm = frame.to_ndarray().astype(np.float32) / 32768.0
                    self.audio.append((time.monotonic(), float(np.sqrt(np.mean(pcm**2)))))
        except MediaStreamError:
            pass

    async def wait(self, pred: Any, timeout: float) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for m in self.messages:
                if pred(m):
                    return m
            await asyncio.sleep(0.01)
        raise TimeoutError("no matching message from the server")

    async def first_audio(self, after: float, loud: bool, thr: float, timeout: float) -> float:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for t, rms in self.audio:
                if t >= after and (rms > thr) == loud:
                    return t
            await asyncio.sleep(0.005)
        raise TimeoutError("audio never crossed the threshold")

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await self.pc.close()
        if self.ws is not None:
            await self.ws.close()
        await self.http.close()


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def _latencies(base: str, trials: int) -> dict[str, Any]:
    v = _Viewer()
    await v.open(base, {})
    try:
        await asyncio.sleep(3.0)  # idle stream settles
        idle = [r for _, r in v.audio[-50:]] or [0.0]
        thr = max(0.02, 4 * float(np.median(idle)))
        first, inter = [], []
        for i in range(trials):
            t0 = time.monotonic()
            await v.send({"type": "say", "id": f"f{i}", "text": LONG_TEXT})
            t_on = await v.first_audio(t0, True, thr, 60)
            first.append(1000 * (t_on - t0))
            await asyncio.sleep(1.0)
            t1 = time.monotonic()
            await v.send({"type": "interrupt"})
            t_off = await v.first_audio(t1, False, thr, 30)
            inter.append(1000 * (t_off - t1))
            await asyncio.sleep(1.5)
        return {
            "first_media_ms": statistics.median(first),
            "first_media_ms_all": [round(x, 1) for x in first],
            "interrupt_ms": statistics.median(inter),
            "interrupt_ms_all": [round(x, 1) for x in inter],
            "audible_threshold_rms": thr,
        }
    finally:
        await v.close()


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


def run(args: argparse.Namespace) -> int:
    restrict_to_loopback()
    port = _free_port()
    cmd = [sys.executable, "-m", "unison_stream.cli", "serve", "--engine", args.engine]
    cmd += [f"server.port={port}", f"server.api_keys=[{KEY}]", *args.overrides]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"

    async def main() -> dict[str, Any]:
        async with aiohttp.ClientSession() as http:
            for _ in range(600):
                try:
                    if (await http.get(f"{base}/healthz")).status == 200:
                        break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            model = (await (await http.get(f"{base}/healthz")).json())["model"]
        out: dict[str, Any] = {"engine": args.engine, "model": model}
        out.update(await _latencies(base, args.trials))
        out.update(await _cpu_ratio(base, proc.pid, args.window))
        return out

    try:
        res = asyncio.run(main())
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    rounded = {k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()}
    if args.json:
        sys.stdout.write(json.dumps(rounded) + "\n")
    else:
        for k, v in rounded.items():
            sys.stdout.write(f"{k}: {v}\n")
    return 0


def register(sub: Any) -> None:
    """Called by ``unison_stream.bench`` for ``bench serve``."""
    p = sub.add_parser("serve", help="server latencies and encode-once CPU (JSON figures)")
    p.add_argument("--engine", choices=("real", "fake"), default="real")
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--window", type=float, default=4.0, help="CPU measuring window (s)")
    p.add_argument("--json", action="store_true")
    p.add_argument("overrides", nargs="*", help="key=value passed to serve")
    p.set_defaults(func=run)
