"""Image helpers shared by the eval's visual figures (:mod:`unison_stream.eval.visual`) and the
codec trainer's losses (:mod:`unison_stream.training.codec_losses`): luminance, its gradients
and a Gaussian blur.

It imports only numpy and torch, so everything above it (codecs, eval, training, benchmarks)
may use it without leaning on another. Frames are RGB with channels last, ``(…, H, W, 3)``;
luminance follows ITU-R BT.601.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["LUMA", "gaussian_blur", "gradient_energy", "local_gradient_rms"]

LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601 luminance weights


def gradient_energy(frames: np.ndarray) -> np.ndarray:
    """``(F, H, W, 3)`` frames (8-bit levels) → ``(F,)``: mean of the squared horizontal plus
    mean of the squared vertical luminance differences (levels²). 0 for a flat frame; blur
    lowers it. The eval's ``sharpness_ratio`` is this figure of decoded over true frames."""
    y = frames.astype(np.float32) @ LUMA  # (F, H, W)
    gx = np.diff(y, axis=2) ** 2
    gy = np.diff(y, axis=1) ** 2
    return np.asarray(gx.mean(axis=(1, 2)) + gy.mean(axis=(1, 2)), np.float64)


def gaussian_blur(img: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """(N, C, H, W) images blurred by a Gaussian of ``sigma`` px (7×7 kernel, edges replicated)."""
    c = img.shape[1]
    k = torch.exp(-0.5 * (torch.arange(-3.0, 4.0) / sigma).square())
    k = (k[:, None] * k[None, :]) / k.sum() ** 2  # (7, 7), sums to 1
    kernel = k.expand(c, 1, 7, 7).to(img)
    return F.conv2d(F.pad(img, (3, 3, 3, 3), mode="replicate"), kernel, groups=c)


def local_gradient_rms(frames: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """Frames (B, T, H, W, 3) → (B·T, 1, H, W): the root of the squared luminance gradient
    (forward differences; the last row and column get none) blurred by a Gaussian of ``sigma``
    px — how steep the edges near each pixel are, wherever within a pixel or two they lie."""
    b, t, h, w, _ = frames.shape
    y = (frames.reshape(b * t, h, w, 3) * frames.new_tensor(LUMA)).sum(-1)  # (B·T, H, W)
    gx = F.pad(y[:, :, 1:] - y[:, :, :-1], (0, 1))
    gy = F.pad(y[:, 1:] - y[:, :-1], (0, 0, 0, 1))
    return (gaussian_blur((gx.square() + gy.square())[:, None], sigma) + 1e-6).sqrt()
