"""Builders shared by the server tests and ``bench serve``-style checks: a running server on
127.0.0.1 with a fake (or real) engine, and an in-process aiortc + websocket client.

The client speaks through ``unison_sdk.protocol``: typed messages are encoded by it, every
server message is decoded by its :class:`~unison_sdk.protocol.ClientProtocol` (kept typed in
``events``; the JSON objects as received in ``messages``) and acknowledged as the SDK does. A
dict given to :meth:`Client.send` goes out as it is: the hostile tests' raw frames."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from tqdm import tqdm
from unison_sdk.media import restrict_ice_to_loopback
from unison_sdk.protocol import Answer, ClientMessage, ClientProtocol, ErrorEvent, Offer, Ready

from unison_stream.server.app import create_app, make_runner, state_of
from unison_stream.server.config import ServerConfig, validate_server
from unison_stream.server.engine_api import EngineLike
from unison_stream.server.fake_engine import FakeEngine
from unison_stream.server.session import MediaSpec

# transformers' weight-loading bar starts tqdm's monitor, a process-wide thread that outlives
# every engine; the tests that count threads left behind count the server's, so none is started
tqdm.monitor_interval = 0

API_KEY = "test-key"
FPS, W, H, RATE = 25.0, 64, 64, 16000


def fake_engine(**kw: Any) -> FakeEngine:
    return FakeEngine(fps=FPS, width=W, height=H, sample_rate=RATE, **kw)


def server_config(**kw: Any) -> ServerConfig:
    kw.setdefault("api_keys", [API_KEY])
    cfg = ServerConfig(port=0, token_secret="s3cret", **kw)
    return validate_server(cfg)


@dataclass
class Running:
    app: web.Application
    base: str  # http://127.0.0.1:PORT

    @property
    def state(self) -> Any:
        return state_of(self.app)


@contextlib.asynccontextmanager
async def running_server(
    engine: EngineLike | None = None, media: MediaSpec | None = None, **cfg_kw: Any
) -> AsyncIterator[Running]:
    """A server on a free port; the fake engine it builds when given none is closed with it
    (an engine passed in belongs to the caller)."""
    own = fake_engine() if engine is None else None
    eng: EngineLike = own if own is not None else engine  # type: ignore[assignment]
    media = media or MediaSpec(fps=FPS, width=W, height=H, sample_rate=RATE)
    try:
        app = create_app(eng, server_config(**cfg_kw), media, model="fake")
        runner = make_runner(app)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            yield Running(app, f"http://127.0.0.1:{port}")
        finally:
            await runner.cleanup()
    finally:
        if own is not None:
            own.close()


@dataclass
class Client:
    """A websocket + aiortc client that records everything it receives."""

    http: aiohttp.ClientSession
    ws: aiohttp.ClientWebSocketResponse
    session_id: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    video: list[tuple[float, int]] = field(default_factory=list)  # (arrival s, pts)
    # (arrival s, pts, rms, sample rate)
    audio: list[tuple[float, int, float, int]] = field(default_factory=list)
    pc: RTCPeerConnection | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    closed_code: int | None = None
    proto: ClientProtocol = field(default_factory=ClientProtocol)
    events: list[Any] = field(default_factory=list)  # typed server messages, duplicates dropped

    async def send(self, msg: ClientMessage | dict[str, Any]) -> None:
        """A typed message (encoded by the protocol module), or a raw JSON object as it is."""
        text = json.dumps(msg) if isinstance(msg, dict) else self.proto.encode(msg)
        await self.ws.send_str(text)

    async def wait_for(self, pred: Any, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for m in self.messages[seen:]:
                if pred(m):
                    return m
            seen = 0
            await asyncio.sleep(0.01)
        raise TimeoutError(f"no matching message; got {self.messages[-10:]}")

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    async def _reader(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.messages.append(json.loads(msg.data))
                typed = self.proto.receive(msg.data)
                if typed is not None:
                    self.events.append(typed)
                if (ack := self.proto.ack_due(time.monotonic())) is not None:
                    await self.ws.send_str(ack)
        self.closed_code = self.ws.close_code

    async def connect_media(self, timeout: float = 10.0) -> None:
        restrict_ice_to_loopback()
        pc = RTCPeerConnection()  # no iceServers: loopback only
        self.pc = pc
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")

        @pc.on("track")
        def on_track(track: Any) -> None:
            self.tasks.append(asyncio.ensure_future(self._consume(track)))

        await pc.setLocalDescription(await pc.createOffer())
        assert pc.localDescription is not None
        await self.send(Offer(pc.localDescription.sdp, "o1"))
        ans = await self.wait_event(lambda e: isinstance(e, Answer | ErrorEvent), timeout)
        assert isinstance(ans, Answer), ans
        await pc.setRemoteDescription(RTCSessionDescription(sdp=ans.sdp, type="answer"))

    async def wait_event(self, pred: Any, timeout: float = 10.0) -> Any:
        """The first typed server message matching ``pred``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events:
                if pred(e):
                    return e
            await asyncio.sleep(0.01)
        raise TimeoutError(f"no matching message; got {self.events[-10:]}")

    async def _consume(self, track: Any) -> None:
        t0 = time.monotonic()
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic() - t0
                if track.kind == "video":
                    self.video.append((now, int(frame.pts)))
                else:
                    pcm = frame.to_ndarray().astype(np.float32) / 32768.0
                    rms = float(np.sqrt(np.mean(pcm**2)))
                    self.audio.append((now, int(frame.pts), rms, int(frame.sample_rate)))
        except MediaStreamError:
            pass

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        if self.pc is not None:
            await self.pc.close()
        await self.ws.close()
        await self.http.close()


async def create_session(base: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        r = await http.post(
            f"{base}/v1/sessions",
            json=body or {},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        assert r.status == 201, await r.text()
        out: dict[str, Any] = await r.json()
        return out


async def connect(base: str, body: dict[str, Any] | None = None, *, media: bool = True) -> Client:
    info = await create_session(base, body)
    http = aiohttp.ClientSession()
    ws = await http.ws_connect(info["ws_url"])
    c = Client(http, ws, info["session_id"])
    c.tasks.append(asyncio.ensure_future(c._reader()))
    await c.wait_event(lambda e: isinstance(e, Ready))
    if media:
        await c.connect_media()
    return c


def bench_json(args: list[str], *, timeout: float = 240) -> dict[str, Any]:
    """Run ``unison-stream ARGS`` in a subprocess and return the JSON of its last line; a
    non-zero exit fails with the command's last stderr lines, so a CI log says why."""
    cmd = [sys.executable, "-m", "unison_stream.cli", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    tail = "\n".join(out.stderr.strip().splitlines()[-40:])
    assert out.returncode == 0, f"{' '.join(args)} exited {out.returncode}:\n{tail}"
    res: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return res
