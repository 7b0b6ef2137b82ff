"""Admission by capacity (docs/server.md "Capacity"): a server admits as many engine sessions as
it can serve in real time and answers the next one ``503`` with a ``Retry-After``, which the SDK
raises as :class:`~unison_sdk.ServerBusyError`; admitted sessions go on streaming; ``auto``
sizes the capacity from a measurement of the host (injected here: nothing is timed)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from unison_sdk import CapacityError, ConnectionFailed, ServerBusyError, connect
from unison_sdk.errors import DEFAULT_RETRY_AFTER_S, retry_after_s

from tests.server_support import API_KEY, FPS, RATE, H, W, fake_engine, running_server
from unison_stream.config import ConfigError
from unison_stream.server.app import create_app, make_runner
from unison_stream.server.auth import TokenSigner
from unison_stream.server.capacity import (
    AUTO_CEILING,
    Measurement,
    engine_limit,
    measure_host,
    resolve_capacity,
    sessions_for,
)
from unison_stream.server.config import ServerConfig, load_server_config, validate_server
from unison_stream.server.session import MediaSpec, SessionManager

AUTH = {"Authorization": f"Bearer {API_KEY}"}
MEDIA = MediaSpec(fps=FPS, width=W, height=H, sample_rate=RATE)
_NO_ENGINE: Any = object()  # never used: a manager refuses an unresolved capacity first


# ---- the rule ---------------------------------------------------------------------------------


def test_the_rule_keeps_every_session_at_rtf_1_1() -> None:
    # a 2-core CPU: one session alone at 3.5-4x real time serves three, not four
    assert [sessions_for(r, ceiling=16) for r in (3.5, 4.0, 4.39, 4.4)] == [3, 3, 3, 4]
    assert sessions_for(2.3, ceiling=16) == 2
    assert sessions_for(0.7, ceiling=16) == 1  # too slow even for one: still serves one
    assert sessions_for(100.0, ceiling=8) == 8  # the engine's own limit
    for rtf in (1.1, 2.2, 3.3, 5.5, 7.7):  # n sessions at rtf_1 / n never fall below 1.1
        n = sessions_for(rtf + 1e-9, ceiling=16)
        assert rtf / n >= 1.1 - 1e-9 and rtf / (n + 1) < 1.1, (rtf, n)


def test_max_sessions_is_an_integer_or_auto() -> None:
    assert load_server_config(None, ["max_sessions=auto"]).max_sessions == "auto"
    assert load_server_config(None, ["max_sessions=3"]).max_sessions == 3
    for bad in ("max_sessions=0", "max_sessions=lots", "retry_after_s=0"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            load_server_config(None, [bad])
    auto = validate_server(ServerConfig(max_sessions="auto"))
    assert engine_limit(auto) == AUTO_CEILING and engine_limit(ServerConfig(max_sessions=2)) == 2
    with pytest.raises(ValueError, match="resolve it first"):
        SessionManager(_NO_ENGINE, auto, MEDIA, TokenSigner("k", ttl_s=1))


def test_a_configured_integer_is_taken_as_it_is_and_auto_is_measured() -> None:
    calls: list[float] = []

    def measure(engine: Any, fps: float) -> Measurement:
        calls.append(fps)
        return Measurement(rtf=3.6, chunks=12, wall_s=1.1)

    fixed = resolve_capacity(ServerConfig(max_sessions=5), None, FPS, measure=measure)  # type: ignore[arg-type]
    assert (fixed.sessions, fixed.source, fixed.measured_rtf, calls) == (5, "configured", None, [])
    auto = resolve_capacity(ServerConfig(max_sessions="auto"), None, FPS, measure=measure)  # type: ignore[arg-type]
    assert (auto.sessions, auto.source, auto.measured_rtf, calls) == (3, "measured", 3.6, [FPS])


def test_measure_host_goes_through_the_engine_and_closes_its_session() -> None:
    """The real measurement on the fake engine: a figure comes back and the probe session is
    gone (what the figure is depends on the host: not asserted)."""
    engine = fake_engine()
    try:
        m = measure_host(engine, FPS)
        assert m.chunks >= 1 and m.rtf > 0 and m.wall_s > 0, m
        assert engine.sessions == 0
    finally:
        engine.close()


def test_retry_after_header_parsing() -> None:
    assert retry_after_s("7") == 7.0
    assert retry_after_s(None) == retry_after_s("soon") == retry_after_s("-3")
    assert retry_after_s(None) == DEFAULT_RETRY_AFTER_S


# ---- a server at capacity ---------------------------------------------------------------------


async def _health(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    body: dict[str, Any] = await (await http.get(f"{base}/healthz")).json()
    return body


async def _gauge(http: aiohttp.ClientSession, base: str, name: str) -> float:
    text = await (await http.get(f"{base}/metrics")).text()
    (line,) = [ln for ln in text.splitlines() if ln.startswith(f"{name} ")]
    return float(line.split()[1])


def test_capacity_n_admits_n_refuses_the_next_and_frees_a_slot_on_close() -> None:
    async def main() -> dict[str, Any]:
        engine = fake_engine()
        try:
            async with (
                running_server(engine, max_sessions=2, retry_after_s=7) as srv,
                aiohttp.ClientSession() as http,
            ):
                out: dict[str, Any] = {"empty": await _health(http, srv.base)}
                out["headroom_empty"] = await _gauge(http, srv.base, "unison_headroom_sessions")
                a = await connect(srv.base, api_key=API_KEY)
                b = await connect(srv.base, api_key=API_KEY, media=False)
                frames = a.video_frames()
                await asyncio.wait_for(frames.__anext__(), 10)
                out["full"] = await _health(http, srv.base)
                out["headroom_full"] = await _gauge(http, srv.base, "unison_headroom_sessions")
                out["in_use_full"] = await _gauge(http, srv.base, "unison_sessions_in_use")
                # the third: a 503 over HTTP, and the SDK's typed error
                r = await http.post(f"{srv.base}/v1/sessions", json={}, headers=AUTH)
                out["http"] = (r.status, r.headers.get("Retry-After"), await r.json())
                try:
                    await connect(srv.base, api_key=API_KEY, media=False)
                except ConnectionFailed as e:
                    out["sdk"] = e
                # the admitted ones go on: a say plays through, frames keep coming
                utt = await a.say("Still here after the refusal.")
                await asyncio.wait_for(utt, 20)
                out["outcome"] = utt.outcome
                n = 0
                while n < 10:
                    await asyncio.wait_for(frames.__anext__(), 5)
                    n += 1
                await b.close()
                for _ in range(40):  # the slot is freed as the session ends
                    if srv.state.manager.in_use < 2:
                        break
                    await asyncio.sleep(0.05)
                out["after_close"] = await _health(http, srv.base)
                c = await connect(srv.base, api_key=API_KEY, media=False)
                out["reopened"] = bool(c.session_id)
                await c.close()
                await a.close()
                return out
        finally:
            engine.close()

    r = asyncio.run(main())
    assert r["empty"]["capacity"] == 2 and r["empty"]["capacity_source"] == "configured", r
    assert (r["empty"]["in_use"], r["empty"]["headroom"], r["headroom_empty"]) == (0, 2, 2.0)
    assert (r["full"]["in_use"], r["full"]["headroom"], r["headroom_full"]) == (2, 0, 0.0), r
    assert r["in_use_full"] == 2.0
    status, retry, body = r["http"]
    assert status == 503 and retry == "7" and body["error"]["code"] == "capacity", r["http"]
    assert "at capacity" in body["error"]["message"], body
    err = r["sdk"]
    assert isinstance(err, ServerBusyError), repr(err)
    assert err.retry_after_s == 7.0 and err.status == 503 and err.code == "capacity"
    assert isinstance(err.__cause__, CapacityError) and "retry in 7 s" in str(err)
    assert r["outcome"] == "finished", r
    assert r["after_close"]["headroom"] == 1 and r["after_close"]["in_use"] == 1, r
    assert r["reopened"]


def test_a_draining_server_reports_no_headroom() -> None:
    async def main() -> tuple[dict[str, Any], int]:
        engine = fake_engine()
        try:
            async with running_server(engine, max_sessions=3) as srv:
                srv.state.manager.draining = True
                async with aiohttp.ClientSession() as http:
                    r = await http.post(f"{srv.base}/v1/sessions", json={}, headers=AUTH)
                    return await _health(http, srv.base), r.status
        finally:
            engine.close()

    health, status = asyncio.run(main())
    assert health["headroom"] == 0 and health["capacity"] == 3 and status == 503, health


@contextlib.asynccontextmanager
async def _auto_server(rtf: float) -> AsyncIterator[tuple[str, Any]]:
    """A server with ``max_sessions=auto`` whose host measurement is ``rtf`` (injected)."""
    engine = fake_engine(max_sessions=AUTO_CEILING)
    cfg = validate_server(
        ServerConfig(port=0, api_keys=[API_KEY], token_secret="s", max_sessions="auto")
    )

    def measure(eng: Any, fps: float) -> Measurement:
        return Measurement(rtf=rtf, chunks=10, wall_s=1.0)

    capacity = resolve_capacity(cfg, engine, FPS, measure=measure)
    app = create_app(engine, cfg, MEDIA, model="fake", capacity=capacity)
    runner = make_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        await runner.cleanup()
        engine.close()


def test_auto_capacity_admits_what_the_measurement_allows() -> None:
    async def main() -> dict[str, Any]:
        async with _auto_server(2.3) as (base, _), aiohttp.ClientSession() as http:
            health = await _health(http, base)
            codes = []
            for _ in range(3):
                r = await http.post(f"{base}/v1/sessions", json={}, headers=AUTH)
                codes.append(r.status)
            return {"health": health, "codes": codes, "after": await _health(http, base)}

    r = asyncio.run(main())
    h = r["health"]
    assert (h["capacity"], h["capacity_source"], h["measured_rtf"]) == (2, "measured", 2.3), h
    assert r["codes"] == [201, 201, 503], r
    assert r["after"]["headroom"] == 0
