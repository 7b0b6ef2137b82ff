"""Stems on the media clock: each slot keeps the mix's speech and effects stems at the mix's
level, resampled and cut like the mix, so they sum to it; the stem tracks are timed like the
mix track; a client that takes no stems gets the mix it always got.

The chunks come from a scripted source mixed by the engine's own ``Mixer`` (its limiter and
gains), so the split is checked against the mix the engine really makes.
"""

from __future__ import annotations

import asyncio
from collections import deque

import numpy as np
import pytest

from unison_stream.engine.audio import Mixer, split_mix
from unison_stream.engine.types import MediaChunk
from unison_stream.server.media import (
    AUDIO_FRAME_SAMPLES,
    AUDIO_RATE,
    CUT_FADE,
    ClockAudioTrack,
    MediaClock,
    Playout,
    StemAudioTrack,
    Upsampler,
)

RATE = 16_000  # model sample rate
FPS = 25.0
FRAMES = 8  # frames per chunk: 0.32 s
PER_CHUNK = RATE * FRAMES // 25  # 5120 samples at 16 kHz
SPF = AUDIO_RATE // 25  # 1920 samples of 48 kHz audio per slot


class _Source:
    """A scripted stream: ``next_media`` hands out the queued chunks, then nothing."""

    def __init__(self) -> None:
        self.queue: deque[MediaChunk] = deque()
        self.mixer = Mixer()
        self.mixes: list[np.ndarray] = []  # every chunk's mix, in order (the reference)

    def say(self, speech: np.ndarray, sfx: np.ndarray | None, *, uid: str | None = "u1") -> None:
        mix = self.mixer.mix(speech, sfx)
        self.mixes.append(mix)
        video = np.zeros((FRAMES, 8, 8, 3), np.uint8)
        state = "speaking" if uid else "idle"
        self.queue.append(MediaChunk(0, 0.0, video, mix, speech, sfx, uid, state))

    def bare(self, mix: np.ndarray) -> None:
        """A chunk with no stems (a source that only mixes)."""
        self.mixes.append(mix)
        video = np.zeros((FRAMES, 8, 8, 3), np.uint8)
        self.queue.append(MediaChunk(0, 0.0, video, mix, None, None, "u1", "speaking"))

    def next_media(self, start_s: float, *, over_idle: bool = False) -> MediaChunk | None:
        return self.queue.popleft() if self.queue else None

    def set_buffer(self, *, ahead_s: float, max_prebuffer_s: float) -> None:
        pass

    def stats(self) -> dict[str, float]:
        return {"buffer_ms": 0.0}


def _clock(src: _Source) -> MediaClock:
    return MediaClock(src, fps=FPS, width=8, height=8, sample_rate=RATE, buffer_s=1.0)


def _tone(hz: float, amp: float, k: int = 0) -> np.ndarray:
    """(PER_CHUNK,) a tone, continuous across chunks (``k``: the chunk's index)."""
    t = (np.arange(PER_CHUNK) + k * PER_CHUNK) / RATE
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _burst(amp: float, start: int, length: int) -> np.ndarray:
    """(PER_CHUNK,) an effect: noise from sample ``start`` for ``length`` samples."""
    out = np.zeros(PER_CHUNK, np.float32)
    rng = np.random.default_rng(0)
    out[start : start + length] = amp * rng.uniform(-1, 1, length).astype(np.float32)
    return out


def _reference(mixes: list[np.ndarray]) -> np.ndarray:
    """What the clock played before it kept stems: each mix through one upsampler."""
    up = Upsampler(RATE)
    return np.concatenate([up(m) for m in mixes])


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def test_split_mix_shares_out_the_mix_at_its_level() -> None:
    """Below the limiter the stems are the engine's stems times their gains; over it, the
    limiter's gain; where one stem is silent the other is the whole mix."""
    speech, sfx = _tone(220, 0.3), _burst(0.3, 1000, 2000)
    mixer = Mixer()
    mix = mixer.mix(speech, sfx)  # 0.3 + 0.21 < 0.95: no limiting
    sp, fx = split_mix(mix, speech, sfx)
    np.testing.assert_allclose(sp, mixer.g_sp * speech, atol=1e-6)
    np.testing.assert_allclose(fx, mixer.g_sfx * sfx, atol=1e-6)
    np.testing.assert_allclose(sp + fx, mix, atol=1e-6)
    loud = _burst(1.0, 1000, 2000)
    mix = Mixer().mix(_tone(220, 0.9), loud)  # the limiter and the clip act
    sp, fx = split_mix(mix, _tone(220, 0.9), loud)
    assert float(np.abs(sp + fx - mix).max()) < 1e-6
    assert not fx[:1000].any() and not fx[3000:].any(), "speech leaked into the effects stem"
    np.testing.assert_array_equal(sp[:1000], mix[:1000])
    assert float(np.abs(sp).max()) <= 0.9 * mixer.g_sp  # the limiter lowered it


