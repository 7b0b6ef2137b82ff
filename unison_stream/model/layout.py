"""Token layout of a span of chunks: media times, chunk ids and every attention mask.

One span is either a whole training sequence (``n_chunks`` chunks, chunk 0 being the sink) or
the single chunk being generated in streaming mode. The rules are written once here so that
training (full sequence + mask) and streaming (one chunk + cache) cannot drift apart:

- self-attention: bidirectional inside a chunk; a chunk sees the previous ``W`` chunks (never
  chunk 0 as a timed chunk) and the sink = chunk 0 as position-free keys (``docs/model.md``);
- Bi-ACA: speech ↔ SFX inside the chunk;
- audio ↔ video: inside the chunk, video latent frames within ±(av_window_frames − 1)/2 of the
  frame that holds the audio token (3 latent frames, centre kept; ``docs/model.md`` "A block");
- conditioning: track tokens whose span lies within ``track_window_s`` of the query's time,
  plus every caption and identity token.

Times are in seconds from the span's start; token order is frame-major for video
(Tv = F·P) and stream-major for audio (Ta = S·N).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from unison_stream.config import UnisonConfig

__all__ = ["Layout"]


@dataclass
class Layout:
    """Times, chunk ids and masks for ``n_chunks`` chunks (see module docstring)."""

    n_chunks: int
    frames_v: int  # F: video latent frames
    frames_a: int  # N: audio latent frames per sub-stream
    streams: int  # S
    times_v: Tensor  # (F·P,) token times
    times_a: Tensor  # (S·N,) token times
    chunk_v: Tensor  # (F·P,) chunk id per video token
    chunk_a: Tensor  # (S·N,)
    biaca_mask: Tensor  # (1, N, N)
    av_mask_v: Tensor  # (1, F·P, S·N)
    av_mask_a: Tensor  # (1, S·N, F·P)
    av_frames: Tensor  # (F, N) bool: video frame ↔ audio frame in window (for noise gates)

    @staticmethod
    def build(cfg: UnisonConfig, n_chunks: int, device: torch.device | str = "cpu") -> Layout:
        fc, p = cfg.stream.chunk_latent_frames, cfg.tokens_per_frame()
        nc, s = cfg.audio_frames_per_chunk(), cfg.audio_streams()
        fps_v, hz_a = cfg.video_latent_fps(), cfg.latent.audio_hz
        f, n = n_chunks * fc, n_chunks * nc
        fi = torch.arange(f, device=device)
        ni = torch.arange(n, device=device)
        ft_v = (fi + 0.5) / fps_v  # frame centres (F,)
        ft_a = (ni + 0.5) / hz_a  # (N,)
        ch_fv, ch_na = fi // fc, ni // nc
        # video frame holding each audio frame, then the ±r window inside the same chunk
        holder = torch.floor(ft_a * fps_v + 1e-6).long()  # (N,)
        r = (cfg.model.av_window_frames - 1) // 2
        av_frames = ((fi[:, None] - holder[None, :]).abs() <= r) & (
            ch_fv[:, None] == ch_na[None, :]
        )
        same_a = ch_na[:, None] == ch_na[None, :]
        av_tok = av_frames.repeat_interleave(p, dim=0).repeat(1, s)  # (F·P, S·N)
        return Layout(
            n_chunks=n_chunks,
            frames_v=f,
            frames_a=n,
            streams=s,
            times_v=ft_v.repeat_interleave(p),
            times_a=ft_a.repeat(s),
            chunk_v=ch_fv.repeat_interleave(p),
            chunk_a=ch_na.repeat(s),
            biaca_mask=same_a[None],
            av_mask_v=av_tok[None],
            av_mask_a=av_tok.T[None],
            av_frames=av_frames,
        )

    # ---- self-attention masks -----------------------------------------------------------
    def full_self_mask(self, chunk: Tensor, window: int) -> tuple[Tensor, Tensor]:
        """Training mode: mask (1, T, T + T0) over [own tokens (timed), sink copy (global)].

        Returns the mask and the indices of the sink tokens (chunk 0) among the own tokens.
        """
        cq, ck = chunk[:, None], chunk[None, :]
        timed = (cq == ck) | ((ck >= 1) & (ck < cq) & (ck >= cq - window))
        sink_idx = torch.nonzero(chunk == 0).squeeze(1)
        sink = (chunk >= 1)[:, None].expand(-1, sink_idx.numel())
        return torch.cat((timed, sink), dim=1)[None], sink_idx

    @staticmethod
    def cached_self_mask(own: int, cached_valid: Tensor) -> Tensor:
        """Streaming mode: the chunk sees all its own tokens and every valid cached key."""
        row = torch.cat(
            (torch.ones(own, dtype=torch.bool, device=cached_valid.device), cached_valid)
        )
        return row[None, None, :].expand(1, own, -1)

    # ---- conditioning masks -------------------------------------------------------------
    @staticmethod
    def cond_mask(
        q_times: Tensor,
        track_start: Tensor,
        track_end: Tensor,
        track_mask: Tensor,
        global_mask: Tensor,
        margin_s: float,
    ) -> Tensor:
        """(B, Tq, L + G): track tokens near the query in time, plus all valid global tokens.

        q_times (Tq,); track_* (B, L) seconds from the span start; masks (B, L) / (B, G).
        """
        centre = (track_start + track_end) / 2
        half = (track_end - track_start).clamp_min(0) / 2
        gap = (q_times[None, :, None] - centre[:, None, :]).abs() - half[:, None, :] - margin_s
        # Snapped to 0.1 ms: training (absolute times) and streaming (times relative to the
        # chunk) round differently, and an exact tie must fall the same way in both.
        near = torch.round(gap * 1e4) <= 0
        timed = near & track_mask[:, None, :]
        glob = global_mask[:, None, :].expand(-1, q_times.numel(), -1)
        return torch.cat((timed, glob), dim=2)

    # ---- noise level of the other stream, local to each frame -------------------------
    def local_other_t(self, t_v: Tensor, t_a: Tensor) -> tuple[Tensor, Tensor]:
        """Mean noise level of the other stream inside each frame's window.

        t_v (B, F), t_a (B, S, N) → (audio level per video frame (B, F),
        video level per audio token (B, S·N)).
        """
        w = self.av_frames.to(t_v.dtype)  # (F, N)
        ta = t_a.float().mean(dim=1)  # (B, N)
        a_for_v = (ta @ w.T) / w.sum(1).clamp_min(1)  # (B, F)
        v_for_a = (t_v.float() @ w) / w.sum(0).clamp_min(1)  # (B, N)
        return a_for_v, v_for_a.repeat(1, self.streams)
