"""CausalGenerator: chunk-by-chunk generation with the rolling KV cache (``docs/model.md``).

``CausalGenerator.step(plan_slice) -> AVChunk`` is synchronous and does no I/O: the engine
(a later layer) runs it off the event loop. Per chunk it

1. draws noise for the chunk's video and audio latents,
2. runs the sampler (≤ 4 steps, optional cross-modal forcing lead, clean modalities held),
   every model call reading the cache,
3. commits the chunk to the cache: one extra pass at ``t = 0`` over the clean result
   (``stream.commit = "clean_pass"``) or the K/V of the last solver call (``"last_step"``).

The first chunk committed becomes the cache's permanent sink. To make the reference identity
the sink, give the first plan slice clean video (the reference latents) and clean audio: such a
chunk costs only the commit pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from unison_stream.config import UnisonConfig
from unison_stream.model.conditioning import Conditioning
from unison_stream.model.dit import UnisonDiT, patchify, unpatchify
from unison_stream.model.kv_cache import RollingKVCache
from unison_stream.model.sampler import Sampler

__all__ = [
    "AVChunk",
    "CausalGenerator",
    "ChunkCancelled",
    "PlanSlice",
    "guidance_condition",
    "guided_call",
]


class ChunkCancelled(Exception):
    """``step`` was abandoned before anything was written to the cache (see ``cancel``)."""


@dataclass
class PlanSlice:
    """What one chunk must contain, for B streams (track times relative to the chunk start)."""

    cond: Conditioning
    clean_video: Tensor | None = None  # (B, Fc, C, h, w) latents held at t = 0
    clean_audio: Tensor | None = None  # (B, S, Nc, Ca) latents held at t = 0 …
    clean_audio_mask: tuple[bool, ...] | None = None  # … for these sub-streams (default all)
    lead: str | None = None  # "none" | "audio" | "video"; None → config default
    lead_steps: int | None = None


@dataclass
class AVChunk:
    """One generated chunk of latents on the stream's media clock."""

    index: int
    start_s: float
    duration_s: float
    video: Tensor  # (B, Fc, C, h, w) video latent frames (codec space)
    audio: Tensor  # (B, S, Nc, Ca) codec latents: S = 2 → [speech, sfx]; S = 1 → the mix

    @property
    def speech(self) -> Tensor:
        """(B, Nc, Ca) speech latents (the mix when the speech/SFX split is ablated)."""
        return self.audio[:, 0]

    @property
    def sfx(self) -> Tensor | None:
        """(B, Nc, Ca) SFX latents, or None without the split."""
        return self.audio[:, 1] if self.audio.shape[1] == 2 else None


def _without_events(cond: Conditioning, chunk_s: float) -> Conditioning | None:
    """``cond`` with its event tokens masked out, or None when no event starts inside the
    chunk ``[0, chunk_s)`` (track times are chunk-relative): only the chunk holding an
    effect's attack pays for guidance."""
    is_event = cond.event_mask()  # (B, L)
    starts_here = is_event & (cond.track_start >= 0) & (cond.track_start < chunk_s)
    if not bool(starts_here.any()):
        return None
    return replace(cond, track_mask=cond.track_mask & ~is_event)


def guidance_condition(cfg: UnisonConfig, cond: Conditioning) -> Conditioning | None:
    """The unguided condition of event guidance for this chunk, or None when the chunk is not
    guided (guidance off in ``cfg.sampler``, or no event starts in the chunk)."""
    g_sfx, g_video = cfg.sampler.event_guidance, cfg.sampler.event_guidance_video
    guided = (g_sfx != 1.0 and cfg.audio_streams() == 2) or g_video != 1.0
    return _without_events(cond, cfg.chunk_seconds()) if guided else None


def guided_call(
    model: UnisonDiT,
    xv: Tensor,
    xa: Tensor,
    tv: Tensor,
    ta: Tensor,
    cond: Conditioning,
    bare: Conditioning | None,
    *,
    cache: RollingKVCache,
    chunk_index: int,
    write: bool,
) -> tuple[Tensor, Tensor]:
    """One solver call of a chunk with event guidance (``docs/model.md``): velocities
    (B, F, P, C) and (B, S, N, Ca).

    With ``bare`` (the condition without its event tokens) a read-only call precedes the
    conditional one and the SFX (video) velocity is pushed ``sampler.event_guidance``
    (``event_guidance_video``) times away from it; only the conditional call may ``write``.
    Steps below ``sampler.event_guidance_min_t`` are not guided (no extra call).
    """
    s = model.cfg.sampler
    g_sfx, g_video = s.event_guidance, s.event_guidance_video
    bare_v = bare_a = None
    if bare is not None and s.event_guidance_min_t > 0:  # a late step: unguided
        level = max(float(tv.max()), float(ta.max()))
        bare = bare if level >= s.event_guidance_min_t - 1e-6 else None
    if bare is not None:  # before a writing call: reads only
        bare_v, bare_a = model.forward_chunk(
            xv, xa, tv, ta, bare, cache=cache, chunk_index=chunk_index, write=False
        )
    vv, va = model.forward_chunk(
        xv, xa, tv, ta, cond, cache=cache, chunk_index=chunk_index, write=write
    )
    if bare_a is not None and g_sfx != 1.0 and va.shape[1] == 2:  # SFX towards the events
        va = torch.cat([va[:, :1], bare_a[:, 1:] + g_sfx * (va[:, 1:] - bare_a[:, 1:])], 1)
    if bare_v is not None and g_video != 1.0:  # the gesture likewise
        vv = bare_v + g_video * (vv - bare_v)
    return vv, va


