"""Patch discriminator and hinge losses for the video decoder's adversarial term.

The term serves the visual-quality bar of ``docs/eval.md``; the decoder stages it took part
in are in ``docs/codecs.md``.

Pixel L1 (and the edge term) make the decoder predict the conditional median of a frame given
its latents, which is a blurred frame where the latents leave detail open (eyes, hair). A patch
discriminator judges local texture instead: it scores every ~30-pixel patch of a frame as
real or decoded, so the decoder is pushed toward frames whose patches look like the world's.
Only the decoder trains against it (``freeze_encoder``), so the latents, and the DiT trained on
them, stay valid; the discriminator is a training tool and is not exported.

The adversarial gradient is balanced against the reconstruction gradient at the decoder's last
layer (the adaptive weight of VQGAN-style codecs): ``λ = ‖∇L_rec‖ / (‖∇L_adv‖ + 1e-4)``, so one
weight (``losses.adv``) holds across crop sizes and loss scales.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = ["PatchDiscriminator", "adaptive_weight", "d_hinge", "g_hinge", "to_nchw"]


class PatchDiscriminator(nn.Module):
    """Frames (N, 3, H, W) in [0, 1] → real/fake logits (N, 1, H/8, W/8); spectrally
    normalised convolutions (a stable critic without batch statistics)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(3, w, 4, 2, 1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(w, 2 * w, 4, 2, 1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * w, 4 * w, 4, 2, 1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(4 * w, 1, 3, 1, 1)),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x * 2.0 - 1.0)


def to_nchw(frames: Tensor) -> Tensor:
    """(B, T, H, W, 3) frames → (B·T, 3, H, W)."""
    b, t, h, w, c = frames.shape
    return frames.reshape(b * t, h, w, c).permute(0, 3, 1, 2)


def d_hinge(real: Tensor, fake: Tensor) -> Tensor:
    """The critic's hinge loss on logits of real and of decoded patches."""
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def g_hinge(fake: Tensor) -> Tensor:
    """The decoder's adversarial loss: raise the critic's score of its patches."""
    return -fake.mean()


def adaptive_weight(rec: Tensor, adv: Tensor, last: Tensor, cap: float = 1e4) -> Tensor:
    """``‖∇_last rec‖ / (‖∇_last adv‖ + 1e-4)``, detached and capped: the adversarial term's
    scale that matches the reconstruction's pull on the decoder's last layer ``last``."""
    g_rec = torch.autograd.grad(rec, last, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv, last, retain_graph=True)[0]
    return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(max=cap).detach()
