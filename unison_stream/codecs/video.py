"""Video autoencoder: 128×128 RGB frames ↔ (C, H/8, W/8) latents, two frames per latent frame.

Axes: B batch, T output frames, F latent frames (T = F·s, s = ``video_time_stride``), C latent
channels, h×w latent grid, H×W pixels.

- **Encoder**: a latent frame is encoded from its own ``s`` frames only (stacked on channels),
  so it is causal and can run chunk by chunk with no state. pixel-unshuffle 2× → conv →
  residual blocks with strided convs to 8× → 1×1 to C.
- **Decoder**: latent frame ``f`` is decoded from latents ``f−k..f`` (``k`` =
  ``temporal_context``), stacked on channels; sub-pixel (conv → pixel-shuffle) upsampling back
  to ``s`` RGB frames. It is causal over latent frames, so a streaming decoder that carries the
  last ``k`` latent frames reproduces the full decode exactly (the test checks this).
- **Reference** (``cfg.reference``): the decoder also reads one frame of the person — the
  session's portrait — through a small conv encoder at half resolution, added to the
  decoder's features before its last (full-width) residual blocks through a zero-initialised
  1×1 conv, plus a zero-initialised linear read of the features' maximum over all positions
  added everywhere (so a decoder fine-tuned from one without it starts out equal to it). An
  8×8 latent cell cannot carry a 3-pixel iris, a hairline or the face's outline; the portrait
  can, and the person does not change within a stream. Trained with another frame of the same
  clip as the reference (other mouth, eyes, gesture), so it copies the person, not the pose;
  without a reference (zeros) the decoder still works (training leaves it out now and then).
- **Reference attention** (``cfg.reference_attention``): the decoder's quarter-resolution
  features (before its last upsampling) also *look up* the portrait: windowed cross-attention
  over the portrait's features within ``cfg.reference_window`` cells (4 px each) around the
  same place, with a learned bias per offset, added back through a zero-initialised 1×1 conv.
  An addition needs the iris of the picture exactly where the frame's iris is; a look-up
  finds it a few pixels away (the head sways, the eyes blink) and copies its colour. Keys
  and values are computed once per stream; a decode costs ~3 M multiply-adds more per
  latent frame (the decoder: ~400 M).
- Latents are normalised per channel with statistics measured after training (buffers
  ``latent_mean`` / ``latent_std``): the model sees ≈ zero-mean, unit-variance latents.

No normalisation layers (cheap at inference, and nothing depends on batch statistics).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unison_stream.codecs.config import VideoCodecConfig
from unison_stream.config import LatentConfig

__all__ = ["Reference", "StreamingVideoDecoder", "VideoAE", "VideoEncoderStream"]


class _Res(nn.Module):
    """x + conv(silu(conv(silu(x)))), 3×3, same width."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.c2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.c2(F.silu(self.c1(F.silu(x))))


