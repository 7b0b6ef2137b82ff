"""Auth, bad input, limits, capacity, churn and engine faults: clear errors, server keeps going."""

from __future__ import annotations

import asyncio
import threading
import time

import aiohttp

from tests.server_support import API_KEY, connect, create_session, fake_engine, running_server
from unison_stream.server.auth import TokenSigner

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def test_http_auth_capacity_health_and_delete() -> None:
    async def main() -> None:
        async with running_server(max_sessions=2) as srv, aiohttp.ClientSession() as http:
            url = f"{srv.base}/v1/sessions"
            r = await http.post(url, json={})
            assert r.status == 401 and (await r.json())["error"]["code"] == "unauthorized"
            r = await http.post(url, json={}, headers={"Authorization": "Bearer wrong"})
            assert r.status == 401
            r = await http.post(url, data=b"{bad", headers=AUTH)
            assert r.status == 400 and (await r.json())["error"]["code"] == "bad_request"
            a = await create_session(srv.base)
            b = await create_session(srv.base)
            r = await http.post(url, json={}, headers=AUTH)  # third engine session: 503
            assert r.status == 503 and (await r.json())["error"]["code"] == "capacity"
            h = await (await http.get(f"{srv.base}/healthz")).json()
            assert h["status"] == "ok" and h["sessions"] == 2 and h["capacity"] == 2
            m = await (await http.get(f"{srv.base}/metrics")).text()
            assert "unison_sessions 2" in m and "# TYPE unison_capacity gauge" in m
            # websocket auth: none, forged, other key's token, expired
            for q in ("", "?token=abc.def"):
                r = await http.get(f"{srv.base}/v1/ws{q}")
                assert r.status == 401, q
            old = TokenSigner("s3cret", ttl_s=1, clock=lambda: time.time() - 10).issue(
                a["session_id"]
            )
            r = await http.get(f"{srv.base}/v1/ws?token={old[0]}")
            assert r.status == 401 and "expired" in (await r.json())["error"]["message"]
            # delete needs the API key or *that* session's token
            d = f"{url}/{a['session_id']}"
            r = await http.delete(d, headers={"Authorization": f"Bearer {b['token']}"})
            assert r.status == 401 and "another session" in (await r.json())["error"]["message"]
            r = await http.delete(d, headers={"Authorization": f"Bearer {a['token']}"})
            assert r.status == 200
            r = await http.delete(f"{url}/{b['session_id']}", headers=AUTH)
            assert r.status == 200
            r = await http.post(url, json={}, headers=AUTH)  # capacity freed
            assert r.status == 201
            r = await http.get(f"{srv.base}/")
            assert r.status == 200 and "unison" in await r.text()

    asyncio.run(main())


def test_bad_websocket_input_gets_errors_and_the_connection_keeps_working() -> None:
    async def main() -> None:
        async with running_server(say_rate_per_s=1.0, say_burst=2, max_text_chars=100) as srv:
            c = await connect(srv.base, media=False)
            try:
                await c.ws.send_str("{not json")
                await c.send({"type": "teleport"})
                await c.send({"type": "say", "id": "big", "text": "x" * 101})
                await c.send({"type": "offer", "id": "sdp1", "sdp": "v=0\r\nthis is not sdp\r\n"})
                await c.ws.send_str('{"type":"ping","pad":"' + "x" * 70000 + '"}')  # > 64 KiB
                await c.ws.send_bytes(b"\x00\x01")  # audio outside audio_begin
                for i in range(4):  # burst 2 at 1/s: the 3rd and 4th are rate limited
                    await c.send({"type": "say", "id": f"r{i}", "text": "hi"})
                await c.send({"type": "ping", "id": "alive"})
                await c.wait_for(lambda m: m["type"] == "pong" and m.get("id") == "alive")
                errors = c.of_type("error")
                codes = [e["code"] for e in errors]
                assert codes.count("bad_request") == 6, errors
                assert codes.count("rate_limited") == 2, errors
                assert {e.get("ref") for e in errors} >= {"big", "r2", "r3"}
                msgs = " | ".join(e["message"] for e in errors)
                for part in ("malformed JSON", "unknown message type", "exceeds 100", "SDP"):
                    assert part in msgs, msgs
                # audio upload path: begin, PCM16, end → queued (after the bucket refills)
                await asyncio.sleep(1.1)
                await c.send({"type": "audio_begin", "id": "a1", "sample_rate": 16000})
                await c.ws.send_bytes(b"\x00\x10" * 8000)
                await c.send({"type": "audio_end", "id": "a1"})
                await c.wait_for(lambda m: m.get("id") == "a1" and m.get("event") == "queued")
                assert len(srv.state.manager.sessions) == 1
            finally:
                await c.close()

    asyncio.run(main())


