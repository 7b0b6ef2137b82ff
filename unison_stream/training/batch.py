"""Training batches and batch sources.

A training sequence is ``seq_chunks`` chunks of latents; chunk 0 is the reference chunk (the
identity frame, silence), given clean, which the model sees as the cache sink. Track times are
seconds from the sequence start.

Sources yield :class:`TrainBatch` and expose ``state()``/``restore()`` so training resumes
exactly. :class:`RandomLatentSource` (random latents) drives smoke tests and benchmarks;
:class:`LatentShardSource` reads latents precomputed from the synthetic world by
``unison_stream.training.latents``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from unison_stream.config import UnisonConfig
from unison_stream.model.conditioning import Conditioning, TimedTrack

__all__ = ["BatchSource", "RandomLatentSource", "TrainBatch"]


@dataclass
class TrainBatch:
    video: Tensor  # (B, K·Fc, C, h, w) video latents, chunk 0 = reference
    audio: Tensor  # (B, S, K·Nc, Ca): [speech, sfx] latents
    cond: Conditioning  # track times from the sequence start
    # the track the speech front end reads off each sequence's speech (what serving gives the
    # audio-driven mode), beside the world's true track; None where the source has none
    heard: list[TimedTrack] | None = None
    tracks: list[TimedTrack] | None = None  # the true tracks ``cond`` was built with

    def to(self, device: torch.device | str) -> TrainBatch:
        v, a, c = self.video.to(device), self.audio.to(device), self.cond.to(device)
        return TrainBatch(v, a, c, self.heard, self.tracks)

    def hearing(self, rows: Tensor) -> TrainBatch:
        """This batch with the heard track in the rows where ``rows`` (B,) bool is set."""
        if self.heard is None or self.tracks is None or not bool(rows.any()):
            return self
        pairs = zip(self.heard, self.tracks, rows, strict=True)
        tracks = [h if bool(r) else t for h, t, r in pairs]
        return TrainBatch(self.video, self.audio, self.cond.with_tracks(tracks), self.heard, tracks)


class BatchSource(Protocol):
    def next_batch(self) -> TrainBatch: ...

    def state(self) -> dict[str, Tensor]: ...

    def restore(self, state: dict[str, Tensor]) -> None: ...


class RandomLatentSource:
    """Random latents with the real shapes, plus a random phoneme track (deterministic by seed).

    Video latents carry a smooth per-sequence mean so the task is learnable (a test checks that
    the loss falls); audio latents are tied to the track ids so the streams share structure.
    """

    def __init__(
        self, cfg: UnisonConfig, *, batch: int, chunks: int, seed: int = 0, fixed: bool = False
    ) -> None:
        self.cfg, self.batch, self.chunks, self.fixed = cfg, batch, chunks, fixed
        self.g = torch.Generator().manual_seed(seed)
        self._first: TrainBatch | None = None

    def state(self) -> dict[str, Tensor]:
        return {"rng": self.g.get_state()}

    def restore(self, state: dict[str, Tensor]) -> None:
        self.g.set_state(state["rng"])

    def next_batch(self) -> TrainBatch:
        """A new random batch (with ``fixed``: the same batch every time, to test overfitting)."""
        if self.fixed and self._first is not None:
            return self._first
        self._first = self._make()
        return self._first

    def _make(self) -> TrainBatch:
        cfg, b, k, g = self.cfg, self.batch, self.chunks, self.g
        fc, nc = cfg.stream.chunk_latent_frames, cfg.audio_frames_per_chunk()
        h, w = cfg.latent.latent_hw(cfg.media)
        cv, ca, s = cfg.latent.video_channels, cfg.latent.audio_channels, cfg.audio_streams()
        base = torch.randn(b, 1, cv, h, w, generator=g)
        video = base.repeat(1, k * fc, 1, 1, 1)
        ids = torch.randint(3, 60, (b, k * nc), generator=g)
        table = torch.linspace(-1, 1, ca)
        # the "mouth": a centre patch of every frame follows the phoneme at the frame's time
        per_frame = nc // fc  # audio latents per video latent frame
        mouth = torch.sin(
            ids[:, ::per_frame, None].float() * torch.linspace(-1, 1, cv)
        )  # (B, F, Cv)
        video[:, :, :, h // 2 - 2 : h // 2 + 2, w // 2 - 2 : w // 2 + 2] += mouth[..., None, None]
        audio = torch.sin(ids[:, None, :, None].float() * table).repeat(1, s, 1, 1)
        dt = 1 / cfg.latent.audio_hz
        tracks = [
            TimedTrack(
                tuple(int(i) for i in ids[j]),
                tuple(n * dt for n in range(k * nc)),
                tuple((n + 1) * dt for n in range(k * nc)),
            )
            for j in range(b)
        ]
        from unison_stream.model.dit import patchify

        cond = Conditioning.random(
            b,
            text_dim=cfg.model.text_dim,
            caption_len=6,
            identity_shape=(cfg.tokens_per_frame(), cfg.latent.video_token_dim()),
            generator=g,
            tracks=tracks,
        )
        cond.identity = patchify(base, cfg.latent.patch)[:, 0]  # the reference frame itself
        video[:, :fc] = base  # the reference chunk shows the identity frame
        audio[:, :, :nc] = 0.0  # … in silence
        return TrainBatch(video, audio, cond)
