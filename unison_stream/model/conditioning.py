"""What the model is conditioned on, and the timed track that carries the transcript.

Conditioning for one batch (``docs/model.md``, "A block" and "Text"):

- caption tokens (all-MiniLM-L6-v2 token embeddings) and the pooled caption ``c_a``;
- the pooled transcript ``c_s`` (for the SCG gates);
- the timed track: phoneme and event tokens with start/end times, so each chunk attends to the
  words and events that fall in its span;
- reference-identity tokens: the patchified video latent of a reference frame.

In streaming, :meth:`TimedTrack.window` cuts the part of a track a chunk can see and moves its
times to be relative to the chunk's start.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from unison_stream.vocab import FIRST_EVENT_ID

__all__ = ["Conditioning", "TimedTrack"]


@dataclass(frozen=True)
class TimedTrack:
    """A timed phoneme/event track for one utterance or stream: ids and times in seconds."""

    ids: tuple[int, ...] = ()
    start: tuple[float, ...] = ()
    end: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not len(self.ids) == len(self.start) == len(self.end):
            raise ValueError("TimedTrack: ids, start and end must have the same length")
        if any(e < s for s, e in zip(self.start, self.end, strict=True)):
            raise ValueError("TimedTrack: every token must end at or after its start")

    def __len__(self) -> int:
        return len(self.ids)

    def shifted(self, offset_s: float) -> TimedTrack:
        """The same track starting ``offset_s`` later."""
        return TimedTrack(
            self.ids,
            tuple(s + offset_s for s in self.start),
            tuple(e + offset_s for e in self.end),
        )

    def window(self, t0: float, t1: float, margin_s: float) -> TimedTrack:
        """Tokens overlapping [t0 − margin, t1 + margin], with times relative to t0."""
        keep = [
            i
            for i in range(len(self))
            if self.end[i] >= t0 - margin_s and self.start[i] <= t1 + margin_s
        ]
        return TimedTrack(
            tuple(self.ids[i] for i in keep),
            tuple(self.start[i] - t0 for i in keep),
            tuple(self.end[i] - t0 for i in keep),
        )


@dataclass
class Conditioning:
    """Conditioning tensors for a batch of B streams (shapes in the field comments)."""

    caption_tokens: Tensor  # (B, Lc, text_dim)
    caption_mask: Tensor  # (B, Lc) bool
    caption_pooled: Tensor  # (B, text_dim): c_a
    transcript_pooled: Tensor  # (B, text_dim): c_s
    track_ids: Tensor  # (B, L) long
    track_start: Tensor  # (B, L) seconds from the span start
    track_end: Tensor  # (B, L)
    track_mask: Tensor  # (B, L) bool
    identity: Tensor  # (B, P, video_token_dim): reference frame codec latents, patchified

    @classmethod
    def build(
        cls,
        *,
        caption_tokens: Tensor,
        caption_mask: Tensor,
        caption_pooled: Tensor,
        transcript_pooled: Tensor,
        identity: Tensor,
        tracks: list[TimedTrack] | None = None,
    ) -> Conditioning:
        """Conditioning with the given tracks (one per batch element; None: no track)."""
        b, dev = caption_tokens.shape[0], caption_tokens.device
        cond = cls(
            caption_tokens=caption_tokens,
            caption_mask=caption_mask,
            caption_pooled=caption_pooled,
            transcript_pooled=transcript_pooled,
            track_ids=torch.zeros(b, 1, dtype=torch.long, device=dev),
            track_start=torch.zeros(b, 1, device=dev),
            track_end=torch.zeros(b, 1, device=dev),
            track_mask=torch.zeros(b, 1, dtype=torch.bool, device=dev),
            identity=identity,
        )
        return cond.with_tracks(tracks) if tracks is not None else cond

    @classmethod
    def random(
        cls,
        batch: int,
        *,
        text_dim: int,
        caption_len: int,
        identity_shape: tuple[int, int],
        generator: torch.Generator,
        tracks: list[TimedTrack] | None = None,
    ) -> Conditioning:
        """Random text embeddings and identity tokens (P, D): for tests and benchmarks."""
        g = generator
        return cls.build(
            caption_tokens=torch.randn(batch, caption_len, text_dim, generator=g),
            caption_mask=torch.ones(batch, caption_len, dtype=torch.bool),
            caption_pooled=torch.randn(batch, text_dim, generator=g),
            transcript_pooled=torch.randn(batch, text_dim, generator=g),
            identity=torch.randn(batch, *identity_shape, generator=g),
            tracks=tracks,
        )

    @property
    def batch(self) -> int:
        return int(self.caption_tokens.shape[0])

    def with_tracks(self, tracks: list[TimedTrack]) -> Conditioning:
        """A copy whose track tensors hold ``tracks`` (one per batch element, padded)."""
        assert len(tracks) == self.batch, f"{len(tracks)} tracks for a batch of {self.batch}"
        n = max(1, max(len(t) for t in tracks))
        dev = self.caption_tokens.device
        ids = torch.zeros(self.batch, n, dtype=torch.long, device=dev)
        start = torch.zeros(self.batch, n, device=dev)
        end = torch.zeros(self.batch, n, device=dev)
        mask = torch.zeros(self.batch, n, dtype=torch.bool, device=dev)
        for b, t in enumerate(tracks):
            k = len(t)
            ids[b, :k] = torch.tensor(t.ids, dtype=torch.long)
            start[b, :k] = torch.tensor(t.start)
            end[b, :k] = torch.tensor(t.end)
            mask[b, :k] = True
        return replace(self, track_ids=ids, track_start=start, track_end=end, track_mask=mask)

    def event_mask(self) -> Tensor:
        """(B, L) bool: the track tokens that are (unmasked) sound events."""
        return (self.track_ids >= FIRST_EVENT_ID) & self.track_mask

    def to(self, device: torch.device | str) -> Conditioning:
        return Conditioning(**{k: v.to(device) for k, v in vars(self).items()})
