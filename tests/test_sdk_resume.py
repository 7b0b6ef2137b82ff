"""Resume after a dropped websocket: same session, every event exactly once; the server's
resume rules (tokens, replay, ack, grace period, idempotent say ids) over a raw websocket."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
import unison_sdk.client as sdk_client
from unison_sdk import (
    ConnectionEvent,
    ConnectionLost,
    StateEvent,
    StatsEvent,
    UtteranceEvent,
    connect,
)

from tests.server_support import API_KEY, create_session, running_server


def _drop(avatar: Any) -> None:
    """Cut the TCP connection under the websocket, with no close frame (a network drop)."""
    avatar._ws.transport.abort()


def test_dropped_websocket_resumes_same_session_without_lost_or_doubled_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a 0.4 s outage, so the utterance starts while the client is away
    monkeypatch.setattr(sdk_client, "BACKOFF_S", (0.4, 0.2))

    async def main() -> None:
        async with running_server() as srv, connect(srv.base, api_key=API_KEY) as avatar:
            sid = avatar.session_id
            events = avatar.events()
            frames = avatar.video_frames()
            await asyncio.wait_for(frames.__anext__(), 10)
            utt = await avatar.say("Hello across a network drop, one more time")
            _drop(avatar)
            t0 = time.monotonic()
            await asyncio.wait_for(utt, 15)
            assert time.monotonic() - t0 > 0.3
            for _ in range(60):  # let a stats message or two arrive after the resume
                if avatar.state == "idle" and avatar.stats:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.2)
            n_frames = 0
            while n_frames < 10:  # media kept flowing: the peer connection did not care
                await asyncio.wait_for(frames.__anext__(), 5)
                n_frames += 1
            assert avatar.session_id == sid and avatar.resumes == 1
            assert avatar.last_resume_s is not None and avatar.last_resume_s < 2.0
            assert srv.state.manager.sessions[sid].seq == avatar._proto.last_seq
            events.close()
            got = [e async for e in events]
        conn = [e.status for e in got if isinstance(e, ConnectionEvent)]
        assert conn[:2] == ["reconnecting", "resumed"], conn
        assert [e.event for e in utt.events] == ["queued", "started", "finished"]
        seqs = [e.seq for e in got if isinstance(e, UtteranceEvent | StateEvent | StatsEvent)]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"gap or duplicate: {seqs}"
        states = [e.state for e in got if isinstance(e, StateEvent)]
        assert states == ["speaking", "idle"], states

    asyncio.run(main())


def test_no_resume_when_the_server_keeps_no_grace() -> None:
    async def main() -> None:
        async with running_server(resume_grace_s=0.0) as srv:
            avatar = await connect(
                srv.base, api_key=API_KEY, media=False, reconnect_timeout_s=3, failover=False
            )
            _drop(avatar)
            await asyncio.wait_for(avatar.wait_closed(), 5)
            with pytest.raises(ConnectionLost):
                await avatar.say("anyone?")
            assert srv.state.manager.sessions == {}
            await avatar.close()

    asyncio.run(main())


def test_with_failover_a_session_the_server_ended_is_replaced_by_a_new_one() -> None:
    async def main() -> None:
        async with running_server(resume_grace_s=0.0) as srv:
            avatar = await connect(srv.base, api_key=API_KEY, media=False, reconnect_timeout_s=3)
            first = avatar.session_id
            _drop(avatar)
            for _ in range(100):
                if avatar.moves:
                    break
                await asyncio.sleep(0.05)
            assert avatar.moves == 1 and avatar.session_id != first
            await asyncio.wait_for(await avatar.say("still here"), 10)
            assert list(srv.state.manager.sessions) == [avatar.session_id]
            await avatar.close()

    asyncio.run(main())


class Raw:
    """A bare websocket client that reads JSON messages into a list."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self.http, self.ws = http, ws
        self.messages: list[dict[str, Any]] = []
        self.task = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, url: str) -> Raw:
        http = aiohttp.ClientSession()
        return cls(http, await http.ws_connect(url))

    async def _read(self) -> None:
        async for m in self.ws:
            if m.type == aiohttp.WSMsgType.TEXT:
                self.messages.append(json.loads(m.data))

    async def wait(self, pred: Any, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.messages:
                if pred(m):
                    return m
            await asyncio.sleep(0.01)
        raise TimeoutError(self.messages[-5:])

    async def send(self, msg: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(msg))

    async def drop(self) -> None:
        conn = self.ws._response.connection
        assert conn is not None and conn.transport is not None
        conn.transport.abort()
        self.task.cancel()
        await self.http.close()


async def _status(base: str, query: str) -> int:
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(f"{base.replace('http', 'ws')}/v1/ws?{query}"):
                return 101
        except aiohttp.WSServerHandshakeError as e:
            return e.status


def test_server_resume_rules_over_a_raw_websocket() -> None:
    async def main() -> None:
        async with running_server(resume_grace_s=1.0, stats_interval_s=0.2) as srv:
            info = await create_session(srv.base)
            a = await Raw.open(info["ws_url"])
            ready = await a.wait(lambda m: m["type"] == "ready")
            assert ready["resumed"] is False and ready["last_seq"] == 0
            tok = ready["resume_token"]
            await a.send({"type": "say", "id": "u1", "text": "hello"})
            await a.send({"type": "say", "id": "u1", "text": "hello"})  # a retry: ignored
            await a.wait(lambda m: m.get("event") == "finished")
            seen = [m["seq"] for m in a.messages if "seq" in m]
            assert seen == list(range(1, len(seen) + 1))
            queued = [m for m in a.messages if m.get("event") == "queued"]
            assert len(queued) == 1, "a say id the session already has is not queued twice"
            s = srv.state.manager.sessions[info["session_id"]]
            await a.send({"type": "ack", "seq": seen[-1]})
            await asyncio.sleep(0.1)
            assert all(m.seq > seen[-1] for m in s.protocol.kept()), "ack trims the replay buffer"
            await a.drop()
            await asyncio.sleep(0.5)  # stats go on while nobody is attached
            assert info["session_id"] in srv.state.manager.sessions
            # refused: a session token cannot resume, a resume token is not a session token,
            # last_seq ahead of the server, a malformed last_seq
            assert await _status(srv.base, f"resume={info['token']}&last_seq=0") == 401
            assert await _status(srv.base, f"token={tok}") == 401
            assert await _status(srv.base, f"resume={tok}&last_seq=99999") == 400
            assert await _status(srv.base, f"resume={tok}&last_seq=-1") == 400
            base_ws = srv.base.replace("http", "ws")
            b = await Raw.open(f"{base_ws}/v1/ws?resume={tok}&last_seq={seen[-1]}")
            r2 = await b.wait(lambda m: m["type"] == "ready")
            assert r2["resumed"] is True and r2["session_id"] == info["session_id"]
            await b.wait(lambda m: m.get("type") == "stats")
            replayed = [m["seq"] for m in b.messages if "seq" in m]
            assert replayed[0] == seen[-1] + 1, (seen[-1], replayed[:3])
            assert replayed == list(range(replayed[0], replayed[0] + len(replayed)))
            # a second resume takes over: the first resumed socket is closed with 4001
            c = await Raw.open(f"{base_ws}/v1/ws?resume={r2['resume_token']}&last_seq=0")
            await c.wait(lambda m: m["type"] == "ready")
            await asyncio.wait_for(b.task, 5)
            assert b.ws.close_code == 4001
            assert info["session_id"] in srv.state.manager.sessions
            await c.drop()
            await b.http.close()
            # past the grace period the session is gone and the token with it
            for _ in range(50):
                if info["session_id"] not in srv.state.manager.sessions:
                    break
                await asyncio.sleep(0.1)
            assert srv.state.manager.sessions == {}
            assert await _status(srv.base, f"resume={tok}&last_seq=0") == 401

    asyncio.run(main())
