"""Eval metric functions on ground truth: each gives its known answer on a tiny world, and the
wrong answer on media built to be wrong (shifted audio, silence, still frames, another person).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tests.eval_support import tiny_world
from unison_stream.codecs.sentence_id import SentenceIdentifier
from unison_stream.data.loader import ManifestDataset, Sample
from unison_stream.data.synth import speech as espeak
from unison_stream.eval.evaluate import ground_truth_events, ratio
from unison_stream.eval.identity import drift, nearest_reference, reference_distance
from unison_stream.eval.intelligibility import sentence_accuracy
from unison_stream.eval.lipsync import MAX_LAG, lip_sync, summarise_lip_sync
from unison_stream.eval.sfx import (
    EventResult,
    audio_onset,
    false_alarm_rate,
    summarise_events,
    visual_contact,
)

pytestmark = pytest.mark.skipif(
    not espeak.available(), reason="libespeak-ng not installed (Debian package libespeak-ng1)"
)
SR, FPS = 16000, 25.0
SPF = 640


@pytest.fixture(scope="module")
def clips() -> Iterator[list[Sample]]:
    ds = ManifestDataset(tiny_world())
    yield [ds[i] for i in range(len(ds))]


def test_lip_sync_of_ground_truth_is_near_zero_and_a_3_frame_shift_reads_120_ms(
    clips: list[Sample],
) -> None:
    for s in clips:
        sp = s.stems["speech"]
        gt = lip_sync(s.frames, sp, SR, FPS)
        # the world's own offset is −17 ms median, −54 ms worst over the 40 held-out clips
        assert gt.lag is not None and abs(gt.offset_ms) <= 60.0, f"{s.id}: {gt}"
        assert gt.corr > 0.35, f"{s.id}: ground-truth mouth/speech correlation {gt.corr:.2f}"
        late = np.concatenate(
            [np.zeros(3 * SPF, np.float32), sp[: -3 * SPF]]
        )  # sound 3 frames late
        shifted = lip_sync(s.frames, late, SR, FPS)
        assert shifted.lag == gt.lag + 3
        assert shifted.offset_ms - gt.offset_ms == pytest.approx(120.0, abs=10.0)
    summary = summarise_lip_sync([lip_sync(s.frames, s.stems["speech"], SR, FPS) for s in clips])
    assert summary["offset_ms"] is not None and summary["offset_ms"] <= 40.0


def test_lip_sync_without_a_mouth_counts_as_the_worst_offset(clips: list[Sample]) -> None:
    s = clips[0]
    still = np.broadcast_to(s.frames[0] * 0, s.frames.shape)  # black frames: no mouth at all
    r = lip_sync(still, s.stems["speech"], SR, FPS)
    assert r.lag is None and r.corr == 0.0
    assert r.offset_ms == pytest.approx(1000 * MAX_LAG / FPS)
    assert summarise_lip_sync([r])["unmeasured"] == 1


def test_sfx_recall_is_one_on_ground_truth_and_zero_on_silence_and_speech(
    clips: list[Sample],
) -> None:
    truth, silent, spoken = [], [], []
    for s in clips:
        for name, t in ground_truth_events(s, FPS):
            truth.append(EventResult(name, t, audio_onset(s.audio, SR, t), np.nan))
            silent.append(EventResult(name, t, audio_onset(0 * s.audio, SR, t), np.nan))
            spoken.append(EventResult(name, t, audio_onset(s.stems["speech"], SR, t), np.nan))
    assert len(truth) >= 4
    assert summarise_events(truth)["recall"] == 1.0
    assert summarise_events(silent)["recall"] == 0.0
    assert summarise_events(spoken)["recall"] == 0.0  # events sit in speech pauses
    for s in clips:  # onsets found where the effects start (2 ms attack)
        for e in s.row["events"]:
            assert abs(audio_onset(s.audio, SR, e["visual_contact"]) - e["audio_onset"]) < 0.005


def test_visual_contact_from_pixels_matches_the_annotation(clips: list[Sample]) -> None:
    results, late = [], []
    for s in clips:
        planned = [e["contact_frame"] for e in s.row["events"]]
        for e in s.row["events"]:
            onset = audio_onset(s.audio, SR, e["visual_contact"])
            seen = visual_contact(s.frames, e["contact_frame"], e["name"], FPS, gestures=planned)
            results.append(EventResult(e["name"], e["visual_contact"], onset, seen))
            # planned 3 frames late: the hand is still found where it is, not where planned
            off = visual_contact(
                s.frames, e["contact_frame"] + 3, e["name"], FPS, gestures=[p + 3 for p in planned]
            )
            late.append(abs(off - e["visual_contact"]) <= 1.0 / FPS + 1e-9)
    assert np.mean(late) >= 0.8
    summary = summarise_events(results)
    assert summary["aligned"] == len(results)
    assert summary["align_ms"] is not None and summary["align_ms"] <= 20.0
    assert np.mean([r.align_ms <= 41.0 for r in results]) >= 0.8
    s = clips[0]
    e = s.row["events"][0]
    still = np.broadcast_to(s.frames[0], s.frames.shape)
    assert np.isnan(visual_contact(still, e["contact_frame"], e["name"], FPS)), (
        "no hand, no contact"
    )


def test_false_alarms_are_rare_in_ground_truth_effects_and_zero_in_silence(
    clips: list[Sample],
) -> None:
    rates = []
    for s in clips:
        contacts = [t for _, t in ground_truth_events(s, FPS)]
        r = false_alarm_rate(s.stems["sfx"], SR, contacts)
        if r is not None:
            rates.append(r)
        assert false_alarm_rate(0 * s.audio, SR, contacts) in (None, 0.0)
    assert rates and np.mean(rates) <= 0.25


def test_identity_drift_is_zero_for_the_same_frames_and_large_for_another_person(
    clips: list[Sample],
) -> None:
    a, b = clips[0], clips[1]
    ref = a.frames[0]
    same = np.broadcast_to(ref, (50, *ref.shape))
    d = drift(same, ref, FPS, window_s=0.4)
    assert d["first"] == 0.0 and d["last"] == 0.0 and d["ratio"] == 1.0
    own = float(reference_distance(a.frames, ref).mean())  # mouth, blinks, hands, sway
    other = float(reference_distance(b.frames, ref).mean())
    assert other > 4 * own, (own, other)
    # a stream that turns into the other person halfway drifts by a large ratio
    turned = np.concatenate([a.frames, b.frames])
    assert drift(turned, ref, FPS, window_s=1.0)["ratio"] > 4
    refs = np.stack([c.frames[0] for c in clips])
    for k, c in enumerate(clips):
        assert nearest_reference(c.frames[-25:], refs) == k


def test_sentence_identification_recognises_ground_truth_speech(clips: list[Sample]) -> None:
    sentences = [s.row["sentence"] for s in clips]
    ident = SentenceIdentifier(sentences)
    speech = [s.stems["speech"] for s in clips[:3]]
    assert sentence_accuracy(ident, speech, sentences[:3]) == 1.0
    assert ratio(0.5, 1.0) == 0.5 and ratio(0.5, 0.0) is None and ratio(None, 1.0) is None
