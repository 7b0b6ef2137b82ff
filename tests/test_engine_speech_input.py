"""Streamed audio input (docs/engine.md "Audio-driven mode"): speech written in pieces while the
avatar speaks it. The speech heard is the given speech bit-exact after resampling, chunks start
before the input ends, late input gives listening chunks (not a freeze), an interrupt drops the
rest."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from tests.helpers import TEST_OVERRIDES, take
from unison_stream.config import load_config
from unison_stream.data.synth import speech
from unison_stream.engine import Engine, EngineSession
from unison_stream.engine.audio import StreamResampler, resample
from unison_stream.engine.planner import LetterTiming
from unison_stream.engine.types import MediaChunk

CFG = load_config("tiny", [*TEST_OVERRIDES, "runtime.dtype=fp32"])
needs_espeak = pytest.mark.skipif(
    not speech.available(), reason="libespeak-ng not installed (Debian package libespeak-ng1)"
)
CS = CFG.chunk_seconds()
SR = CFG.media.sample_rate


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine(CFG, timing=LetterTiming(), max_ahead=2)
    yield eng
    eng.close()


def _speech(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 180 * t) + 0.05 * rng.standard_normal(t.size)).astype(
        np.float32
    )


def _until(s: EngineSession, uid: str, event: str, limit: int = 80) -> list[MediaChunk]:
    chunks: list[MediaChunk] = []
    for _ in range(limit):
        chunks += take(s, 1)
        if any(e.utterance_id == uid and e.event == event for e in s.poll_events()):
            return chunks
    raise AssertionError(f"no {event} of {uid} in {limit} chunks")


def test_the_resampler_in_pieces_equals_resampling_the_whole() -> None:
    rng = np.random.default_rng(3)
    for rate in (8000, 16000, 22050, 24000, 44100, 48000):
        x = rng.standard_normal(rate).astype(np.float32)
        r = StreamResampler(rate, SR)
        parts, i = [], 0
        while i < x.size:
            k = int(rng.integers(1, 3000))
            parts.append(r.push(x[i : i + k]))
            i += k
        parts.append(r.end())
        np.testing.assert_array_equal(np.concatenate(parts), resample(x, rate, SR), str(rate))


def test_streamed_speech_is_heard_bit_exact_and_starts_before_the_input_ends(
    engine: Engine,
) -> None:
    s = engine.open_session()
    take(s, 1)
    pcm = _speech(12 * CS, 24000)
    w = s.say_audio_stream(24000, utterance_id="tts")
    ended = threading.Event()

    def tts() -> None:  # 20 ms frames at twice real time, like a fast streaming TTS
        frame = 480
        for i in range(0, pcm.size, frame):
            w.write(pcm[i : i + frame])
            time.sleep(0.01)
        w.end()
        ended.set()

    threading.Thread(target=tts, daemon=True).start()
    chunks: list[MediaChunk] = []
    started_before_end = False
    while True:
        chunks += take(s, 1)
        events = s.poll_events()
        if any(e.event == "started" for e in events):
            started_before_end = not ended.is_set()
        if any(e.event == "finished" for e in events):
            break
    mine = [c for c in chunks if c.utterance_id == "tts"]
    got = np.concatenate([c.speech for c in mine if c.speech is not None])
    want = resample(pcm, 24000, SR)
    np.testing.assert_array_equal(got[: want.size], want)
    assert not got[want.size :].any() and got.size - want.size < CS * SR
    assert started_before_end, "the first chunk played while the TTS was still writing"
    assert [c.index for c in chunks] == list(range(chunks[0].index, chunks[-1].index + 1))


def test_late_input_gives_listening_chunks_and_no_speech_is_lost(engine: Engine) -> None:
    s = engine.open_session()
    take(s, 1)
    pcm = _speech(6 * CS, SR, seed=1)
    w = s.say_audio_stream(SR, utterance_id="slow")
    half = 3 * round(CS * SR) + 10
    w.write(pcm[:half])

    def later() -> None:  # the TTS stalls for 5 chunks, then catches up
        time.sleep(5 * CS + CFG.stream.input_grace_s)
        w.write(pcm[half:])
        w.end()

    threading.Thread(target=later, daemon=True).start()
    chunks = _until(s, "slow", "finished")
    first = next(i for i, c in enumerate(chunks) if c.utterance_id == "slow")
    during = chunks[first:]
    fillers = [c for c in during if c.utterance_id is None]
    assert fillers and all(c.state == "listening" for c in fillers), "listening, not frozen"
    assert all(c.video.std() > 0 for c in during)
    speech = np.concatenate([c.speech for c in during if c.utterance_id == "slow"])
    np.testing.assert_array_equal(speech[: pcm.size], pcm)


def test_an_interrupt_drops_the_rest_of_the_stream(engine: Engine) -> None:
    s = engine.open_session()
    take(s, 1)
    pcm = _speech(20 * CS, SR, seed=2)
    w = s.say_audio_stream(SR, utterance_id="cut")
    w.write(pcm[: 4 * round(CS * SR) + 1])
    chunks = _until(s, "cut", "started")
    s.interrupt()
    assert w.dropped
    w.write(pcm[4 * round(CS * SR) + 1 :])  # ignored: the utterance is gone
    w.end()
    chunks = take(s, 6)
    assert all(c.utterance_id is None for c in chunks[2:]), "at most the chunks made ahead"
    s.say_audio(pcm[: round(CS * SR)], SR, utterance_id="next")  # the session goes on
    assert any(c.utterance_id == "next" for c in _until(s, "next", "finished"))


def test_an_empty_stream_finishes_and_a_write_after_end_is_an_error(engine: Engine) -> None:
    s = engine.open_session()
    take(s, 1)
    w = s.say_audio_stream(SR, utterance_id="nothing")
    w.end()
    w.end()  # idempotent
    with pytest.raises(ValueError, match="after end"):
        w.write(np.zeros(10, np.float32))
    chunks = _until(s, "nothing", "finished")
    assert [c for c in chunks if c.utterance_id == "nothing"], "one silent chunk"
    with pytest.raises(ValueError, match="sample_rate"):
        s.say_audio_stream(96000, utterance_id="bad")


@needs_espeak
def test_the_front_ends_track_reaches_the_model_in_both_audio_modes() -> None:
    """Whole and streamed audio-driven utterances condition their chunks on the speech's
    timed track as the front end reads it (mouth shapes, not only silence)."""
    from unison_stream.data.synth.speech import synthesize
    from unison_stream.engine.replica import LocalReplica
    from unison_stream.vocab import SILENCE_ID

    pcm = synthesize("hello there my good friend", sample_rate=24000).audio
    cfg = load_config("tiny", [*TEST_OVERRIDES, "runtime.dtype=fp32", "runtime.replica=thread"])
    with Engine(cfg, timing=LetterTiming()) as engine:
        assert engine.frontend is not None, "the front end's weights are bundled"
        assert isinstance(engine.replica, LocalReplica)
        model = engine.replica.core.model
        voiced: list[int] = []
        real = model.forward_chunk

        def spy(*a, **k):
            c = a[4]
            voiced.append(int((c.track_mask & (c.track_ids > SILENCE_ID)).sum()))
            return real(*a, **k)

        model.forward_chunk = spy  # type: ignore[method-assign]
        s = engine.open_session()
        take(s, 1)
        for uid, streamed in (("whole", False), ("streamed", True)):
            voiced.clear()
            if streamed:
                w = s.say_audio_stream(24000, utterance_id=uid)
                for i in range(0, pcm.size, 480):
                    w.write(pcm[i : i + 480])
                w.end()
            else:
                s.say_audio(pcm, 24000, utterance_id=uid)
            _until(s, uid, "finished")
            assert sum(v > 0 for v in voiced) >= 3, (uid, voiced)
        model.forward_chunk = real  # type: ignore[method-assign]
