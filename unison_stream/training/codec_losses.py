"""The codec trainer's losses, in one registry (``docs/codecs.md``, "Training losses").

:data:`LOSSES` maps a name to the codec it applies to and a term: a function of one
:class:`Reconstruction` (a batch decoded beside its truth) to a scalar. A run's loss is the sum
of weight × term over the terms of its codec whose weight (``CodecTrainConfig.losses``,
defaults in :data:`~.codec_config.DEFAULT_LOSS_WEIGHTS`) is not 0, in the registry's order:

- video: ``l1`` on pixels (its pixels weighed by ``detail`` and ``eye``, :func:`l1`),
  ``eye_blur``, ``sharp``, ``edge``, ``mouth`` (:func:`mouth_l1`); ``adv``, the patch critic's
  term, is added by :class:`Adversary` (it needs the rest of the loss to balance against);
- audio: ``mr_stft`` + ``mel`` (the first latent frame of each crop left out: the causal
  decoder has no history there and the overlap-add is incomplete), ``envelope``;
- both: ``latent_l2``, a small L2 on the latents.

A new term is a function here, an entry in :data:`LOSSES` and a default weight of 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from unison_stream.codecs import metrics
from unison_stream.codecs.video import VideoAE
from unison_stream.data.synth.identity import MOUTH_INTERIOR
from unison_stream.data.synth.measure import MOUTH_TOLERANCE
from unison_stream.imaging import gaussian_blur, local_gradient_rms
from unison_stream.training.codec_config import (
    DEFAULT_LOSS_WEIGHTS,
    CodecTrainConfig,
    loss_weights,
)
from unison_stream.training.codec_discriminator import (
    PatchDiscriminator,
    adaptive_weight,
    d_hinge,
    g_hinge,
    to_nchw,
)

__all__ = [
    "LOSSES",
    "Adversary",
    "Loss",
    "Reconstruction",
    "blurred_l1",
    "detail_weights",
    "edge_l1",
    "interior",
    "mouth_l1",
    "sharpness_l1",
    "total",
]


@dataclass
class Reconstruction:
    """One batch through a codec: what every term reads."""

    codec: str  # "video" or "audio"
    decoded: Tensor  # video (B, T, H, W, 3) in [0, 1]; audio (B, S)
    target: Tensor  # the crops, decoded's shape
    latents: Tensor  # video (B, F, C, h, w); audio (B, N, Ca)
    weights: Mapping[str, float]  # the run's weight of every term (l1 reads detail and eye)
    eyes: Tensor | None = None  # video, reference decoder: (B, 1, H, W, 1), 1 inside the eyes
    mouth: Tensor | None = None  # video, reference decoder: (B, 1, H, W, 1), 1 at the mouth


class Loss(NamedTuple):
    codec: str  # "video", "audio" or "both"
    term: Callable[[Reconstruction], Tensor]  # → a scalar


# ---- video --------------------------------------------------------------------------------
def detail_weights(x: Tensor, weight: float) -> Tensor:
    """Per-pixel weights (B, T, H, W, 1) of frames (B, T, H, W, 3): 1 + ``weight`` × the
    pixel's distance to its 3×3 neighbourhood's mean, ÷ the batch's mean distance. Flat areas
    stay near 1; a 3-pixel iris against the white of the eye weighs several times more, so
    L1 no longer lets the decoder paint it the surrounding colour."""
    b, t, h, w, c = x.shape
    img = x.reshape(b * t, h, w, c).permute(0, 3, 1, 2)  # (B·T, 3, H, W)
    local = F.avg_pool2d(img, 3, stride=1, padding=1, count_include_pad=False)
    d = (img - local).abs().sum(1, keepdim=True)  # (B·T, 1, H, W)
    d = d / d.mean().clamp_min(1e-6)
    return (1 + weight * d).permute(0, 2, 3, 1).reshape(b, t, h, w, 1)


def l1(r: Reconstruction) -> Tensor:
    """Mean L1 on pixels, each pixel's error × :func:`detail_weights` (weight ``detail``) and ×
    (1 + ``eye`` inside the eyes) — weightings rather than terms of their own, so a recipe with
    both weighs a pixel by their product."""
    err = (r.decoded - r.target).abs()  # (B, T, H, W, 3)
    if r.weights["detail"] > 0:  # small parts (an iris, a pupil) weigh more than flat skin
        err = err * detail_weights(r.target, r.weights["detail"])
    if r.weights["eye"] > 0 and r.eyes is not None:  # the eyes, where the world puts them
        err = err * (1 + r.weights["eye"] * r.eyes)
    return err.mean()


def blurred_l1(y: Tensor, x: Tensor, mask: Tensor) -> Tensor:
    """Mean L1 inside ``mask`` (B, 1, H, W, 1) between frames (B, T, H, W, 3) blurred by a
    Gaussian of σ 1.5 px. A 1-pixel iris ring whose place the latents give only to a pixel or so
    has, per pixel, no colour a majority of the time, so L1 paints it white or black; blurred,
    the ring's colour is there wherever it lands, and a decoder that leaves it out pays."""
    b, t, h, w, c = x.shape

    def blur(v: Tensor) -> Tensor:  # (B, T, H, W, 3) → (B·T, 3, H, W)
        return gaussian_blur(v.reshape(b * t, h, w, c).permute(0, 3, 1, 2))

    err = (blur(y) - blur(x)).abs().sum(1)  # (B·T, H, W)
    m = mask.expand(b, t, h, w, 1).reshape(b * t, h, w)
    return (err * m).sum() / (3 * m.sum()).clamp_min(1.0)


