"""Measurements taken from rendered media, used to check the ground truth and by sync metrics.

- :func:`mouth_opening`: per-frame area of the mouth-interior colour, from pixels alone.
- :func:`speech_envelope`: per-frame RMS of a waveform, on the same frame grid.
- :func:`lagged_correlation`: Pearson correlation of two per-frame series at a frame lag.
- :func:`onset_time`: first moment an effect rises above a fraction of its peak near a time.
- :func:`hand_extreme_frame`: the frame where a gesturing hand (found by differencing renders
  with and without hands) is extreme along its class's contact axis.
- :func:`feature_contrast` / :func:`features_visible`: whether the eyes and the mouth stand out
  from the skin at the identity's known face layout (:func:`~.face.face_layout`).
- :func:`eye_openness`: the white-of-the-eye area per frame, relative to the clip's (blinks).
"""

from __future__ import annotations

import numpy as np

from unison_stream.data.synth.config import WorldConfig
from unison_stream.data.synth.face import Box, FaceLayout
from unison_stream.data.synth.identity import MOUTH_INTERIOR

__all__ = [
    "eye_openness",
    "feature_contrast",
    "features_visible",
    "hand_extreme_frame",
    "lagged_correlation",
    "mouth_opening",
    "onset_time",
    "skin_colour",
    "speech_envelope",
]

MOUTH_TOLERANCE = 40.0  # RGB distance at which a pixel stops counting as mouth interior
_WORLD = WorldConfig()
# A swaying head leaves its rest layout by at most this much (config: sway amplitude in x; half
# of it plus the nod in y), so each part's box is widened by it.
SWAY_X = _WORLD.head_sway_px[1]
SWAY_Y = 0.5 * _WORLD.head_sway_px[1] + _WORLD.nod_px
# Contrast of a part = the k-th most skin-unlike pixel of its box. k is below the smallest area
# the part ever has: a closed eye is a 2-px line ~10 px long, closed lips ~50 px.
EYE_PEAK_PX = 8
MOUTH_PEAK_PX = 12
CONTRAST_FLOOR = 30.0  # added to |skin| as the scale, so a dark skin's small levels don't blow up
# A part is found at this contrast. On the ground truth of all three splits (36,618 frames)
# the least contrasty eye reaches ≥ 0.37 in 99.5 % of frames (min 0.18: blinks on dark skin),
# the mouth ≥ 0.36 (min 0.295); a face of one flat colour scores 0, colour noise (the random
# model's frames) ≤ 0.1 in half its frames and < 0.25 in 97 %.
FEATURE_CONTRAST = 0.25
SCLERA = (250.0, 250.0, 250.0)  # the white of the eye (face.py ``_eyes``)
SCLERA_TOLERANCE = 50.0  # RGB distance at which a pixel stops counting as eye white


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


def _crop(frames: np.ndarray, box: Box, margin_x: float, margin_y: float) -> np.ndarray:
    """``(F, h, w, 3)`` float32 pixels of ``box`` widened by the margins, clipped to the frame."""
    x0, y0, x1, y1 = box
    h, w = frames.shape[1:3]
    xa, xb = max(0, int(np.floor(x0 - margin_x))), min(w, int(np.ceil(x1 + margin_x)))
    ya, yb = max(0, int(np.floor(y0 - margin_y))), min(h, int(np.ceil(y1 + margin_y)))
    return frames[:, ya:yb, xa:xb].astype(np.float32)


def skin_colour(frames: np.ndarray, layout: FaceLayout) -> np.ndarray:
    """``(F, H, W, 3)`` uint8 → ``(F, 3)``: median colour of both cheek patches per frame."""
    cheeks = [_crop(frames, c, 0.0, 0.0).reshape(len(frames), -1, 3) for c in layout.cheeks]
    return np.median(np.concatenate(cheeks, axis=1), axis=1)


def feature_contrast(frames: np.ndarray, layout: FaceLayout) -> np.ndarray:
    """``(F, H, W, 3)`` uint8 → ``(F, 3)`` contrast of the image-left eye, right eye and mouth.

    A part's contrast is the RGB distance to the frame's skin colour (:func:`skin_colour`) of
    its box's ``EYE_PEAK_PX``-th / ``MOUTH_PEAK_PX``-th most distant pixel, less the same
    figure (``EYE_PEAK_PX``) inside the cheek patches — the skin's own variation — divided by
    ``|skin| + CONTRAST_FLOOR``; the boxes are the layout's, widened by the head's sway. Open
    or closed, an eye is white, iris and lid line against skin; lips are skin × (0.78, 0.52,
    0.55); the world's cheeks are one flat colour. A face faded to one colour, a part smeared
    into the skin, or noise (where the cheeks vary as much as the parts) scores ≤ 0.
    """
    skin = skin_colour(frames, layout)  # (F, 3)
    scale = np.linalg.norm(skin, axis=1) + CONTRAST_FLOOR  # (F,)

    def peak(crop: np.ndarray, k: int) -> np.ndarray:
        """(F,) k-th largest distance to the skin colour among a crop's pixels."""
        d = np.linalg.norm(crop - skin[:, None, None], axis=-1).reshape(len(frames), -1)
        k = min(k, d.shape[1])
        return np.partition(d, d.shape[1] - k, axis=1)[:, d.shape[1] - k]

    cheeks = np.concatenate([_crop(frames, c, 0.0, 0.0) for c in layout.cheeks], axis=2)
    spread = peak(cheeks, EYE_PEAK_PX)  # (F,) 0 on a rendered face
    parts = ((*layout.eyes, layout.mouth), (EYE_PEAK_PX, EYE_PEAK_PX, MOUTH_PEAK_PX))
    out = np.empty((len(frames), 3), np.float32)
    for j, (box, k) in enumerate(zip(*parts, strict=True)):
        out[:, j] = (peak(_crop(frames, box, SWAY_X, SWAY_Y), k) - spread) / scale
    return out


def features_visible(
    frames: np.ndarray, layout: FaceLayout, *, threshold: float = FEATURE_CONTRAST
) -> np.ndarray:
    """``(F,)`` bool: both eyes and the mouth reach ``threshold`` (:func:`feature_contrast`)."""
    return np.asarray(feature_contrast(frames, layout).min(axis=1) >= threshold)


def eye_openness(frames: np.ndarray, layout: FaceLayout) -> np.ndarray:
    """``(F, H, W, 3)`` uint8 frames of one clip → ``(F,)`` eye-white area over the clip's 90th
    percentile (≈ 1 open, 0 shut). A blink closes the eye for ~3 frames at 25 fps."""
    area = np.zeros(len(frames), np.float32)
    for box in layout.eyes:
        crop = _crop(frames, box, 0.5 * SWAY_X, 0.5 * SWAY_Y)
        area += (
            np.linalg.norm(crop - np.array(SCLERA, np.float32), axis=-1) < SCLERA_TOLERANCE
        ).sum(axis=(1, 2))
    return area / max(1.0, float(np.percentile(area, 90)))
