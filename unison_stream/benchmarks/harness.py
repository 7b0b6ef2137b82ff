"""What the served benchmarks share (``bench serve``, ``soak``, ``load``, ``faults``,
``hostile``; ``cluster`` prints with it): a ``serve`` subprocess on a free 127.0.0.1 port
(:func:`served`, :func:`wait_healthy`, :func:`healthz`), an in-process aiortc + websocket
client that timestamps every frame it receives (:class:`Viewer`), the say → heard → interrupt →
quiet trial they time (:func:`trial`), the server's process figures read from ``/proc``
(:func:`sample`, :func:`cpu_s`), the utterance-event order check and the figure printer.

:class:`Viewer` speaks through ``unison_sdk.protocol`` (typed messages encoded by it, every
server message decoded by its ``ClientProtocol`` and acknowledged as the SDK does) but keeps
its own websocket and peer connection rather than ``unison_sdk.Avatar``: the figures need the
ids the bench chose, the server's messages as sent (kept as JSON objects in ``messages``) and
the arrival time and RTP pts of every frame, with no per-frame decoding to arrays in the
measuring process. The benchmarks of the SDK's own behaviour (``faults``' websocket drops,
``cluster``'s replica loss) use ``Avatar``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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
from unison_sdk.media import restrict_ice_to_loopback
from unison_sdk.protocol import (
    Answer,
    ClientMessage,
    ClientProtocol,
    Interrupt,
    Offer,
    Say,
    StatsEvent,
    UtteranceEvent,
)

from unison_stream.server.media import AUDIO_FRAME_SAMPLES

__all__ = [
    "KEY",
    "LONG_TEXT",
    "TEXTS",
    "Viewer",
    "children",
    "cpu_s",
    "free_port",
    "healthz",
    "order_violations",
    "p50_max",
    "print_figures",
    "sample",
    "served",
    "trial",
    "wait_healthy",
]

KEY = "bench-key"  # the API key every served bench gives its server
LONG_TEXT = "This is a long sentence for the benchmark to interrupt half way through, " * 3
TEXTS = (
    "The little robot painted the garden near the station.",
    "I believe the weather is lovely today <clap> and the birds agree.",
    "Please bring the blue umbrella when you come back home.",
)
GOOD_ORDERS = (
    ("queued", "started", "finished"),
    ("queued", "started", "interrupted"),
    ("queued", "interrupted"),
)


# ---- the client ----------------------------------------------------------------------------
class Viewer:
    """One session's websocket and aiortc peer connection, recording every message and the
    (arrival, pts) of every frame."""

    def __init__(self) -> None:
        self.audio: list[tuple[float, int]] = []  # (monotonic arrival, pts from the first frame)
        self.video: list[tuple[float, int]] = []  # the same for video (90 kHz pts)
        self.messages: list[dict[str, Any]] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.http = aiohttp.ClientSession()
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.pc = RTCPeerConnection()
        self.proto = ClientProtocol()

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
        await self.send(Offer(self.pc.localDescription.sdp, "offer"))
        ans = await self.wait(lambda m: m["type"] == Answer.TYPE, 30)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=ans["sdp"], type="answer"))

    async def send(self, msg: ClientMessage) -> None:
        assert self.ws is not None
        await self.ws.send_str(self.proto.encode(msg))

    async def _read(self) -> None:
        assert self.ws is not None
        async for m in self.ws:
            if m.type == aiohttp.WSMsgType.TEXT:
                if self.proto.receive(m.data) is not None:  # checked, duplicates dropped
                    self.messages.append(json.loads(m.data))
                if (ack := self.proto.ack_due(time.monotonic())) is not None:
                    await self.ws.send_str(ack)

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
            if m.get("type") == StatsEvent.TYPE:
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


async def trial(v: Viewer, uid: str) -> dict[str, float]:
    """One say → its first audio frame decoded at the client → interrupt → the first frame
    after the cut, at one client; with the hops of the utterance. The frames are found by the
    audio pts the server names in ``started`` / ``interrupted``, so a trial never takes audio
    left over from the last one (nor the synthetic world's ambience) for speech."""
    t0 = time.monotonic()
    await v.send(Say(uid, LONG_TEXT))
    started = await v.wait(lambda m: m.get("event") == "started" and m.get("id") == uid, 60)
    t_on = await v.arrival(int(started["audio_pts"]), 10)
    await asyncio.sleep(1.0)
    t1 = time.monotonic()
    await v.send(Interrupt())
    cut = await v.wait(
        lambda m: m.get("event") == "interrupted" and m.get("id") == uid and "audio_pts" in m, 30
    )
    t_off = await v.arrival(int(cut["audio_pts"]), 10)
    out = {f"hop_{k}": float(x) for k, x in started.get("trace_ms", {}).items()}
    out.update(first=1000 * (t_on - t0), interrupt=1000 * (t_off - t1))
    out["hop_audible"] = out["first"]
    return out


def order_violations(messages: list[dict[str, Any]], said: list[str]) -> int:
    """Utterances of ``said`` whose events in ``messages`` are not queued → started →
    finished | interrupted (or queued → interrupted), or that never ended."""
    events: dict[str, list[str]] = {u: [] for u in said}
    for m in messages:
        if m.get("type") == UtteranceEvent.TYPE and m.get("id") in events:
            events[m["id"]].append(m["event"])
    return sum(1 for seq in events.values() if tuple(seq) not in GOOD_ORDERS)


# ---- the server ----------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (at the time of asking)."""
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
    restrict_ice_to_loopback()
    port = free_port()
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


async def healthz(base: str) -> dict[str, Any]:
    """The server's ``/healthz`` answer."""
    async with aiohttp.ClientSession() as http:
        r = await http.get(f"{base}/healthz")
        out: dict[str, Any] = await r.json()
        return out


async def wait_healthy(base: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """``/healthz`` once the server answers it."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            return await healthz(base)
        except aiohttp.ClientError:
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{base} never became healthy")


def _status(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return float(line.split()[1])
    return 0.0


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (the server's model replica among them)."""
    out: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(x) for x in f.read().split()]
    return out


def sample(pid: int) -> dict[str, float]:
    """The server's resident memory, its children's, its open fds and threads, now."""
    kids = children(pid)
    return {
        "t": time.monotonic(),
        "rss_server_mb": _status(pid, "VmRSS") / 1024,
        "rss_replica_mb": sum(_status(k, "VmRSS") for k in kids) / 1024,
        "fds": float(len(os.listdir(f"/proc/{pid}/fd"))),
        "threads": _status(pid, "Threads"),
    }


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


# ---- figures -------------------------------------------------------------------------------
def p50_max(xs: list[float]) -> dict[str, float]:
    """Median and maximum of ``xs`` (NaN for none): the bench harnesses' per-figure summary."""
    if not xs:
        return {"p50": float("nan"), "max": float("nan")}
    return {"p50": statistics.median(xs), "max": max(xs)}


def print_figures(res: dict[str, Any], as_json: bool) -> None:
    """The figures, floats rounded to 3 places: one JSON line, or ``key: value`` lines."""
    rounded = _rounded(res)
    if as_json:
        sys.stdout.write(json.dumps(rounded) + "\n")
    else:
        for k, v in rounded.items():
            sys.stdout.write(f"{k}: {v}\n")


def _rounded(x: Any) -> Any:
    if isinstance(x, float):
        return round(x, 3)
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    return x
