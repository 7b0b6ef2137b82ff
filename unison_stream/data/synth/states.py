"""Clip kinds beyond speech (quiet, listening), rests around the words, and idle motion.

A viewer of a streaming avatar mostly sees it idle or listening, so the world also holds:

- **quiet** clips: no speech, 5–30 s, the person waits (breathing, blinks, slow head sway,
  gaze shifts); the phoneme track is one ``_`` span, the transcript empty; no effects.
- **listening** clips: the same plus nods and brief closed-mouth smiles.
- **rests** in speech clips: 0.4–3 s of silence before and/or after the words (on top of the
  usual lead-in and tail), with the same idle motion, so idle → speech → idle is seen.

Everything is drawn from the clip's own seed (:class:`StateDraw` in the spec, the motion from
``default_rng([spec.seed, 2])``), so a world stays deterministic; the knobs are in
:class:`~.config.WorldConfig` and the classic world draws none of this.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from unison_stream.data.synth.config import WorldConfig
from unison_stream.data.synth.text import sample_activity

__all__ = ["KINDS", "IdleMotion", "StateDraw", "idle_motion", "kind_of", "sample_state"]

KINDS: tuple[str, ...] = ("speech", "quiet", "listening")
GOLDEN = (5**0.5 - 1) / 2  # 0.618…: the most even spread of index · GOLDEN mod 1
NOD_S = 0.22  # width (s) of one nod's dip
NOD_GAIN = (0.8, 1.4)  # a listener's nod as a multiple of WorldConfig.nod_px
SACCADE_S = 0.06  # the eyes move to a new spot in ~1.5 frames
GAZE_X, GAZE_Y = 0.8, 0.45  # how far the eyes wander (FaceState.gaze units)
LISTEN_AT_CAMERA = 0.6  # a listener's gaze returns to the camera this often
SMILE_EDGE_S = 0.25  # rise and fall of a smile


@dataclass(frozen=True)
class StateDraw:
    """What a clip's kind adds to its spec."""

    kind: str = "speech"
    rest: tuple[float, float] = (0.0, 0.0)  # extra silence before, after the words (s)
    quiet_s: float = 0.0  # length of a quiet or listening clip (s)
    activity: str = "talking"  # the caption's activity phrase


def _quiet_length(rng: np.random.Generator, cfg: WorldConfig) -> float:
    """``lo + Exp(mean − lo)`` redrawn above ``hi``: mean ≈ ``quiet_mean_s``, up to ``hi``."""
    lo, hi = cfg.quiet_s
    for _ in range(100):
        x = lo + float(rng.exponential(cfg.quiet_mean_s - lo))
        if x <= hi:
            return x
    return hi


def kind_of(index: int, cfg: WorldConfig) -> str:
    """The kind of clip ``index``: a golden-ratio sequence cut at the cumulative shares.

    Consecutive indices spread evenly over ``[0, 1)``, so any run of clips holds the shares
    almost exactly (a random draw per clip missed them by several points on 300 clips), and
    the kind depends on the index alone (not on the number of workers).
    """
    u = (index * GOLDEN) % 1.0
    total = sum(share for _, share in cfg.kinds)
    edge = 0.0
    for name, share in cfg.kinds:
        edge += share / total
        if u < edge:
            return name
    return cfg.kinds[-1][0]


def sample_state(rng: np.random.Generator, cfg: WorldConfig, kind: str) -> StateDraw:
    """A clip's rests or length and caption phrase, for its ``kind`` (:func:`kind_of`).

    Speech clips with ``cfg.rest_s`` get a rest before, after or on both sides (one in three
    each), each uniform in ``rest_s``.
    """
    activity = sample_activity(rng, kind)
    if kind != "speech":
        return StateDraw(kind=kind, quiet_s=_quiet_length(rng, cfg), activity=activity)
    if cfg.rest_s is None:
        return StateDraw(kind=kind, activity=activity)
    side = int(rng.integers(3))  # 0 before, 1 after, 2 both
    before = float(rng.uniform(*cfg.rest_s)) if side in (0, 2) else 0.0
    after = float(rng.uniform(*cfg.rest_s)) if side in (1, 2) else 0.0
    return StateDraw(kind=kind, rest=(before, after), activity=activity)


@dataclass
class IdleMotion:
    """Per-frame idle motion on top of the head sway and blinks of every clip."""

    head_dy: np.ndarray  # (F,) output px: breathing plus nods
    gaze: np.ndarray  # (F, 2) FaceState.gaze
    smile: np.ndarray  # (F,) 0..1
    nods: list[float] = field(default_factory=list)  # s, the lowest point of each nod
    smiles: list[tuple[float, float]] = field(default_factory=list)  # s, start and end


def _gaze(rng: np.random.Generator, cfg: WorldConfig, t: np.ndarray, kind: str) -> np.ndarray:
    """Piecewise-constant gaze with quick moves between spots; listeners mostly look at you."""
    gaze = np.zeros((len(t), 2))
    at, spot = 0.0, np.zeros(2)
    while at < t[-1] + 1:
        hold = float(rng.uniform(*cfg.gaze_hold_s))
        new = rng.uniform(-1, 1, 2) * (GAZE_X, GAZE_Y)
        if kind == "listening" and rng.random() < LISTEN_AT_CAMERA:
            new = np.zeros(2)
        ramp = np.clip((t - at) / SACCADE_S, 0, 1)[:, None]  # (F, 1)
        gaze = np.where((t >= at)[:, None], spot + ramp * (new - spot), gaze)
        at, spot = at + hold, new
    return gaze


def idle_motion(
    rng: np.random.Generator, cfg: WorldConfig, kind: str, num_frames: int
) -> IdleMotion:
    """Breathing and gaze for any kind; listeners also nod and smile (mouth kept closed)."""
    t = np.arange(num_frames) / cfg.fps
    amp, hz = float(rng.uniform(*cfg.breath_px)), float(rng.uniform(*cfg.breath_hz))
    head_dy = amp * np.sin(2 * np.pi * hz * t + float(rng.uniform(0, 2 * np.pi)))
    motion = IdleMotion(head_dy=head_dy, gaze=_gaze(rng, cfg, t, kind), smile=np.zeros(num_frames))
    if kind != "listening":
        return motion
    tn = float(rng.uniform(0.3, cfg.listen_nod_gap_s[1]))
    while tn < t[-1] - NOD_S:
        gain = float(rng.uniform(*NOD_GAIN)) * cfg.nod_px
        motion.head_dy += gain * np.exp(-(((t - tn) / (0.5 * NOD_S)) ** 2))
        motion.nods.append(round(tn, 4))
        tn += float(rng.uniform(*cfg.listen_nod_gap_s))
    ts = float(rng.uniform(0.5, cfg.smile_gap_s[1]))
    while ts < t[-1] - cfg.smile_s[0]:
        end = min(ts + float(rng.uniform(*cfg.smile_s)), float(t[-1]))
        rise = np.clip((t - ts) / SMILE_EDGE_S, 0, 1) * np.clip((end - t) / SMILE_EDGE_S, 0, 1)
        motion.smile = np.maximum(motion.smile, rise)
        motion.smiles.append((round(ts, 4), round(end, 4)))
        ts = end + float(rng.uniform(*cfg.smile_gap_s))
    return motion
