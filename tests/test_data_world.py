"""The synthetic world's ground truth is self-consistent, measured from the rendered media."""

from __future__ import annotations

import numpy as np
import pytest

from unison_stream.data.synth import speech
from unison_stream.data.synth.clip import Clip, make_clip, sample_spec
from unison_stream.data.synth.config import WorldConfig
from unison_stream.data.synth.face import FaceRenderer
from unison_stream.data.synth.gesture import CONTACT_AXIS
from unison_stream.data.synth.identity import identity_key, num_combinations, sample_identity
from unison_stream.data.synth.measure import (
    hand_extreme_frame,
    lagged_correlation,
    mouth_opening,
    onset_time,
    speech_envelope,
)
from unison_stream.data.synth.text import Script, sample_script, sample_sentence
from unison_stream.vocab import EVENT_CLASSES, UNK_ID, phoneme_id

needs_espeak = pytest.mark.skipif(
    not speech.available(), reason="libespeak-ng not installed (Debian package libespeak-ng1)"
)

CFG = WorldConfig()
# Mouth area vs speech RMS envelope, per clip at lag 0. Measured 0.51–0.86 (mean ≈ 0.72) on
# espeak voices; with the pairing broken (envelope shifted by 8 frames = 0.32 s) it falls to
# ≈ 0.1–0.4. The envelope also rises on consonants the mouth closes for (p, m, s), so 1.0 is
# out of reach; 0.5 on the mean and 0.35 per clip sit well above the unsynced level and below
# every measured clip, so a broken viseme map or a timing shift of 2+ frames fails the test.
MIN_MEAN_CORR = 0.5
MIN_CLIP_CORR = 0.35


