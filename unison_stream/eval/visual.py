"""Visual-quality figures of generated frames against ground truth (``docs/eval.md``, "Visual
quality"; how each is built: ``docs/eval-measures.md``). Pure numpy: frames and embeddings
in, numbers out.

- :func:`gradient_energy` / :func:`sharpness`: mean squared luminance gradient of frames, on
  the whole frame or on the face box of the world's layout. ``sharpness_ratio`` is the figure
  of generated frames over the same on the ground-truth clips (1 = as sharp; blur lowers it).
- :func:`frechet_distance`: the Fréchet distance between Gaussians fitted to two sets of
  embeddings (Heusel et al., 2017, eq. 6) — ``fid_world`` in the world's learned feature
  space (:mod:`.features`).
- :func:`feature_visibility`: share of frames where the world's own measure finds both eyes
  and the mouth (:func:`~unison_stream.data.synth.measure.features_visible`).
- :func:`verification_threshold` and :func:`identity_windows`: identity verification of a
  long stream per window, in the feature net's identity space.

Definitions and bars: ``docs/eval.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unison_stream import imaging
from unison_stream.data.synth.face import FaceLayout
from unison_stream.data.synth.measure import SWAY_X, SWAY_Y, features_visible
from unison_stream.imaging import LUMA

__all__ = [
    "IdentityWindow",
    "feature_visibility",
    "frechet_distance",
    "gradient_energy",
    "identity_windows",
    "sharpness",
    "verification_threshold",
    "verify",
    "window_spans",
]

VERIFY_QUANTILE = 0.99  # same-person distances of ground truth the threshold lets through


def _region(frames: np.ndarray, layout: FaceLayout | None) -> np.ndarray:
    """The frames, or their face box widened by the head's sway: ``(F, h, w, 3)``."""
    if layout is None:
        return frames
    x0, y0, x1, y1 = layout.head
    h, w = frames.shape[1:3]
    xa, xb = max(0, int(x0 - SWAY_X)), min(w, int(np.ceil(x1 + SWAY_X)))
    ya, yb = max(0, int(y0 - SWAY_Y)), min(h, int(np.ceil(y1 + SWAY_Y)))
    return frames[:, ya:yb, xa:xb]


def gradient_energy(frames: np.ndarray, layout: FaceLayout | None = None) -> np.ndarray:
    """``(F, H, W, 3)`` uint8 → ``(F,)``: mean of the squared horizontal and vertical
    luminance differences (8-bit levels²) over the whole frame, or over ``layout``'s face
    (:func:`unison_stream.imaging.gradient_energy` of that region)."""
    return imaging.gradient_energy(_region(frames, layout))


