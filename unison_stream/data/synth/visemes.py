"""Phoneme → viseme map and the per-frame mouth track it drives.

Visemes follow the 15-class set used by lip-sync tools (Oculus/Meta OVRLipSync): ``sil PP FF
TH DD kk CH SS nn RR aa E I O U``. Each has a mouth pose (opening, width, rounding) in 0..1.
The frame track samples the pose of the phoneme under each frame's centre and low-passes it
with a short time constant (coarticulation), so the mouth moves smoothly like a real one.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter, lfilter_zi

from unison_stream.data.synth.speech import Timed

__all__ = ["VISEMES", "VISEME_POSES", "mouth_track", "phoneme_viseme", "viseme_track"]

VISEMES: tuple[str, ...] = (
    "sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "I", "O", "U",
)  # fmt: skip

# (opening, width, rounding): opening is the jaw drop, width the lip spread, rounding the pucker.
VISEME_POSES: dict[str, tuple[float, float, float]] = {
    "sil": (0.0, 0.5, 0.0),
    "PP": (0.0, 0.45, 0.1),
    "FF": (0.12, 0.55, 0.0),
    "TH": (0.22, 0.55, 0.0),
    "DD": (0.3, 0.55, 0.0),
    "kk": (0.35, 0.5, 0.0),
    "CH": (0.28, 0.4, 0.5),
    "SS": (0.18, 0.7, 0.0),
    "nn": (0.22, 0.55, 0.0),
    "RR": (0.3, 0.4, 0.6),
    "aa": (1.0, 0.6, 0.0),
    "E": (0.7, 0.75, 0.0),
    "I": (0.45, 0.85, 0.0),
    "O": (0.75, 0.35, 0.8),
    "U": (0.45, 0.25, 1.0),
}

_GROUPS: dict[str, tuple[str, ...]] = {
    "PP": ("p", "b", "m", "m-"),
    "FF": ("f", "v"),
    "TH": ("T", "D"),
    "DD": ("t", "d", "t#", "*", "?"),
    "kk": ("k", "g", "N", "h", "x"),
    "CH": ("tS", "dZ", "S", "Z", "j"),
    "SS": ("s", "z"),
    "nn": ("n", "l", "n-", "l-", "@L"),
    "RR": ("r", "w", "r-"),
    "aa": ("a", "a#", "A:", "A@", "aI", "aU", "aI@", "aI3", "V"),
    "E": ("e", "E", "e@", "eI", "3", "3:", "@", "@2", "@5"),
    "I": ("i", "i:", "i@", "I", "I2", "I#"),
    "O": ("0", "O", "O:", "O@", "o@", "oU", "OI"),
    "U": ("u:", "U", "U@"),
}
_MAP = {p: v for v, ps in _GROUPS.items() for p in ps}


def phoneme_viseme(symbol: str) -> str:
    """Viseme of an espeak mnemonic; pauses and unknown symbols map to ``sil``."""
    return _MAP.get(symbol.strip("',%="), "sil")


def viseme_track(phonemes: list[Timed]) -> list[Timed]:
    """Merge consecutive phonemes with the same viseme into viseme spans."""
    out: list[Timed] = []
    for p in phonemes:
        v = phoneme_viseme(p.label)
        if out and out[-1].label == v and abs(out[-1].end - p.start) < 1e-6:
            out[-1] = Timed(v, out[-1].start, p.end)
        else:
            out.append(Timed(v, p.start, p.end))
    return out


def mouth_track(
    phonemes: list[Timed], num_frames: int, fps: float, smooth_s: float
) -> tuple[np.ndarray, list[str]]:
    """Per-frame mouth pose ``(F, 3)`` = (opening, width, rounding) and the viseme per frame.

    The pose is sampled at 4 sub-steps per frame, low-passed with a one-pole filter of time
    constant ``smooth_s`` (run forward then backward, so it adds no delay), then averaged per
    frame; the label is the viseme under the frame's centre.
    """
    sub = 4
    t = (np.arange(num_frames * sub) + 0.5) / (fps * sub)
    pose = np.tile(np.array(VISEME_POSES["sil"]), (len(t), 1))
    labels = ["sil"] * num_frames
    for p in phonemes:
        v = phoneme_viseme(p.label)
        pose[(t >= p.start) & (t < p.end)] = VISEME_POSES[v]
        for f in range(int(p.start * fps), min(num_frames, int(np.ceil(p.end * fps)))):
            if p.start <= (f + 0.5) / fps < p.end:
                labels[f] = v
    a = float(np.exp(-1.0 / (fps * sub * smooth_s))) if smooth_s > 0 else 0.0
    for _ in range(2):  # forward, then backward on the reversed signal: zero phase
        zi = lfilter_zi([1 - a], [1, -a])[:, None] * pose[:1]
        pose = lfilter([1 - a], [1, -a], pose, axis=0, zi=zi)[0][::-1]
    return pose.reshape(num_frames, sub, 3).mean(axis=1).astype(np.float32), labels