def _eye_blur(r: Reconstruction) -> Tensor:
    """:func:`blurred_l1` inside the eyes; 0 for a batch without them (no reference decoder,
    or no eye in any crop)."""
    if r.eyes is None or not bool(r.eyes.any()):
        return r.decoded.new_zeros(())
    return blurred_l1(r.decoded, r.target, r.eyes)


def interior(x: Tensor) -> Tensor:
    """Soft mouth-interior membership (B, T, H, W) of frames (B, T, H, W, 3) in [0, 1]: the
    per-pixel count of eval's ``mouth_opening`` (``1 − d / MOUTH_TOLERANCE``, ``d`` the RGB
    distance to the interior colour, clipped at 0), so its sum is the measured opening."""
    colour = x.new_tensor(MOUTH_INTERIOR) / 255.0
    d = (x - colour).square().sum(-1).clamp_min(1e-12).sqrt() * 255.0  # (B, T, H, W)
    return (1.0 - d / MOUTH_TOLERANCE).clamp(0.0, 1.0)


def mouth_l1(y: Tensor, x: Tensor, mask: Tensor) -> Tensor:
    """Inside ``mask`` (B, 1, H, W, 1), between frames (B, T, H, W, 3): mean L1 on pixels plus
    mean L1 of their :func:`interior` membership. A decoder that paints the dark interior of a
    small opening a shade too light (lips' colour bleeding in) loses it from eval's measured
    opening, whose spread then shrinks; per pixel that is a small L1 error, but the whole
    membership — the measurement itself — is wrong, and the second part charges for it. Its
    gradient is 0 where a pixel is far from the interior colour both ways; the first part
    pulls those in."""
    b, t, h, w, _ = x.shape
    m = mask.expand(b, t, h, w, 1)  # (B, T, H, W, 1)
    n = m.sum().clamp_min(1.0)
    pix = ((y - x).abs() * m).sum() / (3 * n)
    inside = ((interior(y) - interior(x)).abs() * m[..., 0]).sum() / n
    return pix + inside


def _mouth(r: Reconstruction) -> Tensor:
    """:func:`mouth_l1` inside the mouth; 0 for a batch without one (no reference decoder, or
    no mouth in any crop)."""
    if r.mouth is None or not bool(r.mouth.any()):
        return r.decoded.new_zeros(())
    return mouth_l1(r.decoded, r.target, r.mouth)


def sharpness_l1(y: Tensor, x: Tensor) -> Tensor:
    """L1 between the local RMS luminance gradients (:func:`~unison_stream.imaging.
    local_gradient_rms`, σ 2 px) of frames (B, T, H, W, 3). Where the latents give an edge's
    place only to a pixel or so, L1 of pixels, and of their signed differences, is least for a
    soft edge (per pixel the step is there only some of the time). Squared, a step spread over
    3 px has a third of a steep one's energy (what ``sharpness_ratio`` measures), and blurred,
    a steep edge a pixel off is nearly where the truth's is: this term charges a soft edge for
    its missing steepness, a steep one a pixel off little — and texture where the truth is
    flat."""
    return (local_gradient_rms(y) - local_gradient_rms(x)).abs().mean()