class CausalGenerator:
    """Streams chunks from a :class:`UnisonDiT` for a batch of B independent streams."""

    def __init__(
        self,
        model: UnisonDiT,
        *,
        batch: int = 1,
        seed: int = 0,
        cache_dtype: torch.dtype | None = None,
    ) -> None:
        self.model = model.eval()
        self.cfg = model.cfg
        self.batch = batch
        self.device = next(model.parameters()).device
        self.cache = model.new_cache(batch, device=self.device, dtype=cache_dtype)
        s = self.cfg.sampler
        self.sampler = Sampler(
            steps=s.steps,
            shift=s.shift,
            cross_modal_forcing=self.cfg.model.ablation.cross_modal_forcing,
        )
        self._seed = seed
        self.reset()

    @property
    def chunk_index(self) -> int:
        """Index of the next chunk to be generated."""
        return self._k

    def reset(self, seed: int | None = None) -> None:
        """Start a new stream: empty cache, chunk 0, fresh noise."""
        self.cache.reset()
        self._k = 0
        self._gen = torch.Generator(device=self.device).manual_seed(
            self._seed if seed is None else seed
        )

    @torch.inference_mode()
    def step(self, plan: PlanSlice, cancel: Callable[[], bool] | None = None) -> AVChunk:
        """Generate (and commit) the next chunk.

        ``cancel`` is asked before every model call that precedes the commit; when it answers
        True the chunk is abandoned with :class:`ChunkCancelled`, the cache and the chunk
        counter untouched (an interrupt need not wait for a chunk nobody will play)."""
        cfg, m = self.cfg, self.model
        b, k = self.batch, self._k
        assert plan.cond.batch == b, f"plan for {plan.cond.batch} streams, generator has {b}"
        fc, nc = cfg.stream.chunk_latent_frames, cfg.audio_frames_per_chunk()
        p, (h, w) = cfg.latent.patch, cfg.latent.latent_hw(cfg.media)
        shape_v = (b, fc, cfg.tokens_per_frame(), cfg.latent.video_token_dim())
        shape_a = (b, cfg.audio_streams(), nc, cfg.latent.audio_channels)
        noise_v = torch.randn(shape_v, generator=self._gen, device=self.device)
        noise_a = torch.randn(shape_a, generator=self._gen, device=self.device)
        cond = plan.cond.to(self.device)
        last_step_commit = cfg.stream.commit == "last_step"
        bare = guidance_condition(cfg, cond)
        committed = False

        def denoise(
            xv: Tensor, xa: Tensor, tv: Tensor, ta: Tensor, final: bool
        ) -> tuple[Tensor, Tensor]:
            nonlocal committed
            if cancel is not None and cancel():
                raise ChunkCancelled
            write = final and last_step_commit
            committed = committed or write
            return guided_call(
                m, xv, xa, tv, ta, cond, bare, cache=self.cache, chunk_index=k, write=write
            )

        clean_v = None
        if plan.clean_video is not None:
            clean_v = patchify(m.normalize_video(plan.clean_video.to(self.device).float()), p)
        clean_a = None
        if plan.clean_audio is not None:
            clean_a = m.normalize_audio(plan.clean_audio.to(self.device).float())
        mask = None
        if plan.clean_audio_mask is not None:
            mask = torch.tensor(plan.clean_audio_mask, dtype=torch.bool, device=self.device)
        xv, xa = self.sampler.sample(
            denoise,
            noise_v,
            noise_a,
            clean_v=clean_v,
            clean_a=clean_a,
            clean_a_mask=mask,
            lead=plan.lead if plan.lead is not None else cfg.sampler.lead,
            lead_steps=plan.lead_steps if plan.lead_steps is not None else cfg.sampler.lead_steps,
        )
        if not committed:  # clean pass at t = 0 writes the chunk's K/V
            if cancel is not None and cancel():
                raise ChunkCancelled
            zv = torch.zeros(shape_v[:2], device=self.device)
            za = torch.zeros(shape_a[:3], device=self.device)
            m.forward_chunk(xv, xa, zv, za, cond, cache=self.cache, chunk_index=k, write=True)
        self._k += 1
        cs = cfg.chunk_seconds()
        video = m.denormalize_video(unpatchify(xv, p, h, w))
        audio = m.denormalize_audio(xa)
        if plan.clean_video is not None:  # given tokens come back bit-exact
            video = plan.clean_video.to(self.device)
        if plan.clean_audio is not None:
            fixed = torch.ones(audio.shape[1], dtype=torch.bool, device=self.device)
            if plan.clean_audio_mask is not None:
                fixed = torch.tensor(plan.clean_audio_mask, dtype=torch.bool, device=self.device)
            audio = torch.where(fixed[None, :, None, None], plan.clean_audio.to(self.device), audio)
        return AVChunk(k, k * cs, cs, video, audio)
