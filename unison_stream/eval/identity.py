"""Identity stability over a long stream (``docs/eval.md``; ``docs/eval-measures.md``).

**Feature.** Each frame becomes the mean colour of an ``GRID × GRID`` grid of blocks (8 × 8
blocks of 16 × 16 pixels at 128², RGB, 192 numbers). In the synthetic world an identity *is*
the colour and layout of large regions — skin, hair, eyes, clothes, background colour and
pattern — which block means capture, while what legitimately moves (mouth, blinks, 0.5–2.5 px
head sway, a passing hand) changes only a few blocks. No learned face embedding exists for
this world, and a pixel feature is transparent: the distance between two frames is the RMS
difference of their block colours in 8-bit levels.

**Drift.** Distances of the stream's frames to the reference frame (the identity image the
stream was started from), averaged over the first and over the last ``window_s`` seconds;
``identity_drift`` is their ratio (1 = no drift) and both raw figures are reported. Whether the
person is still *recognisable* is judged against the other held-out identities: the last
window's mean feature must be closer to its own reference than to any other reference.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GRID", "drift", "frame_features", "nearest_reference", "reference_distance"]

GRID = 8  # blocks per side: 16-pixel blocks at 128² — larger than a mouth, smaller than a face


def frame_features(frames: np.ndarray, *, grid: int = GRID) -> np.ndarray:
    """``(F, H, W, 3)`` uint8 → ``(F, grid·grid·3)`` float32 block-mean colours (0..255)."""
    f, h, w, c = frames.shape
    assert h % grid == 0 and w % grid == 0, f"frame {h}×{w} must split into {grid}×{grid} blocks"
    x = frames.astype(np.float32).reshape(f, grid, h // grid, grid, w // grid, c)
    return x.mean(axis=(2, 4)).reshape(f, grid * grid * c)  # (F, grid, grid, 3) flattened


def reference_distance(frames: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``(F,)`` RMS block-colour distance of each frame to ``reference (H, W, 3)``."""
    feats = frame_features(frames)
    ref = frame_features(reference[None])[0]
    return np.sqrt(np.mean((feats - ref) ** 2, axis=1))


def drift(
    frames: np.ndarray, reference: np.ndarray, fps: float, *, window_s: float = 10.0
) -> dict[str, float]:
    """First/last ``window_s`` mean distances to ``reference`` and their ratio (last / first).

    A stream shorter than two windows uses its first and last halves.
    """
    d = reference_distance(frames, reference)
    n = min(round(window_s * fps), len(d) // 2)
    assert n >= 1, "the stream needs at least two frames"
    first, last = float(d[:n].mean()), float(d[-n:].mean())
    return {
        "first": first,
        "last": last,
        "ratio": last / first if first > 0 else (1.0 if last == 0 else float("inf")),
        "window_s": n / fps,
    }


def nearest_reference(frames: np.ndarray, references: np.ndarray) -> int:
    """Index of the reference ``(R, H, W, 3)`` nearest the mean feature of ``frames``."""
    mean = frame_features(frames).mean(axis=0)
    refs = frame_features(references)
    return int(np.argmin(np.sqrt(np.mean((refs - mean) ** 2, axis=1))))
