"""Fixed preview decoders: show what the model generates before trained codecs exist.

- video: three latent channels as RGB (sigmoid), bilinearly upsampled to the frame size and
  repeated ``time_stride`` times;
- audio: each latent channel drives the loudness of one sine partial, phases carried across
  chunks so joins are click-free.

They have no learned weights and no quality claim: they exist so every command runs end to end.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from unison_stream.config import UnisonConfig

__all__ = ["PreviewAudioDecoder", "PreviewVideoDecoder"]


class PreviewVideoDecoder:
    def __init__(self, cfg: UnisonConfig) -> None:
        self.cfg = cfg

    def reset(self) -> None:
        """Stateless."""

    def set_reference(self, frame: np.ndarray | None) -> None:
        """Ignored: the preview reads latents only."""

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """(B, F, C, h, w) → (B, F·stride, H, W, 3) uint8."""
        b, f = latents.shape[:2]
        rgb = torch.sigmoid(latents[:, :, :3].float()).flatten(0, 1)  # (B·F, 3, h, w)
        up = F.interpolate(rgb, size=(self.cfg.media.height, self.cfg.media.width), mode="bilinear")
        up = up.view(b, f, 3, *up.shape[-2:]).repeat_interleave(
            self.cfg.latent.video_time_stride, dim=1
        )
        return (up.permute(0, 1, 3, 4, 2).clamp(0, 1) * 255).round().byte().numpy()


class PreviewAudioDecoder:
    def __init__(self, cfg: UnisonConfig, batch: int = 1, seed: int = 0) -> None:
        self.cfg = cfg
        c = cfg.latent.audio_channels
        lo, hi = (110.0, 3520.0) if seed == 0 else (220.0, 7040.0)  # speech lower, SFX higher
        self.freqs = np.geomspace(lo, hi, c)  # Hz, one partial per channel
        self.batch = batch
        self.phase = np.zeros((batch, c))

    def reset(self) -> None:
        self.phase[:] = 0.0

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """(B, N, C) → (B, N·hop) float32, phases carried between calls."""
        sr = self.cfg.media.sample_rate
        hop = round(sr / self.cfg.latent.audio_hz)
        amp = torch.sigmoid(latents.float()).numpy() / latents.shape[-1]  # (B, N, C)
        amp = np.repeat(amp, hop, axis=1)  # (B, N·hop, C)
        steps = 2 * math.pi * self.freqs / sr
        phases = self.phase[:, None, :] + np.arange(1, amp.shape[1] + 1)[None, :, None] * steps
        self.phase = phases[:, -1] % (2 * math.pi)
        return (0.4 * (amp * np.sin(phases)).sum(-1)).astype(np.float32)
