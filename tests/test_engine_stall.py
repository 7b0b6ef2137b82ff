"""A stall must not be silent: when the engine's worker cannot go on, every consumer hears of it
at once, with the stream's state in the message (``docs/engine.md``, "Stalls")."""

from __future__ import annotations

import pytest

from unison_stream.engine import EngineSession
from unison_stream.engine.replica import StepRequest
from unison_stream.engine.types import EngineClosedError
from unison_stream.eval.generate import EvalStreamError, next_chunk
from unison_stream.server.fake_engine import FakeEngine


class _WorkerBug(BaseException):
    """Not an ``Exception``: the worker's per-step recovery does not catch it."""


def test_a_dead_worker_closes_every_session_instead_of_a_silent_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    eng = FakeEngine(width=64, height=64, speed=8.0)
    try:

        def boom(req: StepRequest) -> list[object]:
            raise _WorkerBug(f"step {req.step_id}")

        monkeypatch.setattr(eng.replica, "_step", boom)
        s: EngineSession = eng.open_session(identity=1)
        eng._worker.join(timeout=30)  # the sink's step kills it
        assert not eng._worker.is_alive()
        # the consumer is told at once: the session is closed (not a wait out to the timeout)
        assert s.closed
        assert s.next_chunk(timeout=None) is None
        with pytest.raises(EvalStreamError, match=r"closed: session s\d+: queue \[\]"):
            next_chunk(s)
        with pytest.raises(EngineClosedError):
            s.say("hello", utterance_id="u1")
        with pytest.raises(EngineClosedError, match="worker died"):
            eng.open_session(identity=1)
    finally:
        eng.close()


def test_describe_names_what_the_stream_waits_for() -> None:
    eng = FakeEngine(width=64, height=64, speed=8.0)
    try:
        s = eng.open_session(identity=1)
        assert s.next_chunk(timeout=30) is not None
        line = s.describe()
        for part in ("queue", "current", "pending", "made", "taken", "wants a chunk", "closed"):
            assert part in line, line
    finally:
        eng.close()