def test_a_model_fault_mid_utterance_fails_it_reports_it_and_the_stream_goes_on() -> None:
    """A step that raises in the replica (as a model or decoder would) reaches the client as
    the engine reports it: the utterance's ``failed`` event becomes an ``error`` naming it,
    the stream goes on idle with no frozen frame, and the next ``say`` plays."""
    eng = fake_engine()

    async def main() -> None:
        async with running_server(eng) as srv:
            c = await connect(srv.base)
            try:
                await c.send({"type": "say", "id": "u1", "text": "a long sentence " * 4})
                await c.wait_for(lambda m: m.get("event") == "started")
                eng.tone.fail_steps = 1
                err = await c.wait_for(lambda m: m["type"] == "error", 5)
                assert err["code"] == "internal" and "generation failed" in err["message"]
                assert err.get("ref") == "u1", err
                await c.wait_for(lambda m: m["type"] == "state" and m["state"] == "idle", 5)
                assert not [m for m in c.messages if m.get("event") == "finished"]
                n = len(c.video)
                await asyncio.sleep(1.0)
                assert len(c.video) - n >= 20, "stream froze after the fault"
                await c.send({"type": "say", "id": "u2", "text": "still here"})
                await c.wait_for(lambda m: m.get("id") == "u2" and m.get("event") == "finished")
                channel = srv.state.manager.channels[next(iter(srv.state.manager.channels))]
                assert channel.errors == 1 and eng.tone.fail_steps == 0
            finally:
                await c.close()

    asyncio.run(main())


def test_idle_timeout_and_max_duration_close_the_websocket() -> None:
    async def main() -> None:
        async with running_server() as srv:
            a = await connect(srv.base, {"idle_timeout_s": 0.5}, media=False)
            b = await connect(srv.base, {"max_duration_s": 0.8}, media=False)
            try:
                for _ in range(30):
                    await b.send({"type": "ping"})  # active, but past its maximum duration
                    await asyncio.sleep(0.1)
                    if a.closed_code and b.closed_code:
                        break
                assert a.closed_code == 4408 and b.closed_code == 4409
                assert not srv.state.manager.sessions
            finally:
                await a.close()
                await b.close()

    asyncio.run(main())


def test_broadcast_viewers_share_one_encode() -> None:
    eng = fake_engine()

    async def main() -> None:
        async with running_server(eng) as srv:
            body = {"mode": "broadcast", "channel": "news"}
            viewers = [await connect(srv.base, body) for _ in range(3)]
            try:
                assert eng.sessions == 1 and len(srv.state.manager.channels) == 1
                await viewers[0].send({"type": "say", "id": "b1", "text": "hello everyone"})
                for v in viewers:
                    await v.wait_for(lambda m: m.get("id") == "b1" and m.get("event") == "finished")
                await asyncio.sleep(1.0)
                enc = next(iter(srv.state.manager.channels.values())).encoder
                assert enc is not None and enc.viewers == 3
                frames = [len(v.video) for v in viewers]
                assert min(frames) >= 25, frames
                # one encode per frame for all viewers: ≈ 25/s of channel life, not 75/s
                assert enc.video_frames_encoded <= max(frames) + 30
                assert all(max(r for _, _, r, _ in v.audio) > 0.1 for v in viewers)  # audible
            finally:
                for v in viewers:
                    await v.close()
            await asyncio.sleep(0.3)
            assert eng.sessions == 0 and not srv.state.manager.channels

    asyncio.run(main())


def test_churn_of_50_sessions_leaves_nothing_behind() -> None:
    eng = fake_engine()

    async def main() -> None:
        async with running_server(eng) as srv:
            base_tasks = len(asyncio.all_tasks())
            threads0 = {t.name for t in threading.enumerate()}
            for i in range(50):
                c = await connect(srv.base, media=i % 2 == 0)  # half with a peer connection
                if i % 5 == 0:
                    await c.send({"type": "say", "id": "x", "text": "hi"})
                if i % 3 == 0:
                    await c.send({"type": "close"})
                await c.close()
                for _ in range(100):  # the server notices the close within a moment
                    if not srv.state.manager.sessions:
                        break
                    await asyncio.sleep(0.02)
            for _ in range(50):
                await asyncio.sleep(0.1)
                m = srv.state.manager
                if not m.sessions and eng.sessions == 0:
                    break
            await asyncio.sleep(0.5)
            m = srv.state.manager
            assert not m.sessions and not m.channels and m.peer_connections() == 0
            assert eng.sessions == 0 and eng.tone.opened == 50
            assert len(asyncio.all_tasks()) <= base_tasks + 1, [
                t.get_name() for t in asyncio.all_tasks()
            ]
        # no thread per session (the loop's bounded executor pool aside)
        left = {t.name for t in threading.enumerate()} - threads0
        assert not [n for n in left if not n.startswith("asyncio_")], left

    asyncio.run(main())


def test_offers_aiortc_cannot_answer_are_bad_requests_and_leave_no_peer_connection() -> None:
    """Found by ``bench hostile``: an offer whose first media section lost its ``a=mid`` line
    made aiortc fail in createAnswer and then again in closing the half-built connection,
    answered ``internal``."""
    from unison_stream.benchmarks.hostile import recvonly_offer

    async def main() -> None:
        async with running_server() as srv:
            good = await recvonly_offer(srv.base)
            lines = good.strip().split("\r\n")
            lines.remove("a=mid:0")
            bad = "\r\n".join(lines)
            c = await connect(srv.base)
            for i in range(3):
                await c.send({"type": "offer", "id": f"o{i}", "sdp": bad + "\r\n"})
                err = await c.wait_for(lambda m: m.get("type") == "error", 10)
                assert err["code"] == "bad_request", err
                c.messages.remove(err)
            await c.send({"type": "ping", "id": "p"})
            await c.wait_for(lambda m: m.get("type") == "pong", 10)
            assert srv.state.manager.peer_connections() == 0
            await c.close()

    asyncio.run(main())
