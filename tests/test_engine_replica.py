"""The model replica in a child process: same stream as in-process, survives the child's death,
and works from a script without a ``__main__`` guard."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import TEST_OVERRIDES, live_model, random_cond, take
from unison_stream.config import load_config
from unison_stream.engine import Engine, MediaChunk, UtteranceEvent
from unison_stream.engine.planner import LetterTiming
from unison_stream.engine.replica import (
    ProcessReplica,
    ReplicaError,
    StepRequest,
    _recv,
    _send,
)
from unison_stream.model.conditioning import TimedTrack
from unison_stream.model.generator import PlanSlice

OVERRIDES = [*TEST_OVERRIDES, "runtime.dtype=fp32", "runtime.threads=1"]
ROOT = Path(__file__).resolve().parent.parent


def _stream(replica: str) -> list[MediaChunk]:
    cfg = load_config("tiny", [*OVERRIDES, f"runtime.replica={replica}"])
    with Engine(cfg, model=live_model(cfg), timing=LetterTiming(), max_sessions=1) as eng:
        s = eng.open_session(identity=3, seed=5)
        return take(s, 6)  # idle: what a say changes depends on timing (chunks made ahead)


@pytest.mark.parametrize("replica", ["process", "thread"])
def test_the_replica_reports_generation_and_decode_time_per_step(replica: str) -> None:
    cfg = load_config("tiny", [*OVERRIDES, f"runtime.replica={replica}"])
    with Engine(cfg, model=live_model(cfg), timing=LetterTiming(), max_sessions=1) as eng:
        take(eng.open_session(identity=3, seed=5), 4)
        steps = eng.replica.timings()
        assert len(steps) >= 4 and all(g > 0 and d >= 0 for g, d in steps), steps
        assert len(eng.replica.timings()) <= 3, "a call returns the steps since the last one"


def test_process_replica_streams_what_the_in_process_replica_does() -> None:
    a, b = _stream("process"), _stream("thread")
    for x, y in zip(a, b, strict=True):
        assert x.index == y.index
        assert np.abs(x.video.astype(int) - y.video.astype(int)).max() <= 1
        np.testing.assert_allclose(x.audio, y.audio, atol=1e-4)


def test_a_killed_replica_process_is_restarted_and_the_stream_goes_on() -> None:
    cfg = load_config("tiny", OVERRIDES)
    with Engine(cfg, model=live_model(cfg), timing=LetterTiming(), max_sessions=1) as eng:
        assert isinstance(eng.replica, ProcessReplica)
        s = eng.open_session()
        chunks = take(s, 2)
        pid = eng.replica.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        chunks += take(s, 4)  # the chunk in flight fails; the stream re-sinks and goes on
        assert [c.index for c in chunks] == list(range(6)), "the media clock has no gap"
        assert eng.replica.restarts == 1 and eng.replica.pid != pid
        assert s.stats()["errors"] >= 1
        s.say("still here", utterance_id="v")
        events: list[UtteranceEvent] = []
        while not any(e.event == "finished" for e in events):
            take(s, 1)
            events += s.poll_events()
        assert [e.event for e in events if e.utterance_id == "v"] == [
            "queued",
            "started",
            "finished",
        ]


def test_a_hung_replica_process_is_killed_after_the_timeout_and_the_stream_goes_on() -> None:
    cfg = load_config("tiny", [*OVERRIDES, "runtime.replica_timeout_s=2"])
    with Engine(cfg, model=live_model(cfg), timing=LetterTiming(), max_sessions=1) as eng:
        assert isinstance(eng.replica, ProcessReplica)
        s = eng.open_session()
        take(s, 2)
        pid = eng.replica.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # alive but silent: a pipe read without a timeout hangs
        t0 = time.monotonic()
        take(s, 3, timeout=30)
        assert time.monotonic() - t0 < 25
        assert eng.replica.restarts == 1 and eng.replica.pid != pid
        with pytest.raises(ProcessLookupError):  # the hung child was killed, not left behind
            for _ in range(50):
                os.kill(pid, 0)
                time.sleep(0.1)


def test_a_script_without_a_main_guard_can_use_the_engine(tmp_path: Path) -> None:
    script = tmp_path / "no_guard.py"
    script.write_text(
        "from tests.helpers import TEST_OVERRIDES\n"
        "from unison_stream.config import load_config\n"
        "from unison_stream.engine import Engine\n"
        "from unison_stream.engine.planner import LetterTiming\n"
        "cfg = load_config('tiny', [*TEST_OVERRIDES, 'runtime.dtype=fp32'])\n"
        "with Engine(cfg, timing=LetterTiming(), max_sessions=1) as eng:\n"
        "    c = eng.open_session().next_chunk(timeout=60)\n"
        "    print('chunk', c.index, c.video.shape)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=180, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "chunk 0" in out.stdout


def test_a_cancel_sent_behind_a_step_abandons_it_and_leaves_the_row_untouched() -> None:
    cfg = load_config("tiny", OVERRIDES)
    model = live_model(cfg)
    replica = ProcessReplica(cfg, None, model)
    try:
        replica.open("a", 7)
        cond = random_cond(cfg).with_tracks([TimedTrack()])
        req = StepRequest(["a"], PlanSlice(cond), [True], step_id=1)
        _send(replica._conn, ("step", (req,)))
        _send(replica._conn, ("cancel", (1,)))
        assert _recv(replica._conn) == ("cancelled", None)
        replica.cancel(1)  # a late cancel of a finished step is ignored
        got = replica.step(StepRequest(["a"], PlanSlice(cond), [True], step_id=2))[0]
        replica.open("b", 7)  # a fresh row with the same seed: the same first chunk
        want = replica.step(StepRequest(["b"], PlanSlice(cond), [True], step_id=3))[0]
        assert got is not None and want is not None
        np.testing.assert_array_equal(got.video, want.video)
        np.testing.assert_array_equal(got.speech, want.speech)
    finally:
        replica.shutdown()


def test_a_checkpoint_the_replica_cannot_load_is_a_clear_error(tmp_path: Path) -> None:
    cfg = load_config("tiny", OVERRIDES)
    with pytest.raises(ReplicaError, match=r"missing\.safetensors"):
        Engine(cfg, checkpoint=tmp_path / "missing.safetensors", timing=LetterTiming())
