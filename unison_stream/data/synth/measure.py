"""Measurements taken from rendered media, used to check the ground truth and by sync metrics.

- :func:`mouth_opening`: per-frame area of the mouth-interior colour, from pixels alone.
- :func:`speech_envelope`: per-frame RMS of a waveform, on the same frame grid.
- :func:`lagged_correlation`: Pearson correlation of two per-frame series at a frame lag.
- :func:`onset_time`: first moment an effect rises above a fraction of its peak near a time.
- :func:`hand_extreme_frame`: the frame where a gesturing hand (found by differencing renders
  with and without hands) is extreme along its class's contact axis.
"""

from __future__ import annotations

import numpy as np

from unison_stream.data.synth.identity import MOUTH_INTERIOR

__all__ = [
    "hand_extreme_frame",
    "lagged_correlation",
    "mouth_opening",
    "onset_time",
    "speech_envelope",
]

MOUTH_TOLERANCE = 40.0  # RGB distance at which a pixel stops counting as mouth interior


def mouth_opening(frames: np.ndarray) -> np.ndarray:
    """``(F, H, W, 3)`` uint8 → ``(F,)`` float: soft count of mouth-interior pixels per frame.

    A pixel counts ``1 − d / MOUTH_TOLERANCE`` where ``d`` is its RGB distance to the interior
    colour, so anti-aliased edge pixels count in proportion to their coverage.
    """
    d = np.linalg.norm(frames.astype(np.float32) - np.array(MOUTH_INTERIOR, np.float32), axis=-1)
    return np.clip(1.0 - d / MOUTH_TOLERANCE, 0.0, 1.0).sum(axis=(1, 2))


def speech_envelope(audio: np.ndarray, sample_rate: int, fps: float) -> np.ndarray:
    """``(S,)`` → ``(F,)``: RMS of the samples each frame owns (``F = S // spf``)."""
    spf = round(sample_rate / fps)
    f = len(audio) // spf
    return np.sqrt(np.mean(audio[: f * spf].reshape(f, spf) ** 2, axis=1))


def lagged_correlation(a: np.ndarray, b: np.ndarray, lag: int) -> float:
    """Pearson correlation of ``a[t]`` with ``b[t + lag]`` over their overlap."""
    if lag > 0:
        a, b = a[:-lag], b[lag:]
    elif lag < 0:
        a, b = a[-lag:], b[:lag]
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def onset_time(
    x: np.ndarray,
    sample_rate: int,
    near: float,
    window: float,
    *,
    fraction: float = 0.1,
    jump: float = 4.0,
) -> float:
    """Onset of the effect nearest ``near`` (within ``± window`` s), or NaN if none.

    Works on the peak envelope in 2 ms blocks: the onset is the first block that reaches
    ``fraction`` of the window's peak *and* ``jump``× (12 dB) the loudest of the 20 ms before
    it, so the ringing tail of an earlier effect (a bell lasts ~1 s) is not taken for an onset.
    """
    block = max(1, int(0.002 * sample_rate))
    look = 10  # blocks of history: 20 ms
    lo = max(0, int((near - window) * sample_rate) - look * block)
    hi = min(len(x), int((near + window) * sample_rate))
    nb = (hi - lo) // block
    if nb <= look:
        return float("nan")
    env = np.abs(x[lo : lo + nb * block]).reshape(nb, block).max(axis=1)
    peak = env[look:].max()
    if peak == 0:
        return float("nan")
    for k in range(look, nb):
        if env[k] >= fraction * peak and env[k] > jump * env[k - look : k].max():
            seg = np.abs(x[lo + k * block : lo + (k + 1) * block])
            return (lo + k * block + int(np.argmax(seg >= fraction * peak))) / sample_rate
    return float("nan")


def hand_extreme_frame(
    with_hands: np.ndarray, without_hands: np.ndarray, axis: tuple[float, float], x_min: float
) -> int:
    """Frame index where the hand pixels right of ``x_min`` (frame fraction) reach furthest along
    ``axis``. Inputs are ``(F, H, W, 3)`` renders of the same frames with and without hands;
    frames where no hand is visible are skipped.
    """
    diff = np.abs(with_hands.astype(np.int16) - without_hands.astype(np.int16)).sum(-1) > 24
    f, h, w = diff.shape
    ys, xs = np.mgrid[0:h, 0:w]
    diff &= xs >= x_min * w
    best, best_f = -np.inf, -1
    for k in range(f):
        m = diff[k]
        if m.sum() < 4:
            continue
        score = axis[0] * xs[m].mean() / w + axis[1] * ys[m].mean() / h
        if score > best:
            best, best_f = score, k
    return best_f
