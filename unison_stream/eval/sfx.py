"""Action–sound metrics: effect recall in the mix and audio-onset ↔ visual-contact alignment
(the analogue of the paper's DeSync; ``docs/eval.md``, "Sync, effects, identity and
intelligibility"; how the detector was checked: ``docs/eval-measures.md``).

**Recall.** A requested event counts as *audible* when an onset is found in the mix within
``± tolerance_s`` of its planned contact (:func:`~unison_stream.data.synth.measure.onset_time`
with a 6 dB jump over the previous 20 ms), the sound reaches ``floor_dbfs`` within 50 ms and
that peak stands ``PROMINENCE_DB`` over the RMS of the 100 ms before the onset (so fluctuating
noise is not taken for an effect). The same test on the SFX stem at control times where nothing
was requested gives a false-alarm rate, reported beside the recall.
The check is class-agnostic: every requested effect sits in a speech pause (planner and world
alike put the contact a quarter into a ≥ 0.35 s pause), so an onset there is the effect and not
speech; measured on the held-out split, the rule finds 52/52 effects in the ground-truth mix
and 0/52 in the speech, ambience and speech + ambience stems at the same times. A wrong-class
sound therefore still counts (no classifier is trained for the five classes; noted in
``docs/eval.md``).

**Alignment.** The visual contact is measured from pixels: the gesturing hand is the largest
blob (right half of the frame) that differs from a hand-free background more than that
background varies by itself (mouth, blinks, head sway), the background being the per-pixel
median of the frames nearest the gesture but outside every planned gesture's span; the
contact frame is where that blob is extreme along the class's contact axis
(:func:`~unison_stream.data.synth.measure.hand_extreme_frame`). On the held-out ground truth
this finds the annotated frame for 48 of 52 events, within one frame for 49 (and the same
with the planned time 3 frames off).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from unison_stream.data.synth.config import WorldConfig
from unison_stream.data.synth.gesture import CONTACT_AXIS
from unison_stream.data.synth.measure import hand_extreme_frame, onset_time

__all__ = [
    "EventResult",
    "audio_onset",
    "false_alarm_rate",
    "summarise_by_class",
    "summarise_events",
    "visual_contact",
]

_WORLD = WorldConfig()
TOLERANCE_S = 0.12  # 3 frames either way of the planned contact; speech resumes ≥ 0.15 s after
FLOOR_DBFS = -30.0  # effects are made at −12…−3 dBFS peak; ambience stays at −42…−28 dB RMS
ONSET_JUMP = 2.0  # 6 dB over the previous 20 ms (generated attacks are softer than 2 ms)
PROMINENCE_DB = 18.0  # peak (50 ms after) over RMS (100 ms before): ground truth ≥ 19 dB
CONTROL_OFFSET_S = 0.6  # false-alarm probes this far from a contact (contacts are ≥ 0.9 s apart)
SEARCH_FRAMES = 10  # visual contact searched within ± this many frames of the planned one
BACKGROUND_FRAMES = 24  # hand-free frames nearest the contact that make the background
NOISE_MARGIN = 24  # summed-RGB difference above the background's own variation = hand pixel
X_MIN = 0.5  # the gesturing (right-of-image) hand; the mirrored clap hand stays left of this
MIN_BLOB = 40 / (128 * 128)  # smallest hand blob, as a fraction of the frame (a fist ≈ 240 px)
BLOB_SHARE = 0.25  # frames whose blob is smaller than this share of the largest show no hand


@dataclass(frozen=True)
class EventResult:
    """One requested event: planned contact, measured onset / contact (NaN: not found)."""

    name: str
    planned_s: float
    audio_onset_s: float
    visual_contact_s: float

    @property
    def audible(self) -> bool:
        return not np.isnan(self.audio_onset_s)

    @property
    def align_ms(self) -> float:
        """|audio onset − visual contact| in ms, NaN when either is missing."""
        return 1000.0 * abs(self.audio_onset_s - self.visual_contact_s)


def audio_onset(
    mix: np.ndarray,
    sample_rate: int,
    planned_s: float,
    *,
    tolerance_s: float = TOLERANCE_S,
    floor_dbfs: float = FLOOR_DBFS,
) -> float:
    """Onset (s) of an audible effect within ``± tolerance_s`` of ``planned_s``, else NaN.

    Onsets that fail the loudness or prominence test (a café clink, a breath) are skipped and
    the search goes on after them.
    """
    lo, hi = planned_s - tolerance_s, planned_s + tolerance_s
    while hi - lo > 0.01:
        t = onset_time(mix, sample_rate, (lo + hi) / 2, (hi - lo) / 2, jump=ONSET_JUMP)
        if np.isnan(t):
            return float("nan")
        if _audible(mix, sample_rate, t, floor_dbfs):
            return t
        lo = t + 0.002  # one detector block on
    return float("nan")


def _audible(x: np.ndarray, sample_rate: int, t: float, floor_dbfs: float) -> bool:
    """Peak of the 50 ms from ``t`` is over the floor and ``PROMINENCE_DB`` over the RMS of the
    100 ms before."""
    i = int(t * sample_rate)
    peak = float(np.abs(x[i : i + int(0.05 * sample_rate)]).max(initial=0.0))
    before = x[max(0, i - int(0.1 * sample_rate)) : i]
    rms = float(np.sqrt(np.mean(before**2))) if before.size else 0.0
    return peak >= 10 ** (floor_dbfs / 20) and peak >= rms * 10 ** (PROMINENCE_DB / 20)


def false_alarm_rate(sfx: np.ndarray, sample_rate: int, contacts: list[float]) -> float | None:
    """Fraction of control probes (``CONTROL_OFFSET_S`` before and after each contact, inside
    the clip) where :func:`audio_onset` finds an effect nobody requested in the **SFX stem**
    (the mix would hold speech onsets there); None without probes. Recall means little when
    this is high: the detector then fires on noise. Ground truth: 2.6 % (ambience clinks)."""
    end = len(sfx) / sample_rate
    probes = [
        t + d
        for t in contacts
        for d in (-CONTROL_OFFSET_S, CONTROL_OFFSET_S)
        if TOLERANCE_S <= t + d <= end - TOLERANCE_S
    ]
    if not probes:
        return None
    return float(np.mean([not np.isnan(audio_onset(sfx, sample_rate, t)) for t in probes]))


def visual_contact(
    frames: np.ndarray,
    planned_frame: int,
    name: str,
    fps: float,
    *,
    gestures: Sequence[int] = (),
) -> float:
    """Contact time (s) of the ``name`` gesture measured from ``frames (F, H, W, 3)`` near
    ``planned_frame``, or NaN when no hand shows (see the module docstring). ``gestures``: the
    planned contact frames of every gesture of the clip, whose spans are kept out of the
    hand-free background."""
    f = len(frames)
    lo, hi = max(0, planned_frame - SEARCH_FRAMES), min(f, planned_frame + SEARCH_FRAMES + 1)
    if hi - lo < 3:
        return float("nan")
    before = round(_WORLD.gesture_approach_s * fps) + 1
    after = round(_WORLD.gesture_retract_s * fps) + 1
    spans = [(g - before, g + after) for g in {planned_frame, *gestures}]
    idle = [k for k in range(f) if not any(a <= k <= b for a, b in spans)]
    idle = sorted(idle, key=lambda k: abs(k - planned_frame))[:BACKGROUND_FRAMES]
    if len(idle) < 3:  # no hand-free frame: the median still rejects a hand seen < half the time
        idle = list(range(f))
    background = frames[sorted(idle)].astype(np.int16)
    bare = np.median(background, axis=0).astype(np.int16)  # (H, W, 3)
    noise = np.abs(background - bare).sum(-1).max(0)  # (H, W) the scene's own variation
    win = frames[lo:hi]
    mask = np.abs(win.astype(np.int16) - bare).sum(-1) > noise + NOISE_MARGIN  # (F', H, W)
    mask[:, :, : int(X_MIN * win.shape[2])] = False
    sizes = np.zeros(len(win))
    for k in range(len(win)):  # keep each frame's largest blob: the hand, not brows or lips
        labels, n = ndimage.label(mask[k], np.ones((3, 3), bool))
        if n == 0:
            continue
        blob = ndimage.sum(mask[k], labels, range(1, n + 1))
        j = int(np.argmax(blob))
        sizes[k], mask[k] = blob[j], labels == j + 1
    min_px = MIN_BLOB * win.shape[1] * win.shape[2]
    mask[sizes < max(min_px, BLOB_SHARE * sizes.max(initial=0.0))] = (
        False  # frames without the hand
    )
    if not mask.any():
        return float("nan")
    without = win.copy()
    without[mask] = np.broadcast_to(bare.astype(np.uint8), win.shape)[mask]
    k = hand_extreme_frame(win, without, CONTACT_AXIS[name], X_MIN)
    return float("nan") if k < 0 else (lo + k) / fps


def summarise_events(events: list[EventResult]) -> dict[str, float | int | None]:
    """Recall, median |onset − contact| (ms) over events where both were found, counts."""
    aligned = [e.align_ms for e in events if not np.isnan(e.align_ms)]
    return {
        "events": len(events),
        "recall": float(np.mean([e.audible for e in events])) if events else None,
        "align_ms": float(np.median(aligned)) if aligned else None,
        "aligned": len(aligned),
    }


def summarise_by_class(events: list[EventResult]) -> dict[str, dict[str, float | int | None]]:
    """:func:`summarise_events` per event class (the action–sound DeSync analogue per class),
    plus the median signed onset − contact (ms; > 0: the sound comes late)."""
    out: dict[str, dict[str, float | int | None]] = {}
    for name in sorted({e.name for e in events}):
        mine = [e for e in events if e.name == name]
        signed = [
            1000.0 * (e.audio_onset_s - e.visual_contact_s)
            for e in mine
            if not np.isnan(e.align_ms)
        ]
        out[name] = {
            **summarise_events(mine),
            "align_signed_ms": float(np.median(signed)) if signed else None,
        }
    return out
