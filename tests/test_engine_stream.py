"""The engine end to end on the small test config: clock, idle, say, interrupt, audio-driven
mode, batching, failures and shutdown. Behaviour is asserted as sequences of chunks and events.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from tests.helpers import TEST_OVERRIDES, take
from unison_stream.config import load_config
from unison_stream.engine import Engine, EngineClosedError, EngineSession, MediaChunk
from unison_stream.engine.audio import resample
from unison_stream.engine.planner import LetterTiming, Phone
from unison_stream.engine.replica import LocalReplica, ReplicaCore
from unison_stream.model.conditioning import Conditioning
from unison_stream.vocab import SILENCE_ID

OVERRIDES = [*TEST_OVERRIDES, "runtime.dtype=fp32"]
CFG = load_config("tiny", OVERRIDES)
CS = CFG.chunk_seconds()  # 0.16 s
SR = CFG.media.sample_rate


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine(CFG, timing=LetterTiming(), max_ahead=2)
    yield eng
    eng.close()


@pytest.fixture
def local_engine() -> Iterator[Engine]:
    """The replica in this process (``runtime.replica=thread``), for tests that spy on it."""
    eng = Engine(load_config("tiny", [*OVERRIDES, "runtime.replica=thread"]), timing=LetterTiming())
    yield eng
    eng.close()


def core(engine: Engine) -> ReplicaCore:
    assert isinstance(engine.replica, LocalReplica)
    return engine.replica.core


def until_event(s: EngineSession, event: str, limit: int = 60) -> tuple[list, list]:
    chunks, events = [], []
    for _ in range(limit):
        chunks += take(s, 1)
        events += s.poll_events()
        if any(e.event == event for e in events):
            return chunks, events
    raise AssertionError(f"no {event} event in {limit} chunks: {events}")


def test_idle_stream_is_continuous_with_a_gap_free_clock(engine: Engine) -> None:
    s = engine.open_session(identity=3, caption="a man with a beard")
    chunks = take(s, 5)
    s.set_state("listening")
    chunks += take(s, 6)
    assert [c.index for c in chunks] == list(range(11))
    assert [c.start_s for c in chunks] == pytest.approx([i * CS for i in range(11)])
    for c in chunks:
        assert c.video.shape == (4, 64, 64, 3) and c.video.dtype == np.uint8
        assert c.audio.shape == (round(CS * SR),) and c.audio.dtype == np.float32
        assert np.abs(c.audio).max() <= 1.0 and c.utterance_id is None
        assert c.speech is not None and c.speech.shape == c.audio.shape
    assert chunks[0].state == "idle" and chunks[-1].state == "listening"
    with pytest.raises(ValueError, match="idle or listening"):
        s.set_state("dancing")


def test_say_emits_events_in_order_and_contiguous_utterance_chunks(engine: Engine) -> None:
    s = engine.open_session()
    take(s, 2)
    text = "Hi there <clap>"
    s.say(text, utterance_id="u1")
    chunks, events = until_event(s, "finished")
    chunks += take(s, 2)
    assert [e.event for e in events] == ["queued", "started", "finished"]
    times = [e.media_time_s for e in events]
    assert times == sorted(times)
    ids = [c.utterance_id for c in chunks]
    first = ids.index("u1")
    n = engine.planner.plan(text).num_chunks(CS)
    assert ids[first : first + n] == ["u1"] * n and "u1" not in ids[first + n :]
    assert events[1].media_time_s == pytest.approx(chunks[first].start_s)
    assert all(c.state == "speaking" for c in chunks[first : first + n])
    assert chunks[-1].utterance_id is None and chunks[-1].state == "idle"
    assert [c.index for c in chunks] == list(range(2, 2 + len(chunks)))


def test_interrupt_drops_queued_chunks_at_the_next_boundary(engine: Engine) -> None:
    s = engine.open_session()
    s.say("this is a rather long sentence that keeps going for a while", utterance_id="long")
    s.say("and a second one", utterance_id="next")
    chunks, _ = until_event(s, "started")
    deadline = time.monotonic() + 20
    while s.stats()["buffer_ms"] < 2 * CS * 1000 - 1e-6:  # the queue is full of "long"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    dropped_before = s.stats()["dropped"]
    s.interrupt()
    after = take(s, 4)
    assert all(c.utterance_id is None for c in after), "no chunk of an interrupted utterance"
    assert s.stats()["dropped"] >= dropped_before + 2
    assert after[0].index == chunks[-1].index + 1, "the clock has no gap"
    events = [(e.utterance_id, e.event) for e in s.poll_events()]
    assert events[-2:] == [("long", "interrupted"), ("next", "interrupted")]
    assert ("long", "finished") not in events
    s.say("ok", utterance_id="after")  # the session speaks again
    _, ev = until_event(s, "finished")
    assert [e.event for e in ev if e.utterance_id == "after"] == ["queued", "started", "finished"]


def test_bad_say_raises_and_the_session_keeps_streaming(engine: Engine) -> None:
    s = engine.open_session()
    first = take(s, 1)
    with pytest.raises(ValueError, match="unknown event tag <dance>"):
        s.say("hello <dance>", utterance_id="bad")
    with pytest.raises(ValueError, match="at most"):
        s.say("a" * 5000, utterance_id="bad")
    more = take(s, 3)
    assert [c.index for c in first + more] == [0, 1, 2, 3]
    assert s.poll_events() == []


def test_audio_driven_mode_returns_the_given_speech_unchanged(local_engine: Engine) -> None:
    engine = local_engine
    captured = []
    step = core(engine).stepper.step

    def spy(rows, plan, cancel=None):
        out = step(rows, plan, cancel)
        if plan.clean_audio is not None and plan.clean_video is None:
            captured.append((plan.clean_audio[:, 0].clone(), out.speech.clone()))
        return out

    core(engine).stepper.step = spy  # type: ignore[method-assign]
    s = engine.open_session()
    rng = np.random.default_rng(0)
    pcm = (0.3 * np.sin(np.arange(9000) * 0.05) + 0.05 * rng.standard_normal(9000)).astype(
        np.float32
    )
    s.say_audio(pcm, 22050, utterance_id="voice")
    chunks, _ = until_event(s, "finished")
    mine = [c for c in chunks if c.utterance_id == "voice"]
    got = np.concatenate([c.speech for c in mine if c.speech is not None])
    want = resample(pcm, 22050, SR)
    np.testing.assert_array_equal(got[: len(want)], want)  # waveform: bit-exact pass-through
    assert not got[len(want) :].any(), "padding to whole chunks is silence"
    assert len(captured) == len(mine)
    for clean, out in captured:  # latents: held clean through every solver step
        assert torch.equal(clean, out)


def _speaks(cond: Conditioning) -> bool:
    """A chunk of an utterance: its track holds more than silence (idle chunks see one
    silence token, as the world labels its rests)."""
    return bool((cond.track_mask & (cond.track_ids > SILENCE_ID)).any())


def test_failure_is_recorded_and_the_stream_goes_on(local_engine: Engine) -> None:
    engine = local_engine
    model = core(engine).model
    s = engine.open_session()
    take(s, 2)
    real = model.forward_chunk
    calls = {"n": 0}

    def flaky(*a, **k):
        if _speaks(a[4]):  # a chunk of the utterance: fail the first one once
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("injected failure")
        return real(*a, **k)

    model.forward_chunk = flaky  # type: ignore[method-assign]
    s.say("hello there friend", utterance_id="u")
    chunks, events = until_event(s, "failed")
    model.forward_chunk = real  # type: ignore[method-assign]
    assert [e.event for e in events] == ["queued", "failed"], "its first chunk failed"
    chunks += take(s, 3)
    assert s.stats()["errors"] == 1
    assert [c.index for c in chunks] == list(range(2, 2 + len(chunks)))
    s.say("again", utterance_id="v")
    _, ev = until_event(s, "finished")
    assert [e.event for e in ev if e.utterance_id == "v"] == ["queued", "started", "finished"]


def test_backpressure_bounds_work_ahead_of_the_consumer(engine: Engine) -> None:
    s = engine.open_session()
    take(s, 1)
    time.sleep(1.0)  # nobody reads: the worker must stop at max_ahead
    assert s.stats()["generated"] <= 1 + engine.max_ahead
    assert s.stats()["buffer_ms"] == pytest.approx(engine.max_ahead * CS * 1000)


def test_two_sessions_share_batched_forwards() -> None:
    with Engine(CFG, timing=LetterTiming(), max_sessions=2) as eng:
        a, b = eng.open_session(identity=1), eng.open_session(identity=2)
        for _ in range(12):
            take(a, 1)
            take(b, 1)
        st = eng.stats()
        assert st["batched_steps"] > 0, st
        assert a.stats()["errors"] == b.stats()["errors"] == 0
        with pytest.raises(Exception, match="sessions of this replica"):
            eng.open_session()


def test_close_is_idempotent_and_leaves_no_thread_behind() -> None:
    eng = Engine(CFG, timing=LetterTiming())
    s = eng.open_session()
    take(s, 1)
    s.close()
    s.close()
    assert s.next_chunk(timeout=0.1) is None and eng.sessions == 0
    with pytest.raises(EngineClosedError):
        s.say("hi", utterance_id="x")
    s2 = eng.open_session()
    take(s2, 1)
    eng.close()
    eng.close()
    assert s2.closed
    names = {t.name for t in threading.enumerate()}
    assert not any(n.startswith(("unison-engine", "unison-planner")) for n in names), names
    with pytest.raises(EngineClosedError):
        eng.open_session()


def test_interrupt_abandons_the_chunk_being_made() -> None:
    """With more than one call per chunk (``sampler.steps=2``, the student as distilled) the
    chunk is abandoned at the next call; the default's single call is the commit, so an
    interrupt that lands inside it waits for it (``docs/engine.md``)."""
    cfg = load_config("tiny", [*OVERRIDES, "runtime.replica=thread", "sampler.steps=2"])
    with Engine(cfg, timing=LetterTiming()) as engine:
        model = core(engine).model
        s = engine.open_session()
        take(s, 2)
        inside, release = threading.Event(), threading.Event()
        real = model.forward_chunk

        def held(*a, **k):  # the utterance's first forward waits until the test lets it go
            if _speaks(a[4]) and not release.is_set():
                inside.set()
                release.wait(10)
            return real(*a, **k)

        model.forward_chunk = held  # type: ignore[method-assign]
        s.say("hello there my good friend, how are you today", utterance_id="u")
        while not inside.wait(0.05):
            s.next_chunk(timeout=0.05)
        before = engine.stats()["cancelled_steps"]  # (the say may have abandoned an idle chunk)
        s.interrupt()  # the worker is inside the utterance's first chunk
        release.set()
        after = take(s, 3)
        model.forward_chunk = real  # type: ignore[method-assign]
        assert engine.stats()["cancelled_steps"] == before + 1, "abandoned, not made and dropped"
        assert all(c.utterance_id is None for c in after)
        assert [e.event for e in s.poll_events()] == ["queued", "interrupted"]
        assert s.stats()["errors"] == 0


def test_a_chunk_made_once_the_queue_gets_more_room_is_not_counted_from_before(
    engine: Engine,
) -> None:
    """A full queue (the worker waits) that is allowed to hold more: the next chunk is
    measured from when the room came, so what the stream's buffer policy reads as the time
    making it took is not inflated by the wait (a stale instant made it prebuffer for nothing).
    """
    s = engine.open_session()
    deadline = time.monotonic() + 60
    while len(s.queued()) < 2:  # max_ahead=2: then the worker waits
        assert time.monotonic() < deadline, "the queue never filled"
        time.sleep(0.02)
    time.sleep(0.5)
    t_room = time.monotonic()
    s.set_buffer(ahead_s=3 * CS, max_prebuffer_s=4.0)
    while len(s.queued()) < 3:
        assert time.monotonic() < deadline, "no chunk after the room came"
        time.sleep(0.02)
    chunks = [s.next_media(k * CS) for k in range(3)]
    assert all(isinstance(c, MediaChunk) for c in chunks), chunks
    took, _ = s.stream.readiness.rates[-1]
    since_room = chunks[2].times["decoded"] - t_room  # type: ignore[union-attr]
    assert took <= since_room + 1e-3, f"took {took:.3f} s, {since_room:.3f} s since the room"


def test_chunks_made_after_an_interrupt_emptied_a_full_queue_are_counted_from_it(
    engine: Engine,
) -> None:
    """The same for room made by dropping chunks: an interrupt empties a full queue of
    speech, and the idle chunks made next are counted from the interrupt, not from before."""
    s = engine.open_session()
    s.say("Hello there, this is a long enough sentence to fill the queue.", utterance_id="u")
    deadline = time.monotonic() + 60
    while s.queued() != ["u", "u"]:
        assert time.monotonic() < deadline, f"no full queue of speech: {s.queued()}"
        if len(s.queued()) >= 2 and s.queued()[0] is None:
            s.next_media(0.0)  # idle chunks made before the plan
        time.sleep(0.02)
    time.sleep(0.5)
    t_cut = time.monotonic()
    s.interrupt()
    while len(s.queued()) < 1:
        assert time.monotonic() < deadline, "no chunk after the interrupt"
        time.sleep(0.02)
    chunk = s.next_media(0.0)
    assert isinstance(chunk, MediaChunk) and chunk.utterance_id is None
    took, _ = s.stream.readiness.rates[-1]
    since_cut = chunk.times["decoded"] - t_cut
    assert took <= since_cut + 1e-3, f"took {took:.3f} s, {since_cut:.3f} s since the interrupt"


class _SlowTiming(LetterTiming):
    """The letters front end, but planning takes 0.6 s (espeak-ng on a busy host, say)."""

    def phonemes(self, text: str) -> list[Phone]:
        time.sleep(0.6)
        return super().phonemes(text)


def test_idle_chunks_made_while_an_utterance_is_planned_do_not_play_before_it() -> None:
    """The worker goes on making idle motion while a say is planned; once the utterance's
    first chunk is made, those idle chunks are dropped, so its words are next in the queue."""
    eng = Engine(CFG, timing=_SlowTiming(), max_ahead=4)
    try:
        s = eng.open_session()
        take(s, 1)
        s.say("Hi there", utterance_id="u")
        deadline = time.monotonic() + 60
        while "u" not in s.queued():
            assert time.monotonic() < deadline, "the utterance was never made"
            if len(s.queued()) >= 3:  # a consumer: the worker never waits on a full queue
                s.next_media(0.0)
            time.sleep(0.01)
        queued = s.queued()
        assert queued[0] == "u", queued
        assert s.stats()["dropped"] >= 1, "no idle chunk was made during the plan"
    finally:
        eng.close()


def test_idle_sees_a_rest_and_plays_on_while_the_reply_is_made(local_engine: Engine) -> None:
    """Idle chunks are conditioned on a rest (one silence token, as the world labels pauses),
    and those made ahead stay queued while a ``say`` is planned and its first chunk made, so a
    consumer never waits on it with nothing to show; that first chunk then drops them."""
    engine = local_engine
    model = core(engine).model
    tracks: list[tuple[int, ...]] = []
    inside, release = threading.Event(), threading.Event()
    real = model.forward_chunk

    def held(*a, **k):  # records each chunk's track; the reply's first forward waits
        c = a[4]
        tracks.append(tuple(c.track_ids[0][c.track_mask[0]].tolist()))
        if _speaks(c) and not release.is_set():
            inside.set()
            release.wait(10)
        return real(*a, **k)

    model.forward_chunk = held  # type: ignore[method-assign]
    try:
        s = engine.open_session()
        take(s, 1)
        while len(s.queued()) < engine.max_ahead:  # idle made ahead, then the worker waits
            time.sleep(0.01)
        s.say("hello there friend", utterance_id="u")
        assert inside.wait(10), "the worker starts on the reply"
        queued = s.queued()
        # the idle chunks made ahead are still there (plus what was made while it was planned,
        # never more than max_ahead of them)
        assert engine.max_ahead <= len(queued) <= 2 * engine.max_ahead, queued
        assert all(q is None for q in queued)
        assert take(s, 1, timeout=0.5)[0].utterance_id is None, "idle plays while it is made"
        release.set()
        chunks, _ = until_event(s, "started")
    finally:
        release.set()
        model.forward_chunk = real  # type: ignore[method-assign]
    idle = [t for t in tracks if not any(i > SILENCE_ID for i in t)]
    assert (SILENCE_ID,) in idle and set(idle) <= {(), (SILENCE_ID,)}, set(idle)
    assert chunks[-1].utterance_id == "u"
    assert all(c.utterance_id is None for c in chunks[:-1]), "no idle chunk after its words"
