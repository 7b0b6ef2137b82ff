"""A session whose server dies moves to another one (docs/sdk.md): the SDK opens a new session
with the same identity and caption through the front door, reports the utterance in flight
``interrupted``, says again what was queued but never heard, and gets media again."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
from aiohttp import web
from unison_sdk import ConnectionEvent, ErrorEvent, connect

from tests.server_support import API_KEY, running_server
from unison_stream.benchmarks.faults import Relay

LONG = "This sentence is long enough to be cut off half way through by a dying server. " * 2


class _FrontDoor:
    """A stand-in for a cluster's front door: ``POST /v1/sessions`` goes to the first backend
    that answers (the real one places by load); the bodies it forwarded are kept."""

    def __init__(self, backends: list[str]) -> None:
        self.backends, self.bodies = backends, list[dict[str, Any]]()
        self.app = web.Application()
        self.app.router.add_post("/v1/sessions", self._create)
        self.base = ""

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.bodies.append(json.loads(body))
        async with aiohttp.ClientSession() as http:
            for b in self.backends:
                try:
                    headers = {"Authorization": request.headers["Authorization"]}
                    r = await http.post(f"{b}/v1/sessions", data=body, headers=headers)
                    return web.json_response(await r.json(), status=r.status)
                except aiohttp.ClientConnectionError:
                    continue
        return web.json_response({"error": {"code": "capacity", "message": "none"}}, status=503)

    async def start(self) -> web.AppRunner:
        runner = web.AppRunner(self.app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return runner


def test_a_session_whose_server_dies_moves_with_its_identity_and_nothing_else_lost() -> None:
    async def main() -> dict[str, Any]:
        async with running_server() as a, running_server() as b:
            relay = Relay(int(a.base.rsplit(":", 1)[1]))
            await relay.start()
            door = _FrontDoor([f"http://127.0.0.1:{relay.port}", b.base])
            runner = await door.start()
            try:
                async with connect(
                    door.base, api_key=API_KEY, identity=3, caption="a news host"
                ) as avatar:
                    first = avatar.session_id
                    events = avatar.events()
                    u1 = await avatar.say(LONG)
                    u2 = await avatar.say("Queued behind it, never heard.")
                    async for ev in u1:
                        if ev.event == "started":
                            break
                    t_kill = time.monotonic()
                    await relay.close()  # the server is gone: connections cut, new ones refused
                    await asyncio.wait_for(u1, 10)
                    lost_errors = []
                    async for event in events:
                        if isinstance(event, ErrorEvent):
                            lost_errors.append(event.code)
                        if isinstance(event, ConnectionEvent) and event.status == "moved":
                            break
                    await asyncio.wait_for(u2, 15)
                    frames = avatar.video_frames()
                    frame = await asyncio.wait_for(frames.__anext__(), 15)
                    u3 = await avatar.say("Hello from the new server.")
                    await asyncio.wait_for(u3, 15)
                    b_sessions = [
                        s.channel.engine_session for s in b.state.manager.sessions.values()
                    ]
                    return {
                        "first": first, "now": avatar.session_id, "moves": avatar.moves,
                        "move_s": avatar.last_move_s, "since_kill_s": time.monotonic() - t_kill,
                        "outcomes": (u1.outcome, u2.outcome, u3.outcome),
                        "u2_events": [e.event for e in u2.events], "bodies": door.bodies,
                        "identities": [s.identity for s in b_sessions], "frame": frame.image.shape,
                        "errors": lost_errors,
                    }  # fmt: skip
            finally:
                await runner.cleanup()

    r = asyncio.run(main())
    assert r["now"] != r["first"] and r["moves"] == 1, r
    assert r["outcomes"] == ("interrupted", "finished", "finished"), r
    assert r["u2_events"].count("queued") == 2 and "started" in r["u2_events"], r
    body = {"mode": "private", "identity": 3, "caption": "a news host"}
    assert r["bodies"] == [body, body], r["bodies"]  # the same identity and caption
    assert r["identities"] == [3], r
    assert r["move_s"] < 3.0, r
    assert r["frame"][2] == 3, r
    assert r["errors"] == ["session_lost"], r  # the clients are told, before "moved"
