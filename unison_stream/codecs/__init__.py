"""Latent codecs: streaming decoders from model latents to frames and waveforms, and encoders.

The engine only needs the :class:`VideoDecoder` / :class:`AudioDecoder` protocols below;
:func:`load_decoders` returns the trained codecs (``video.py``, ``audio.py``, weights bundled
in ``weights/``) when their weights are present and fit the latent config, and the fixed
preview decoders (``preview.py``) otherwise; a log line says which. The training pipeline and
the audio-driven mode use :func:`load_encoders` (:class:`VideoEncoder` / :class:`AudioEncoder`).
See ``docs/codecs.md``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from unison_stream.config import UnisonConfig

__all__ = [
    "AudioDecoder",
    "AudioEncoder",
    "CodecUnavailableError",
    "VideoDecoder",
    "VideoEncoder",
    "load_decoders",
    "load_encoders",
    "silence_latent",
]

log = logging.getLogger(__name__)


class CodecUnavailableError(RuntimeError):
    """No trained codec weights fit the configured latent shapes (encoders need them)."""


class VideoDecoder(Protocol):
    """Chunk-by-chunk video decoding with carried state (no seams between chunks)."""

    def reset(self) -> None:
        """Forget carried state (a new stream); a reference frame set earlier stays."""

    def set_reference(self, frame: np.ndarray | None) -> None:
        """The person's picture ``(H, W, 3)`` uint8, for a decoder that copies identity
        details from it (``VideoCodecConfig.reference``); others ignore it."""

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


class VideoEncoder(Protocol):
    """Frames → latents (each latent frame depends only on its own frames: causal)."""

    def reset(self) -> None:
        """Forget carried state (a new stream)."""

    def encode(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, F·time_stride, H, W, 3) uint8 → (B, F, C, h, w) float32 latents."""
        ...


class AudioEncoder(Protocol):
    """Waveform → latents of one sub-stream (speech or SFX; one codec serves both)."""

    def reset(self) -> None:
        """Forget carried state (a new stream)."""

    def encode(self, wave: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, S) float32 at the media rate → (B, ⌈S/hop⌉, Ca) float32 latents."""
        ...


def load_decoders(
    cfg: UnisonConfig, batch: int = 1, *, weights_dir: Path | None = None
) -> tuple[VideoDecoder, AudioDecoder, AudioDecoder]:
    """Decoders for video, speech and SFX latents, for ``batch`` streams.

    Each trained codec is used when its weights are present and were trained for
    ``cfg.latent``; otherwise that decoder falls back to the preview one.
    """
    from unison_stream.codecs import weights
    from unison_stream.codecs.audio import AudioAE, StreamingAudioDecoder
    from unison_stream.codecs.preview import PreviewAudioDecoder, PreviewVideoDecoder
    from unison_stream.codecs.video import StreamingVideoDecoder, VideoAE

    vae = weights.load("video", cfg.latent, cfg.media, weights_dir)
    aae = weights.load("audio", cfg.latent, cfg.media, weights_dir)
    video: VideoDecoder
    speech: AudioDecoder
    sfx: AudioDecoder
    video = StreamingVideoDecoder(vae) if isinstance(vae, VideoAE) else PreviewVideoDecoder(cfg)
    if isinstance(aae, AudioAE):
        speech, sfx = StreamingAudioDecoder(aae), StreamingAudioDecoder(aae)
    else:
        speech, sfx = PreviewAudioDecoder(cfg, batch), PreviewAudioDecoder(cfg, batch, seed=1)
    log.info(
        "decoders: video=%s, audio=%s",
        "trained" if vae is not None else "preview (no fitting weights)",
        "trained" if aae is not None else "preview (no fitting weights)",
    )
    return video, speech, sfx


def load_encoders(
    cfg: UnisonConfig, *, weights_dir: Path | None = None
) -> tuple[VideoEncoder, AudioEncoder]:
    """The trained video and audio encoders; raises :class:`CodecUnavailableError` without
    fitting weights (there is no preview encoder: latents must match a real decoder)."""
    from unison_stream.codecs import weights
    from unison_stream.codecs.audio import AudioAE, AudioEncoderStream
    from unison_stream.codecs.video import VideoAE, VideoEncoderStream

    vae = weights.load("video", cfg.latent, cfg.media, weights_dir)
    aae = weights.load("audio", cfg.latent, cfg.media, weights_dir)
    if not isinstance(vae, VideoAE) or not isinstance(aae, AudioAE):
        missing = [k for k, m in (("video", vae), ("audio", aae)) if m is None]
        raise CodecUnavailableError(
            f"no trained {' and '.join(missing)} codec weights fit the latent config in "
            f"{weights_dir or weights.WEIGHTS_DIR}; run `unison-stream train codec`"
        )
    return VideoEncoderStream(vae), AudioEncoderStream(aae)


def silence_latent(encoder: AudioEncoder, cfg: UnisonConfig) -> torch.Tensor:
    """(Ca,) latent of a silent audio frame: training's reference chunk and the engine's sink.

    Eight frames of zeros are encoded and the middle ones averaged (away from edge effects).
    """
    hop = round(cfg.media.sample_rate / cfg.latent.audio_hz)
    with torch.inference_mode():
        encoder.reset()
        lat = encoder.encode(np.zeros((1, 8 * hop), np.float32))[0]  # (8, Ca)
    return lat[2:-2].mean(0).float().cpu()
