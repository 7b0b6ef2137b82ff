"""One contract, two engines: the real model engine (the small test config) and the fake one
(the same engine over a tone replica). What a server relies on — the order of an utterance's
events, chunks on one contiguous timeline, interrupt, and a model fault as a ``failed`` event —
holds for both."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import TEST_OVERRIDES
from unison_stream.config import load_config
from unison_stream.engine import Engine, EngineSession, MediaChunk
from unison_stream.engine.planner import LetterTiming
from unison_stream.engine.types import Held, UtteranceEvent
from unison_stream.server.fake_engine import FakeEngine


@pytest.fixture(params=["model", "tone"])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    if request.param == "model":
        cfg = load_config("tiny", [*TEST_OVERRIDES, "runtime.dtype=fp32", "runtime.replica=thread"])
        eng: Engine = Engine(cfg, timing=LetterTiming())
    else:
        eng = FakeEngine(width=64, height=64, speed=8.0)
    yield eng
    eng.close()


def _play(s: EngineSession, until: str, timeout: float = 60.0) -> list[MediaChunk]:
    """Ask for media as a clock does (at each chunk's end) until ``until`` is seen."""
    chunks: list[MediaChunk] = []
    t, events = 0.0, list[UtteranceEvent]()
    deadline = time.monotonic() + timeout
    while until not in [e.event for e in events]:
        assert time.monotonic() < deadline, f"no {until!r}: {events}"
        got = s.next_media(t)
        if isinstance(got, MediaChunk):
            chunks.append(got)
            t = got.start_s + len(got.video) / 25.0
        elif got is None or isinstance(got, Held):
            time.sleep(0.01)
        events += s.poll_events()
    return chunks


def test_an_utterance_plays_in_order_on_one_timeline(engine: Engine) -> None:
    s = engine.open_session()
    s.say("hello there", utterance_id="u1")
    chunks = _play(s, "finished")
    spoken = [c for c in chunks if c.utterance_id == "u1"]
    assert spoken and all(c.state == "speaking" for c in spoken)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    starts = [c.start_s for c in chunks]
    assert starts == sorted(starts) and starts[0] == 0.0


def test_interrupt_ends_the_utterance_and_idle_follows(engine: Engine) -> None:
    s = engine.open_session()
    s.say("a long sentence that is cut short by the listener " * 2, utterance_id="u1")
    _play(s, "started")
    s.interrupt()
    assert [e.event for e in s.poll_events()] == ["interrupted"]
    deadline = time.monotonic() + 60
    while not isinstance(got := s.next_media(100.0), MediaChunk):
        assert time.monotonic() < deadline, "no chunk after the interrupt"
        time.sleep(0.01)
    assert got.utterance_id is None and got.state == "idle"


def test_a_replica_fault_fails_the_utterance_and_the_stream_goes_on(engine: Engine) -> None:
    s = engine.open_session()
    real = engine.replica.step
    faults = [1]

    def failing(req: Any) -> Any:
        if faults and req.decode[0]:
            faults.pop()
            raise RuntimeError("injected model fault")
        return real(req)

    s.say("hello there", utterance_id="u1")
    _play(s, "started")
    engine.replica.step = failing  # type: ignore[method-assign]  # fault injection
    try:
        _play(s, "failed")
    finally:
        engine.replica.step = real  # type: ignore[method-assign]
    s.say("still here", utterance_id="u2")
    _play(s, "finished")
    assert s.stats()["errors"] == 1


def test_a_held_session_makes_nothing_past_its_sink_until_its_first_say(engine: Engine) -> None:
    s = engine.open_session(hold=True)  # what eval and render open: the same chunks every run
    assert s.next_chunk(timeout=0.5) is None, "no idle chunk while held"
    s.say("hello there", utterance_id="u1")
    first = s.next_chunk(timeout=60.0)
    assert first is not None and first.utterance_id == "u1", "the say's chunk comes first"
    s.close()
    t = engine.open_session(hold=True)
    assert t.next_chunk(timeout=0.5) is None
    t.set_state("listening")  # a state releases the hold as a say does
    c = t.next_chunk(timeout=60.0)
    assert c is not None and c.state == "listening"
    t.close()