def edge_l1(y: Tensor, x: Tensor) -> Tensor:
    """L1 between the horizontal and vertical pixel differences of frames (B, T, H, W, 3):
    L1 alone is content with a blur; edges must match too."""
    dy = (y[:, :, 1:] - y[:, :, :-1]) - (x[:, :, 1:] - x[:, :, :-1])
    dx = (y[:, :, :, 1:] - y[:, :, :, :-1]) - (x[:, :, :, 1:] - x[:, :, :, :-1])
    return dy.abs().mean() + dx.abs().mean()


# ---- the registry -------------------------------------------------------------------------
# The order is the order of summation, the one the runs before the registry summed in, so
# their recipes give the same numbers.
LOSSES: dict[str, Loss] = {
    "l1": Loss("video", l1),
    "mr_stft": Loss("audio", lambda r: metrics.mr_stft(r.decoded, r.target)),
    "mel": Loss("audio", lambda r: metrics.mel_l1(r.decoded, r.target)),
    "latent_l2": Loss("both", lambda r: r.latents.square().mean()),
    "eye_blur": Loss("video", _eye_blur),
    "sharp": Loss("video", lambda r: sharpness_l1(r.decoded, r.target)),
    "edge": Loss("video", lambda r: edge_l1(r.decoded, r.target)),
    "envelope": Loss("audio", lambda r: metrics.envelope_l1(r.decoded, r.target)),
    "mouth": Loss("video", _mouth),
}
assert set(LOSSES) <= set(DEFAULT_LOSS_WEIGHTS), "every term has a default weight"


def total(r: Reconstruction) -> tuple[Tensor, dict[str, float]]:
    """Σ weight × term over the terms of ``r.codec`` whose weight is not 0, and each of those
    terms' value (unweighted, for the progress bar)."""
    loss: Tensor | None = None
    parts: dict[str, float] = {}
    for name, (codec, term) in LOSSES.items():
        weight = r.weights[name]
        if codec not in (r.codec, "both") or weight == 0:
            continue
        value = term(r)
        loss = weight * value if loss is None else loss + weight * value
        parts[name] = float(value.detach())
    assert loss is not None, f"every {r.codec} loss term has weight 0"
    return loss, parts


# ---- the adversarial term -----------------------------------------------------------------
class Adversary:
    """The patch discriminator of the video decoder and its optimizer (not exported):
    ``losses.adv`` × λ × its hinge loss, λ balancing it against the rest of the loss."""

    def __init__(self, ae: VideoAE, tc: CodecTrainConfig) -> None:
        self.disc = PatchDiscriminator(tc.disc_width)
        self.opt = torch.optim.AdamW(
            self.disc.parameters(), lr=tc.disc_lr, betas=(0.5, 0.9), weight_decay=0.0
        )
        convs = [m for m in ae.dec.modules() if isinstance(m, torch.nn.Conv2d)]
        self.last = convs[-1].weight  # the decoder's last layer: where the terms are balanced
        self.weight = loss_weights(tc.losses)["adv"]

    def generator_term(self, rec: Tensor, fake: Tensor) -> tuple[Tensor, dict[str, float]]:
        """adv · λ · hinge loss of the decoded frames (B, T, H, W, 3), λ balancing it against
        ``rec`` at the decoder's last layer."""
        self.disc.requires_grad_(False)
        adv = g_hinge(self.disc(to_nchw(fake)))
        self.disc.requires_grad_(True)
        lam = adaptive_weight(rec, adv, self.last)
        return self.weight * lam * adv, {"g_adv": float(adv.detach()), "lambda": float(lam)}

    def critic_step(self, fake: Tensor, real: Tensor) -> dict[str, float]:
        """One discriminator update on decoded (detached) and real frames."""
        loss = d_hinge(self.disc(to_nchw(real)), self.disc(to_nchw(fake.detach())))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"d_loss": float(loss.detach())}