class _Up(nn.Module):
    """Sub-pixel 2× upsampling: conv to 4·out channels at low resolution, then pixel-shuffle."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout * 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(F.silu(x)), 2)


class Reference(NamedTuple):
    """A portrait as the decoder reads it (:meth:`VideoAE.reference_features`): features added
    at half resolution (B, w₀, H/2, W/2), and, with reference attention, each quarter-resolution
    position's window of keys (B, heads, h·w, dim, window²) and values (B, heads, h·w, window²,
    dim) and the logits' offsets (1, heads, h·w, 1, window²: the bias per offset, −inf off the
    picture); None without."""

    add: torch.Tensor
    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None
    offsets: torch.Tensor | None = None

    def masked(self, keep: torch.Tensor) -> Reference:
        """The same with the portraits of batch items where ``keep`` (B,) is 0 left out."""
        values = None if self.values is None else self.values * keep.view(-1, 1, 1, 1, 1)
        return Reference(self.add * keep.view(-1, 1, 1, 1), self.keys, values, self.offsets)

    def float(self) -> Reference:
        def f(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.float()

        return Reference(self.add.float(), f(self.keys), f(self.values), f(self.offsets))


class _ReferenceAttention(nn.Module):
    """Windowed cross-attention: each position of the decoder's features (B·F, C, h, w) reads
    the portrait's features within ``window``² cells around the same place (zero-initialised
    output: it adds nothing until trained)."""

    def __init__(self, ch: int, ref_ch: int, heads: int, dim: int, window: int) -> None:
        super().__init__()
        self.heads, self.dim, self.window = heads, dim, window
        self.q = nn.Conv2d(ch, heads * dim, 1)
        self.kv = nn.Conv2d(ref_ch, 2 * heads * dim, 1)
        self.bias = nn.Parameter(torch.zeros(heads, window * window))  # per offset
        self.out = nn.Conv2d(heads * dim, ch, 1)

    def memory(self, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, ref_ch, h, w) portrait features → keys (B, heads, h·w, dim, window²), values
        (B, heads, h·w, window², dim) — each position's window, laid out for one batched
        matrix product per position — and the logits' offsets (1, heads, h·w, 1, window²):
        the bias per offset, and −inf for cells outside the picture (the unfold's zero
        padding), which are not looked at."""
        b, _, h, w = ref.shape
        n = self.window
        kv = F.unfold(self.kv(ref), n, padding=n // 2)  # (B, 2·heads·dim·n², h·w)
        kv = kv.view(b, 2, self.heads, self.dim, n * n, h * w)
        keys = kv[:, 0].permute(0, 1, 4, 2, 3).contiguous()
        values = kv[:, 1].permute(0, 1, 4, 3, 2).contiguous()
        inside = F.unfold(ref.new_ones(1, 1, h, w), n, padding=n // 2)  # (1, n², h·w)
        outside = (inside == 0).view(n * n, h * w).t().view(1, 1, h * w, 1, n * n)
        offsets = self.bias.view(1, self.heads, 1, 1, n * n).masked_fill(outside, float("-inf"))
        return keys, values, offsets

    def forward(
        self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, offsets: torch.Tensor
    ) -> torch.Tensor:
        """x (B·F, C, h, w), the portrait's :meth:`memory` → what to add to x."""
        b = keys.shape[0]
        bf, _, h, w = x.shape
        q = self.q(x).reshape(b, bf // b, self.heads, self.dim, h * w)  # (B, F, heads, dim, hw)
        q = q.permute(0, 2, 4, 1, 3)  # (B, heads, hw, F, dim)
        logits = torch.matmul(q, keys) * self.dim**-0.5 + offsets  # (B, heads, hw, F, n²)
        read = torch.matmul(logits.softmax(-1), values)  # (B, heads, hw, F, dim)
        read = read.permute(0, 3, 1, 4, 2).reshape(bf, self.heads * self.dim, h, w)
        return self.out(read)


class VideoAE(nn.Module):
    """Frames ↔ latents; see the module docstring for the layout."""

    latent_mean: torch.Tensor  # (C,) buffers: raw latent statistics measured after training
    latent_std: torch.Tensor

    def __init__(self, cfg: VideoCodecConfig, latent: LatentConfig) -> None:
        super().__init__()
        self.cfg, self.latent = cfg, latent
        s, c = latent.video_time_stride, latent.video_channels
        w = list(cfg.widths)
        levels = len(w)  # pixel-unshuffle 2× then (levels − 1) strided convs
        assert 2**levels == latent.video_downsample, (
            f"widths must give {latent.video_downsample}× downsampling (2 × 2^(levels−1))"
        )
        # ---- encoder ---------------------------------------------------------------------
        enc: list[nn.Module] = [nn.Conv2d(3 * s * 4, w[0], 3, padding=1)]
        for i in range(levels):
            enc += [_Res(w[i]) for _ in range(cfg.blocks)]
            if i + 1 < levels:
                enc.append(nn.Conv2d(w[i], w[i + 1], 4, stride=2, padding=1))
        enc += [nn.SiLU(), nn.Conv2d(w[-1], c, 1)]
        self.enc = nn.Sequential(*enc)
        # ---- decoder ---------------------------------------------------------------------
        k = cfg.temporal_context
        dec: list[nn.Module] = [nn.Conv2d(c * (k + 1), w[-1], 3, padding=1)]
        for i in reversed(range(levels)):
            dec += [_Res(w[i]) for _ in range(cfg.blocks)]
            if i > 0:
                dec.append(_Up(w[i], w[i - 1]))
        dec += [nn.SiLU(), nn.Conv2d(w[0], 3 * s * 4, 3, padding=1)]
        self.dec = nn.Sequential(*dec)
        # the reference joins after the last upsampling (the decoder's half-resolution level)
        self.inject_at = max(i for i, m in enumerate(dec) if isinstance(m, _Up)) + 1
        self.attend_at = self.inject_at - 1  # reference attention: just before that upsampling
        self.ref_enc: nn.Sequential | None = None
        self.ref_out: nn.Conv2d | None = None
        self.ref_global: nn.Linear | None = None
        if cfg.reference:
            ref: list[nn.Module] = [nn.Conv2d(3 * 4, w[0], 3, padding=1)]
            ref += [_Res(w[0]) for _ in range(2)]
            self.ref_enc = nn.Sequential(*ref, nn.SiLU())
            self.ref_out = nn.Conv2d(w[0], w[0], 1)
            # a summary of the whole picture (max over positions, so a crop and a full frame
            # read alike) added everywhere: what no local feature finds under a head that
            # swayed a few pixels since the picture, an iris's colour say
            self.ref_global = nn.Linear(w[0], w[0])
        self.ref_down: nn.Sequential | None = None
        self.ref_attn: _ReferenceAttention | None = None
        if cfg.reference_attention:
            assert cfg.reference, "reference_attention reads the reference: set reference too"
            self.ref_down = nn.Sequential(nn.Conv2d(w[0], w[1], 4, stride=2, padding=1), nn.SiLU())
            self.ref_attn = _ReferenceAttention(
                w[1], w[1], cfg.reference_heads, cfg.reference_dim, cfg.reference_window
            )
        self.register_buffer("latent_mean", torch.zeros(c))
        self.register_buffer("latent_std", torch.ones(c))
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Default conv init, but each residual branch starts near identity (second conv
        scaled down) so the deep stack trains stably without normalisation layers."""
        for m in self.modules():
            if isinstance(m, _Res):
                with torch.no_grad():
                    m.c2.weight.mul_(0.1)
                    assert m.c2.bias is not None
                    m.c2.bias.zero_()
        attn_out = None if self.ref_attn is None else self.ref_attn.out
        for out in (self.ref_out, self.ref_global, attn_out):  # no reference path at first
            if out is not None:  # (the decoder as it was)
                nn.init.zeros_(out.weight)
                assert out.bias is not None
                nn.init.zeros_(out.bias)

    # ---- encoder -----------------------------------------------------------------------------
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, H, W, 3) uint8 or float in [0, 1] → (B, F, C, h, w) normalised latents."""
        if frames.dtype == torch.uint8:
            frames = frames.float() / 255.0
        b, t, h, w, _ = frames.shape
        s = self.latent.video_time_stride
        assert t % s == 0, f"frame count {t} must be a multiple of video_time_stride={s}"
        x = frames.mul(2).sub(1).reshape(b * t // s, s, h, w, 3)  # (B·F, s, H, W, 3)
        x = x.permute(0, 1, 4, 2, 3).reshape(b * t // s, s * 3, h, w)  # (B·F, 3s, H, W)
        z = self.enc(F.pixel_unshuffle(x, 2))  # (B·F, C, h, w)
        z = (z - self.latent_mean.view(1, -1, 1, 1)) / self.latent_std.view(1, -1, 1, 1)
        return z.view(b, t // s, *z.shape[1:])  # (B, F, C, h, w)

    # ---- decoder -----------------------------------------------------------------------------
    def reference_features(self, frame: torch.Tensor) -> Reference:
        """(B, H, W, 3) uint8 or float in [0, 1] reference frames → what the decoder reads of
        them (computed once per stream): features added at its half-resolution level, and
        with ``cfg.reference_attention`` the keys and values its quarter-resolution level
        looks up."""
        assert self.ref_enc is not None and self.ref_out is not None, "cfg.reference is off"
        assert self.ref_global is not None
        if frame.dtype == torch.uint8:
            frame = frame.float() / 255.0
        x = frame.mul(2).sub(1).permute(0, 3, 1, 2)  # (B, 3, H, W)
        f = self.ref_enc(F.pixel_unshuffle(x, 2))  # (B, w₀, H/2, W/2)
        summary = self.ref_global(f.amax((2, 3)))  # (B, w₀)
        add = self.ref_out(f) + summary[:, :, None, None]  # (B, w₀, H/2, W/2)
        if self.ref_down is None or self.ref_attn is None:
            return Reference(add)
        return Reference(add, *self.ref_attn.memory(self.ref_down(f)))  # per H/4·W/4 position

    def decode(
        self,
        z: torch.Tensor,
        history: torch.Tensor | None = None,
        reference: Reference | None = None,
    ) -> torch.Tensor:
        """(B, F, C, h, w) normalised latents (+ (B, k, C, h, w) earlier ones, zeros if None;
        + the portrait's :meth:`reference_features`, none if None) → (B, F·s, H, W, 3) float
        in [0, 1] (unclamped)."""
        b, f, c, h, w = z.shape
        k, s = self.cfg.temporal_context, self.latent.video_time_stride
        if history is None:
            history = z.new_zeros(b, k, c, h, w)
        seq = torch.cat([history, z], 1)  # (B, k+F, C, h, w)
        seq = seq * self.latent_std.view(1, 1, -1, 1, 1) + self.latent_mean.view(1, 1, -1, 1, 1)
        # stack each latent frame with its k predecessors, oldest first: (B·F, C·(k+1), h, w)
        ctx = torch.cat([seq[:, i : i + f] for i in range(k + 1)], 2).flatten(0, 1)
        if ctx.device.type == "cpu":  # oneDNN's convolutions are ~25 % faster on NHWC
            ctx = ctx.contiguous(memory_format=torch.channels_last)
        x = self.dec[: self.attend_at](ctx)  # (B·F, w₁, H/4, W/4)
        if reference is not None and reference.keys is not None and self.ref_attn is not None:
            assert reference.values is not None and reference.offsets is not None
            x = x + self.ref_attn(x, reference.keys, reference.values, reference.offsets)
        x = self.dec[self.attend_at : self.inject_at](x)  # (B·F, w₀, H/2, W/2)
        if reference is not None:  # the same portrait for each of a stream's latent frames
            x = (x.view(b, f, *x.shape[1:]) + reference.add[:, None]).flatten(0, 1)
        x = F.pixel_shuffle(self.dec[self.inject_at :](x), 2)  # (B·F, 3s, H, W)
        x = x.view(b, f, s, 3, *x.shape[-2:]).permute(0, 1, 2, 4, 5, 3)  # (B, F, s, H, W, 3)
        return x.reshape(b, f * s, *x.shape[3:]).add(1).mul(0.5)  # (B, T, H, W, 3)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Float frames in [0, 1] → uint8 numpy."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


class StreamingVideoDecoder:
    """The :class:`~unison_stream.codecs.VideoDecoder` protocol over a trained :class:`VideoAE`.

    Carries the last ``temporal_context`` latent frames of each stream, so decoding chunk by
    chunk gives the same frames as decoding the whole stream at once.
    """

    def __init__(self, ae: VideoAE) -> None:
        # channels-last weights to match ``decode``'s NHWC input on CPU (same numbers, faster)
        self.ae = ae.eval()
        self.ae.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # Module.to accepts it; the stubs' overloads omit it
        self.history: torch.Tensor | None = None  # (B, k, C, h, w)
        self.reference: Reference | None = None  # what the decoder reads of the portrait

    def reset(self) -> None:
        """Forget the carried latent frames (a new stream); the reference stays."""
        self.history = None

    @torch.inference_mode()
    def set_reference(self, frame: np.ndarray | None) -> None:
        """The person's picture ``(H, W, 3)`` uint8 (or ``(B, H, W, 3)``) for a decoder that
        reads one (``cfg.reference``); ignored by one that does not; None forgets it."""
        if frame is None or self.ae.ref_enc is None:
            self.reference = None
            return
        x = torch.from_numpy(np.array(frame, dtype=np.uint8))  # a copy (it may be read-only)
        self.reference = self.ae.reference_features(x[None] if x.dim() == 3 else x).float()

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """(B, F, C, h, w) → (B, F·s, H, W, 3) uint8."""
        z = latents.float()
        if self.history is not None and self.history.shape[0] != z.shape[0]:
            raise ValueError(f"batch changed from {self.history.shape[0]} to {z.shape[0]}")
        ref = self.reference
        if ref is not None and ref.add.shape[0] != z.shape[0]:
            raise ValueError(
                f"reference for batch {ref.add.shape[0]}, latents of batch {z.shape[0]}"
            )
        out = self.ae.decode(z, self.history, ref)
        k = self.ae.cfg.temporal_context
        hist = z if self.history is None else torch.cat([self.history, z], 1)
        if hist.shape[1] < k:  # fewer frames than the context so far: pad with zeros
            pad = hist.new_zeros(hist.shape[0], k - hist.shape[1], *hist.shape[2:])
            hist = torch.cat([pad, hist], 1)
        self.history = hist[:, hist.shape[1] - k :].clone()
        return to_uint8(out)


class VideoEncoderStream:
    """Frames → latents for the training pipeline and the audio-driven mode (stateless:
    each latent frame depends only on its own frames)."""

    def __init__(self, ae: VideoAE) -> None:
        self.ae = ae.eval()

    def reset(self) -> None:
        """Stateless."""

    @torch.inference_mode()
    def encode(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, T, H, W, 3) uint8 → (B, T/s, C, h, w) float32."""
        x = torch.as_tensor(frames)
        return self.ae.encode(x)