def test_stems_sum_to_the_mix_over_a_say_with_an_effect_and_an_interrupt() -> None:
    """Four chunks of speech, a loud effect in the second (the limiter acts), an interrupt
    mid-slot in the third: mix, speech and effects read through one playout."""

    async def main() -> None:
        src = _Source()
        src.say(_tone(220, 0.6, 0), None)
        src.say(_tone(220, 0.6, 1), _burst(0.9, 1500, 1600))
        src.say(_tone(220, 0.6, 2), np.zeros(PER_CHUNK, np.float32))
        src.say(_tone(220, 0.6, 3), np.zeros(PER_CHUNK, np.float32))
        clock = _clock(src)
        playout = Playout(clock)
        await playout.wait(0.0)  # the tracks start
        cut_at = 2 * FRAMES * SPF + 3 * SPF + AUDIO_FRAME_SAMPLES  # inside chunk 2, slot 3
        got = {s: np.zeros(0, np.float32) for s in ("mix", "speech", "sfx")}
        pos = 0
        while pos < 4 * FRAMES * SPF:
            for s in ("sfx", "mix", "speech"):  # any track may be the one ahead
                got[s] = np.concatenate([got[s], playout.audio(pos, 960, source=s)])
            pos += 960
            if pos == cut_at:  # an interrupt: the engine drops the rest, the clock cuts
                src.queue.clear()
                clock.flush()
                assert clock.silence_from(playout.audio_sent() or 0)
        mix, speech, sfx = got["mix"], got["speech"], got["sfx"]
        assert _rms(speech + sfx - mix) < 1e-3
        assert float(np.abs(speech + sfx - mix).max()) < 1e-5, "not sample for sample"
        # the interrupt cut all three alike: a fade, then silence to the slot's end and on
        for stem in (mix, speech, sfx):
            assert not stem[cut_at + CUT_FADE :].any(), "sound after the cut"
        assert float(np.abs(mix[cut_at - 960 : cut_at]).max()) > 0.3  # speech before it
        # the effect is in the effects stem only, and it was loud enough to limit the mix
        effect = slice(FRAMES * SPF + 1500 * 3, FRAMES * SPF + 3100 * 3)
        assert _rms(sfx[effect]) > 0.2
        assert not sfx[: FRAMES * SPF].any(), "effects before the effect"
        assert float(np.abs(sfx[2 * FRAMES * SPF :]).max()) < 1e-6
        pure = slice(0, FRAMES * SPF)  # before the effect: the speech stem is the mix
        np.testing.assert_array_equal(speech[pure], mix[pure])
        # the mix itself is what the clock played before it kept stems
        ref = _reference(src.mixes)[: cut_at + CUT_FADE]
        np.testing.assert_array_equal(mix[: cut_at - 960], ref[: cut_at - 960])

    asyncio.run(main())


def test_a_session_without_stems_plays_the_mix_unchanged() -> None:
    """Chunks with no stems: the mix track is what it was sample for sample, all of it in
    the speech stem, the effects stem silent."""
    src = _Source()
    for k in range(3):
        src.bare(Mixer().mix(_tone(330, 0.5, k), _burst(0.5, 200, 400)))
    playout = Playout(_clock(src))
    mix = playout.audio(0, 3 * FRAMES * SPF)
    np.testing.assert_array_equal(mix, _reference(src.mixes))
    np.testing.assert_array_equal(playout.audio(0, 3 * FRAMES * SPF, source="speech"), mix)
    assert not playout.audio(0, 3 * FRAMES * SPF, source="sfx").any()
    # past the media: idle slots, silent in every stem
    assert not playout.audio(3 * FRAMES * SPF, SPF, source="speech").any()


def test_stem_tracks_are_timed_and_framed_like_the_mix_track() -> None:
    async def main() -> None:
        src = _Source()
        # below full scale: each track is clipped to s16 on its own
        src.say(_tone(220, 0.4), _burst(0.5, 0, 2000))
        playout = Playout(_clock(src))
        mix_t = ClockAudioTrack(playout)
        speech_t, sfx_t = StemAudioTrack(playout, "speech"), StemAudioTrack(playout, "sfx")
        assert speech_t.kind == sfx_t.kind == "audio"
        for n in range(3):
            mix, speech, sfx = [await t.recv() for t in (mix_t, speech_t, sfx_t)]
            assert mix.pts == speech.pts == sfx.pts == n * AUDIO_FRAME_SAMPLES
            assert mix.sample_rate == speech.sample_rate == sfx.sample_rate == AUDIO_RATE
            assert speech.samples == sfx.samples == AUDIO_FRAME_SAMPLES
            pcm = [f.to_ndarray()[0].astype(np.int32) for f in (mix, speech, sfx)]  # s16
            assert int(np.abs(pcm[1] + pcm[2] - pcm[0]).max()) <= 2  # two roundings
            assert np.abs(pcm[2]).max() > 1000  # the effect is there
        for t in (mix_t, speech_t, sfx_t):
            t.stop()

    asyncio.run(main())
    with pytest.raises(AssertionError, match="a stem is"):
        StemAudioTrack(Playout(_clock(_Source())), "mix")  # type: ignore[arg-type]  # on purpose
