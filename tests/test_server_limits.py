"""Limits the server and the planner share, metric counters that never go down, and engine
faults on session creation that are not reported as capacity."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from tests.server_support import API_KEY, create_session, fake_engine, running_server, server_config
from unison_stream.config import ConfigError
from unison_stream.engine.planner import parse
from unison_stream.server import protocol as P
from unison_stream.server.app import state_of
from unison_stream.vocab import MAX_TEXT_CHARS

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _say(n: int) -> str:
    return json.dumps({"type": "say", "id": "u1", "text": "a" * n})


def test_the_server_accepts_exactly_what_the_planner_accepts() -> None:
    limits = P.Limits(max_text_chars=server_config().max_text_chars)
    assert limits.max_text_chars == MAX_TEXT_CHARS
    ok = P.parse_client_message(_say(MAX_TEXT_CHARS), limits)
    assert isinstance(ok, P.Say)
    parse(ok.text)  # the planner takes it too
    with pytest.raises(P.BadRequest, match="exceeds"):
        P.parse_client_message(_say(MAX_TEXT_CHARS + 100), limits)
    with pytest.raises(ValueError, match="at most"):
        parse("a" * (MAX_TEXT_CHARS + 100))
    with pytest.raises(ConfigError, match="max_text_chars"):
        server_config(max_text_chars=MAX_TEXT_CHARS + 400)


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_underrun_and_error_totals_never_go_down_when_a_channel_closes() -> None:
    async def main() -> None:
        async with running_server() as srv, aiohttp.ClientSession() as http:
            a = await create_session(srv.base)
            manager = state_of(srv.app).manager
            channel = next(iter(manager.channels.values()))
            channel.clock.underruns += 7  # as if 7 idle slots had been served
            channel.errors += 2
            m = await (await http.get(f"{srv.base}/metrics")).text()
            before = _metric(m, "unison_underruns_total"), _metric(m, "unison_engine_errors_total")
            r = await http.delete(f"{srv.base}/v1/sessions/{a['session_id']}", headers=AUTH)
            assert r.status == 200
            m = await (await http.get(f"{srv.base}/metrics")).text()
            after = _metric(m, "unison_underruns_total"), _metric(m, "unison_engine_errors_total")
            assert before[0] >= 7 and before[1] >= 2
            assert after[0] >= before[0] and after[1] >= before[1], (before, after)

    asyncio.run(main())


def test_an_engine_fault_at_session_creation_is_not_a_capacity_answer() -> None:
    eng = fake_engine()

    def broken(**kw: Any) -> Any:
        raise RuntimeError("model failed to load")

    async def main() -> None:
        async with running_server(engine=eng) as srv, aiohttp.ClientSession() as http:
            eng.open_session = broken  # type: ignore[method-assign]  # fault injection
            r = await http.post(f"{srv.base}/v1/sessions", json={}, headers=AUTH)
            assert r.status == 500, r.status
            h = await (await http.get(f"{srv.base}/healthz")).json()
            assert h["status"] == "ok" and h["sessions"] == 0

    asyncio.run(main())