def sharpness(clips: list[tuple[np.ndarray, FaceLayout | None]]) -> float:
    """Mean :func:`gradient_energy` over every frame of ``clips`` (frames, face layout or None
    for the whole frame); 0.0 without frames."""
    energies = [gradient_energy(f, layout) for f, layout in clips if len(f)]
    return float(np.concatenate(energies).mean()) if energies else 0.0


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to embeddings ``a (N, D)`` and ``b (M, D)``:
    ``|μa − μb|² + tr(Σa + Σb − 2 (Σa^½ Σb Σa^½)^½)``; the square root of the product is taken
    through the symmetric form so it stays real."""
    assert a.ndim == b.ndim == 2 and a.shape[1] == b.shape[1], "two (N, D) sets of one width"
    assert len(a) > 1 and len(b) > 1, "each set needs two embeddings for a covariance"
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(sa)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # Σa^½
    cross = np.linalg.eigvalsh(root_a @ sb @ root_a)
    trace = np.trace(sa) + np.trace(sb) - 2 * np.sqrt(np.clip(cross, 0, None)).sum()
    return float(mu @ mu + max(trace, 0.0))


def feature_visibility(clips: list[tuple[np.ndarray, FaceLayout]]) -> float | None:
    """Share of all frames of ``clips`` (frames, the person's layout) where both eyes and the
    mouth are found; None without frames."""
    found = [features_visible(f, layout) for f, layout in clips if len(f)]
    return float(np.concatenate(found).mean()) if found else None


def verification_threshold(same: np.ndarray, other: np.ndarray) -> float:
    """Distance under which two frames are taken for one person, from ground-truth distances
    between frames of one person (``same``) and of different people (``other``).

    It is the ``VERIFY_QUANTILE`` of ``same`` — a frame is the person when it is as near the
    reference as 99 % of the person's own frames are (mouth, blinks, sway and hands included)
    — or, should that reach the 1st percentile of ``other``, the midpoint of the two."""
    q = float(np.quantile(same, VERIFY_QUANTILE))
    low_other = float(np.quantile(other, 0.01))
    return q if q < low_other else 0.5 * (q + low_other)


@dataclass(frozen=True)
class IdentityWindow:
    """Frames ``[start_s, end_s)`` of a stream or clip: median distances of their identity
    vectors to the own reference and to the nearest other person's reference, and the verdict."""

    start_s: float
    end_s: float
    distance: float
    distance_other: float
    verified: bool

    def to_json(self) -> dict[str, float | bool]:
        return {
            "start_s": round(self.start_s, 2),
            "end_s": round(self.end_s, 2),
            "distance": round(self.distance, 4),
            "distance_other": round(self.distance_other, 4),
            "verified": self.verified,
        }


def window_spans(frames: int, fps: float, window_s: float) -> list[tuple[int, int]]:
    """``[start, end)`` frame spans of consecutive ``window_s`` windows over ``frames`` frames;
    a last window shorter than half a window joins the one before it."""
    n = max(1, round(window_s * fps))
    starts = list(range(0, frames, n))
    if len(starts) > 1 and frames - starts[-1] < n // 2:
        starts.pop()
    return [(s, starts[k + 1] if k + 1 < len(starts) else frames) for k, s in enumerate(starts)]


def verify(
    ids: np.ndarray,
    reference: np.ndarray,
    others: np.ndarray,
    *,
    threshold: float,
    fps: float,
    start: int = 0,
) -> IdentityWindow:
    """Verify frames' identity vectors ``ids (F, K)`` (frame ``start`` on) as the person of
    ``reference (K,)``: the median distance to it is under ``threshold`` **and** under the
    median distance to each other person's reference (``others (R, K)``; R may be 0)."""
    d = float(np.median(np.linalg.norm(ids - reference, axis=1)))
    d_other = min(
        (float(np.median(np.linalg.norm(ids - r, axis=1))) for r in others), default=float("inf")
    )
    ok = d < threshold and d < d_other
    return IdentityWindow(start / fps, (start + len(ids)) / fps, d, d_other, ok)


def identity_windows(
    stream: np.ndarray,
    reference: np.ndarray,
    others: np.ndarray,
    *,
    fps: float,
    threshold: float,
    window_s: float = 10.0,
) -> list[IdentityWindow]:
    """:func:`verify` each window (:func:`window_spans`) of a stream's identity vectors."""
    return [
        verify(stream[s:e], reference, others, threshold=threshold, fps=fps, start=s)
        for s, e in window_spans(len(stream), fps, window_s)
    ]


def _face_masks(layout: FaceLayout, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(H, W)`` bool masks ``(bare, features)``. ``features``: the eyes with their brows, the
    nose and the mouth, each widened by the head's sway. ``bare``: inside the face ellipse
    shrunk by the sway and outside ``features`` — where the world draws only skin whatever
    the head does. A clear face is flat there; a ghost is not."""
    x0, y0, x1, y1 = layout.head
    cx, cy, a, b = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    ra, rb = max(a - SWAY_X - 1, 1.0), max(b - SWAY_Y - 1, 1.0)
    inside = ((xx - cx) / ra) ** 2 + ((yy - cy) / rb) ** 2 <= 1.0
    eye_h = layout.eyes[0][3] - layout.eyes[0][1]
    boxes = [(ex0, ey0 - eye_h, ex1, ey1) for ex0, ey0, ex1, ey1 in layout.eyes]  # eye, brow
    boxes.append(layout.mouth)
    nose_x = 0.5 * (layout.eyes[1][0] - layout.eyes[0][2])  # half the gap between the eyes
    boxes.append((cx - nose_x, layout.eyes[0][1], cx + nose_x, layout.mouth[1]))
    features = np.zeros((height, width), bool)
    for fx0, fy0, fx1, fy1 in boxes:
        features |= (
            (xx >= fx0 - SWAY_X)
            & (xx <= fx1 + SWAY_X)
            & (yy >= fy0 - SWAY_Y)
            & (yy <= fy1 + SWAY_Y)
        )
    return inside & ~features, features


def ghosting(frames: np.ndarray, layout: FaceLayout) -> np.ndarray:
    """``(F, H, W, 3)`` uint8 → ``(F,)``: luminance-gradient energy on the face's bare skin
    over the same on its eyes, brows, nose and mouth (:func:`_face_masks`). A clear face has
    almost none on bare skin (a hand passing, a little sway); a doubled or faded face — stray
    eyes on the cheeks and forehead, the background showing through, features washed out —
    has more there and less on its features."""
    h, w = frames.shape[1:3]
    y = frames.astype(np.float32) @ LUMA  # (F, H, W)
    g = np.zeros_like(y)
    g[:, :, 1:] += np.diff(y, axis=2) ** 2
    g[:, 1:, :] += np.diff(y, axis=1) ** 2
    bare, features = _face_masks(layout, h, w)
    return np.asarray(g[:, bare].sum(axis=1) / np.maximum(g[:, features].sum(axis=1), 1e-6))
