"""The synthetic world's ground truth is self-consistent, measured from the rendered media."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from unison_stream.data.synth import speech
from unison_stream.data.synth.clip import Clip, make_clip, sample_spec
from unison_stream.data.synth.config import WORLD_PRESETS, WorldConfig
from unison_stream.data.synth.face import FaceRenderer, face_layout, portrait
from unison_stream.data.synth.gesture import CONTACT_AXIS
from unison_stream.data.synth.identity import (
    SKIN_TONES,
    Identity,
    colour_name,
    identity_key,
    num_combinations,
    sample_identity,
    sample_look_identity,
)
from unison_stream.data.synth.measure import (
    hand_extreme_frame,
    lagged_correlation,
    mouth_opening,
    onset_time,
    speech_envelope,
)
from unison_stream.data.synth.states import StateDraw, kind_of, sample_state
from unison_stream.data.synth.text import (
    ACTIVITIES,
    Script,
    caption,
    sample_script,
    sample_sentence,
)
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


# ---- quiet and listening clips, rests, looks (the states world) -------------------------------
STATES = WORLD_PRESETS["states"]


def _state_clip(
    kind: str, *, rest: tuple[float, float] = (0.0, 0.0), quiet_s: float = 0.0, seed: int = 3
) -> Clip:
    """A clip of ``kind`` in the states world; speech clips hold one clap mid-sentence."""
    rng = np.random.default_rng(seed)
    script = Script(words=(), events=())
    if kind == "speech":
        words = sample_sentence(rng, 5, 8)
        script = Script(words=words, events=((len(words) // 2, "clap"),))
    spec = sample_spec(
        rng, STATES, clip_id=f"{kind}-{seed}", identity=sample_identity(rng), script=script
    )
    state = StateDraw(kind=kind, rest=rest, quiet_s=quiet_s, activity=ACTIVITIES[kind][0])
    return make_clip(replace(spec, state=state), STATES)


@needs_espeak
@pytest.mark.parametrize("kind", ["quiet", "listening"])
def test_quiet_and_listening_clips_are_silent_with_the_mouth_closed(kind: str) -> None:
    clip = _state_clip(kind, quiet_s=12.0)
    duration = len(clip.mix) / CFG.sample_rate
    assert len(clip.frames) == math.ceil(12.0 * CFG.fps)
    assert [(p.label, p.start, p.end) for p in clip.phonemes] == [("_", 0.0, duration)]
    assert clip.transcript == "" and clip.words == [] and clip.events == []
    assert not clip.speech.any(), "no speech in a quiet clip"
    np.testing.assert_array_equal(clip.sfx, clip.ambience)  # ambience only, no effects
    assert not clip.mouth.any() or float(np.abs(clip.mouth[:, 0]).max()) == 0.0
    # from pixels: no mouth interior in any frame (a speaking clip shows tens of pixels)
    assert float(mouth_opening(clip.frames).max()) < 1.0
    assert clip.caption.split(";")[0].endswith(ACTIVITIES[kind][0])
    assert "talking" not in clip.caption
    assert clip.annotations()["voice"] is None
    gaze = np.array([s.gaze for s in clip.states])  # (F, 2)
    assert len(np.unique(gaze, axis=0)) > 3, "the eyes move between spots"
    assert np.abs(gaze).max() <= 1.0


@needs_espeak
def test_listening_nods_and_smiles_are_drawn_where_annotated() -> None:
    clip = _state_clip("listening", quiet_s=12.0)
    assert clip.idle is not None and clip.idle.nods and clip.idle.smiles
    head_dy = np.array([s.head_dy for s in clip.states])
    for t in clip.idle.nods:  # the head is lowest (largest dy) near each nod's time
        f = round(t * CFG.fps)
        window = head_dy[max(0, f - 12) : f + 13]
        assert head_dy[f] >= window.max() - 0.5 * STATES.nod_px, t
    layout = face_layout(clip.spec.identity, width=CFG.width, height=CFG.height)
    renderer = FaceRenderer(
        clip.spec.identity, width=CFG.width, height=CFG.height, supersample=4, props=[]
    )
    for start, end in clip.idle.smiles:
        f = round((start + end) / 2 * CFG.fps)
        assert clip.states[f].smile > 0.5
        plain = renderer.render(replace(clip.states[f], smile=0.0))
        changed = np.argwhere(np.abs(plain.astype(int) - clip.frames[f].astype(int)).sum(-1) > 0)
        assert len(changed), "a smile changes the picture"
        x0, y0, x1, y1 = layout.mouth
        dy = abs(clip.states[f].head_dy) + 1
        dx = abs(clip.states[f].head_dx) + 1
        assert changed[:, 0].min() >= y0 - dy and changed[:, 0].max() <= y1 + dy  # rows
        assert changed[:, 1].min() >= x0 - dx and changed[:, 1].max() <= x1 + dx  # columns
    quiet = _state_clip("quiet", quiet_s=12.0)
    assert quiet.idle is not None and quiet.idle.nods == [] and quiet.idle.smiles == []
    assert all(s.smile == 0.0 for s in quiet.states)


@needs_espeak
def test_rests_delay_the_words_and_extend_the_end_by_their_length() -> None:
    base = _state_clip("speech")
    before, after = 1.2, 2.0
    rested = _state_clip("speech", rest=(before, after))
    sr = CFG.sample_rate
    voiced = [(p.label, p.start, p.end) for p in base.phonemes if p.label != "_"]
    shifted = [(p.label, p.start, p.end) for p in rested.phonemes if p.label != "_"]
    assert [v[0] for v in voiced] == [v[0] for v in shifted]
    for (_, s0, e0), (_, s1, e1) in zip(voiced, shifted, strict=True):
        assert abs(s1 - s0 - before) <= 1.5 / sr and abs(e1 - e0 - before) <= 1.5 / sr
    assert [e.contact_frame for e in rested.events] == [
        e.contact_frame + round(before * CFG.fps) for e in base.events
    ]
    grown = (len(rested.frames) - len(base.frames)) / CFG.fps
    assert abs(grown - (before + after)) <= 1 / CFG.fps
    # the rest is idle: no sound but ambience and a closed mouth until the words
    first = min(shifted[0][1], rested.events[0].audio_onset)
    assert first >= CFG.lead_in_s[0] + before
    assert not rested.speech[: int(first * sr)].any()
    assert float(mouth_opening(rested.frames[: int(first * CFG.fps)]).max()) < 1.0
    last = max(shifted[-1][2], rested.events[-1].visual_contact + CFG.gesture_retract_s)
    assert len(rested.mix) / sr - last >= after + min(CFG.tail_s[0], 0.1)


def test_rests_and_quiet_lengths_follow_the_config() -> None:
    rng = np.random.default_rng(0)
    speech = [sample_state(rng, STATES, "speech") for _ in range(300)]
    assert STATES.rest_s is not None
    lo, hi = STATES.rest_s
    for s in speech:
        assert s.kind == "speech" and s.activity == "talking" and s.quiet_s == 0.0
        assert any(r > 0 for r in s.rest), "every speech clip rests on at least one side"
        assert all(r == 0.0 or lo <= r <= hi for r in s.rest)
    sides = {(s.rest[0] > 0, s.rest[1] > 0) for s in speech}
    assert sides == {(True, False), (False, True), (True, True)}
    quiet = [sample_state(rng, STATES, "quiet").quiet_s for _ in range(2000)]
    assert STATES.quiet_s[0] <= min(quiet) and max(quiet) <= STATES.quiet_s[1]
    assert abs(float(np.mean(quiet)) - STATES.quiet_mean_s) < 0.5
    classic = sample_state(rng, replace(STATES, rest_s=None), "speech")
    assert classic.rest == (0.0, 0.0)


def test_kind_shares_hold_over_any_run_of_clips() -> None:
    for n in (50, 300):
        kinds = [kind_of(i, STATES) for i in range(n)]
        for name, share in STATES.kinds:
            assert abs(kinds.count(name) - share * n) <= 2, (name, n)
    assert {kind_of(i, CFG) for i in range(100)} == {"speech"}


@needs_espeak
def test_state_clips_are_deterministic() -> None:
    a, b = (
        _state_clip("listening", quiet_s=6.0, seed=5),
        _state_clip("listening", quiet_s=6.0, seed=5),
    )
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.mix, b.mix)
    assert a.annotations() == b.annotations() and a.state_annotations() == b.state_annotations()


def _look(seed: int, **odds: float) -> Identity:
    kw = {"unnatural_skin": 0.3, "glasses": 0.5, "headwear": 0.5, "earrings": 0.5} | odds
    return sample_look_identity(np.random.default_rng(seed), **kw)


def test_look_identities_round_trip_through_the_manifest_and_key() -> None:
    for seed in range(30):
        ident = _look(seed)
        row = json.loads(json.dumps(ident.to_json()))  # as a manifest row stores it
        back = Identity.from_json(row)  # proportions come back rounded to 4 places
        assert back.look == ident.look and identity_key(back) == identity_key(ident)
        assert json.loads(json.dumps(back.to_json())) == row
        key = identity_key(ident)
        assert key.startswith("L-") and ident.look is not None
        r, g, b = ident.look.skin
        nudged = replace(ident, look=replace(ident.look, skin=(r, g, b ^ 1)))
        assert identity_key(nudged) != key, "every colour is part of the key"
        no_glasses = replace(ident, look=replace(ident.look, glasses=""))
        assert ident.look.glasses == "" or identity_key(no_glasses) != key
    palette = sample_identity(np.random.default_rng(0))
    assert "look" not in palette.to_json()  # classic rows keep their bytes
    back = Identity.from_json(json.loads(json.dumps(palette.to_json())))
    assert back.look is None and identity_key(back) == identity_key(palette)


def test_looks_span_unnatural_colours_and_keep_the_measures_working() -> None:
    looks = [_look(seed) for seed in range(200)]
    skins = [lk.look.skin for lk in looks if lk.look is not None]
    far = [s for s in skins if min(math.dist(s, c) for _, c in SKIN_TONES) > 80]
    # 30 % are drawn as any colour; some of those land near a natural tone
    assert 0.1 * len(skins) <= len(far) <= 0.4 * len(skins), "unnatural skins are common"
    assert {colour_name(s) for s in far} & {"green", "lime", "purple", "blue", "teal", "cyan"}
    natural = [lk.skin for lk, s in zip(looks, skins, strict=True) if s not in far]
    counts = np.bincount(natural, minlength=len(SKIN_TONES))  # nearest palette tone
    assert (counts[1:-1] >= 0.5 * counts[1:-1].mean()).all(), f"light to deep evenly: {counts}"
    for ident in looks[:40]:
        frame = portrait(ident)
        assert frame.shape == (CFG.height, CFG.width, 3) and frame.dtype == np.uint8
        assert float(mouth_opening(frame[None])[0]) < 1.0, "no colour reads as mouth interior"
        assert ident.look is not None
        layout = face_layout(ident, width=CFG.width, height=CFG.height)
        x0, y0, x1, y1 = (round(v) for v in layout.cheeks[0])
        cheek = frame[y0:y1, x0:x1].reshape(-1, 3).astype(float)
        assert np.abs(np.median(cheek, 0) - ident.look.skin).max() <= 2, "the skin is the look's"
        names = ident.describe()
        cap = caption(names, "a quiet room", [])
        assert f"{names['skin']} skin" in cap
        for worn in ident.look.accessories():
            assert worn in cap


def test_accessories_stay_clear_of_eyes_and_mouth() -> None:
    shapes = set()
    for seed in range(24):  # every face shape, both glasses and both headwear styles
        ident = _look(seed, glasses=1.0, headwear=1.0, earrings=1.0)
        assert ident.look is not None
        shapes.add((ident.face_shape, ident.look.glasses, ident.look.headwear))
        bare = replace(ident, look=replace(ident.look, glasses="", headwear="", earrings=False))
        worn, plain = portrait(ident).astype(int), portrait(bare).astype(int)
        changed = np.abs(worn - plain).sum(-1) > 0  # (H, W)
        assert changed.sum() > 100, "the accessories are drawn"
        layout = face_layout(ident, width=CFG.width, height=CFG.height)
        for x0, y0, x1, y1 in (*layout.eyes, layout.mouth, *layout.cheeks):
            inner = changed[math.ceil(y0) : math.floor(y1), math.ceil(x0) : math.floor(x1)]
            assert not inner.any(), f"an accessory covers a measured face part ({seed})"
    assert {s[0] for s in shapes} == set(range(6))
    assert {s[1] for s in shapes} == {"round", "square"} and {s[2] for s in shapes} == {
        "hat",
        "headband",
    }