def _clips() -> list[Clip]:
    rng = np.random.default_rng(7)
    out = []
    # five clips, one per event class, plus one with none: every gesture is checked
    for k, event in enumerate([*EVENT_CLASSES, None]):
        words = sample_sentence(rng, 5, 9)
        events = ((len(words) // 2, event),) if event else ()
        script = Script(words=words, events=events)
        spec = sample_spec(rng, CFG, clip_id=f"t{k}", identity=sample_identity(rng), script=script)
        out.append(make_clip(spec, CFG))
    return out


@pytest.fixture(scope="module")
def clips() -> list[Clip]:
    if not speech.available():
        pytest.skip("libespeak-ng not installed (Debian package libespeak-ng1)")
    return _clips()


def test_identity_space_is_large_and_sampled_widely() -> None:
    assert num_combinations() >= 1000
    rng = np.random.default_rng(0)
    keys = {identity_key(sample_identity(rng)) for _ in range(1500)}
    assert len(keys) > 1400, "identities from different seeds must almost never coincide"


def test_transcript_tags_and_segments() -> None:
    s = Script(words=("Nice", "to", "meet", "you."), events=((4, "clap"), (0, "whoosh")))
    s = Script(words=s.words, events=tuple(sorted(s.events)))
    assert s.transcript() == "<whoosh> Nice to meet you. <clap>"
    assert s.segments() == [("", "whoosh"), ("Nice to meet you.", "clap")]
    rng = np.random.default_rng(1)
    sc = sample_script(rng, sample_sentence(rng, 4, 11), max_events=2, event_prob=1.0)
    assert 1 <= len(sc.events) <= 2 and all(e in EVENT_CLASSES for _, e in sc.events)


@needs_espeak
def test_speech_has_phoneme_and_word_times() -> None:
    sp = speech.synthesize("Nice to meet you", voice="en-us+f3", sample_rate=16000)
    assert sp.sample_rate == 16000 and sp.audio.dtype == np.float32
    assert [w.label for w in sp.words] == ["Nice", "to", "meet", "you"]
    labels = [p.label for p in sp.phonemes if p.label != "_"]
    assert labels[:3] == ["n", "aI", "s"]
    assert all(phoneme_id(p) != UNK_ID for p in labels), "espeak mnemonics must be in vocab"
    starts = [p.start for p in sp.phonemes]
    assert starts == sorted(starts) and sp.phonemes[-1].end <= sp.duration + 1e-6


@needs_espeak
def test_same_spec_gives_identical_clip() -> None:
    rng = np.random.default_rng(3)
    words = sample_sentence(rng, 4, 6)
    spec = sample_spec(
        rng, CFG, clip_id="d", identity=sample_identity(rng), script=Script(words, ((1, "bell"),))
    )
    a, b = make_clip(spec, CFG), make_clip(spec, CFG)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.mix, b.mix)
    assert a.annotations() == b.annotations()


def test_stems_shapes_and_tracks(clips: list[Clip]) -> None:
    spf = CFG.samples_per_frame()
    for c in clips:
        f = len(c.frames)
        assert c.frames.shape == (f, CFG.height, CFG.width, 3) and c.frames.dtype == np.uint8
        for stem in (c.speech, c.sfx, c.ambience, c.mix):
            assert stem.shape == (f * spf,) and stem.dtype == np.float32
        np.testing.assert_allclose(c.mix, c.speech + c.sfx, atol=1e-6)
        assert np.abs(c.mix).max() <= CFG.mix_headroom + 1e-6
        # the phoneme track tiles [0, duration] without gaps or overlaps
        assert c.phonemes[0].start == 0.0
        assert abs(c.phonemes[-1].end - f / CFG.fps) < 1e-6
        for p, q in zip(c.phonemes, c.phonemes[1:], strict=False):
            assert abs(p.end - q.start) < 1e-6 and p.end > p.start
        assert [w.label.strip(",.!?") for w in c.words] == [
            w.strip(",.!?") for w in c.spec.script.words
        ]


def test_mouth_from_pixels_follows_speech_envelope(clips: list[Clip]) -> None:
    corrs = []
    for c in clips:
        m = mouth_opening(c.frames)
        env = speech_envelope(c.speech, CFG.sample_rate, CFG.fps)
        r0 = lagged_correlation(m, env, 0)
        best = max(range(-3, 4), key=lambda lag: lagged_correlation(m, env, lag))
        assert r0 > MIN_CLIP_CORR, f"{c.spec.clip_id}: mouth/envelope correlation {r0:.2f}"
        assert abs(best) <= 1, f"{c.spec.clip_id}: best lag {best} frames, expected |lag| ≤ 1"
        assert r0 > lagged_correlation(m, env, 8) + 0.15, "a 0.32 s shift must lose the sync"
        corrs.append(r0)
    assert np.mean(corrs) > MIN_MEAN_CORR, f"mean correlation {np.mean(corrs):.2f}"


def test_event_audio_onset_within_one_frame_of_visual_contact(clips: list[Clip]) -> None:
    frame = 1.0 / CFG.fps
    seen = set()
    for c in clips:
        effects = c.sfx - c.ambience
        renderer = FaceRenderer(
            c.spec.identity,
            width=CFG.width,
            height=CFG.height,
            supersample=CFG.supersample,
            props=c.props,
        )
        for ev in c.events:
            seen.add(ev.name)
            onset = onset_time(effects, CFG.sample_rate, ev.audio_onset, window=0.3)
            assert abs(onset - ev.audio_onset) < 0.005, f"{ev.name}: onset {onset} s"
            # visual contact measured from pixels: extreme of the hand along the contact axis
            lo, hi = max(0, ev.contact_frame - 10), min(len(c.frames), ev.contact_frame + 11)
            bare = np.stack([renderer.render(s, draw_hands=False) for s in c.states[lo:hi]])
            seen_f = lo + hand_extreme_frame(c.frames[lo:hi], bare, CONTACT_AXIS[ev.name], 0.5)
            assert seen_f == ev.contact_frame, f"{ev.name}: contact seen in frame {seen_f}"
            assert abs(onset - seen_f * frame) <= frame, f"{ev.name}: A/V contact apart"
    assert seen == set(EVENT_CLASSES)
