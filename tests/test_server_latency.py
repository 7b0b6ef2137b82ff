"""The served path's latency budget: hop traces on ``started`` and an event loop that nothing
heavy blocks (docs/server.md "Latency budget")."""

from __future__ import annotations

import asyncio
import time

from unison_sdk.protocol import Say

from tests.server_support import connect, create_session, running_server
from unison_stream.config import load_config
from unison_stream.engine import Engine
from unison_stream.server.media import HOPS
from unison_stream.server.session import MediaSpec


def test_started_event_carries_the_hop_trace_of_the_first_chunk() -> None:
    async def main() -> dict[str, float]:
        async with running_server() as srv:
            c = await connect(srv.base)
            try:
                await c.send(Say("u1", "hello there"))
                ev = await c.wait_for(
                    lambda m: m.get("type") == "utterance" and m.get("event") == "started", 10
                )
            finally:
                await c.close()
        trace: dict[str, float] = ev["trace_ms"]
        return trace

    trace = asyncio.run(main())
    assert list(trace) == [h for h in HOPS if h in trace], trace  # in the order of the path
    assert {"queued", "generated", "decoded", "in_clock", "played"} <= set(trace), trace
    values = list(trace.values())
    assert values == sorted(values) and values[0] >= 0.0, trace
    assert trace["played"] < 5000.0, trace


def test_loop_stays_responsive_while_a_session_opens_with_the_real_engine() -> None:
    cfg = load_config("tiny")  # the bundled model: an open takes 0.2-0.4 s (portrait, codec)
    m = cfg.media
    media = MediaSpec(fps=m.fps, width=m.width, height=m.height, sample_rate=m.sample_rate)

    async def main() -> tuple[float, dict[str, float]]:
        with Engine(cfg, max_sessions=2) as engine:
            engine.wait_ready()  # as `serve` does
            async with running_server(engine, media) as srv:
                await create_session(srv.base)  # a first stream, whose media must not stall
                await asyncio.sleep(1.0)
                lag = srv.state.loop_lag
                lag.reset()
                t0 = time.monotonic()
                await create_session(srv.base)
                open_s = time.monotonic() - t0
                await asyncio.sleep(0.1)
                return open_s, lag.summary()

    open_s, lag = asyncio.run(main())
    print("open", open_s, "loop lag", lag)
    # run on the loop, the open would stall the ticker (and the first stream) for all of it:
    # the lag would be the open's whole time (0.07-0.4 s); off the loop it is 3-10 ms
    assert lag["ticks"] >= 5, lag
    assert lag["max"] < max(25.0, min(100.0, 0.5 * 1000 * open_s)), (open_s, lag)
