"""UnisonDiT: the dual-stream causal diffusion transformer (``docs/model.md``).

Streams:

- video: latent frames (B, F, C, h, w) patchified to tokens (B, F, P, Cv·p²) — P tokens per frame;
- audio: (B, S, N, Ca) with S = 2 sub-streams (speech, SFX) sharing time positions, told apart
  by a learned per-stream bias (S = 1, a mixed stream, when the split is ablated).

Two entry points run the *same* blocks:

- :meth:`UnisonDiT.forward` — a whole sequence of chunks with the block-causal mask (training);
- :meth:`UnisonDiT.forward_chunk` — one chunk against a :class:`RollingKVCache` (streaming).

Both predict the flow-matching velocity ``v = ε − x₀`` per token (``x_t = (1 − t)·x₀ + t·ε``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from unison_stream.config import UnisonConfig
from unison_stream.model.attention import Keys, additive_mask
from unison_stream.model.blocks import (
    BlockInputs,
    DualStreamBlock,
    SplitMasks,
    TimestepEmbedder,
    modulate,
)
from unison_stream.model.conditioning import Conditioning
from unison_stream.model.kv_cache import RollingKVCache
from unison_stream.model.layout import Layout
from unison_stream.model.rope import TimeRotary

__all__ = ["UnisonDiT", "patchify", "unpatchify"]


# ---------------------------------------------------------------------------------------------
# Patchify
# ---------------------------------------------------------------------------------------------
def patchify(x: Tensor, p: int) -> Tensor:
    """Video latents (B, F, C, h, w) → tokens (B, F, P, C·p·p) with P = (h/p)·(w/p)."""
    b, f, c, h, w = x.shape
    x = x.view(b, f, c, h // p, p, w // p, p)
    return x.permute(0, 1, 3, 5, 2, 4, 6).reshape(b, f, (h // p) * (w // p), c * p * p)


def unpatchify(tokens: Tensor, p: int, h: int, w: int) -> Tensor:
    """Tokens (B, F, P, C·p·p) → latents (B, F, C, h, w)."""
    b, f, _, cpp = tokens.shape
    c = cpp // (p * p)
    x = tokens.view(b, f, h // p, w // p, c, p, p)
    return x.permute(0, 1, 4, 2, 5, 3, 6).reshape(b, f, c, h, w)


def _sincos_2d(width: int, gh: int, gw: int) -> Tensor:
    """Fixed 2-D sine-cosine table (gh·gw, width) used to initialise spatial embeddings."""
    quarter = width // 4
    freqs = torch.exp(-math.log(10000.0) * torch.arange(quarter) / quarter)
    yy, xx = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    ay = yy.flatten()[:, None].float() * freqs
    ax = xx.flatten()[:, None].float() * freqs
    return torch.cat((ay.sin(), ay.cos(), ax.sin(), ax.cos()), dim=1)


class FinalLayer(nn.Module):
    """adaLN (shift, scale) from the stream's timestep embedding, then a linear read-out."""

    def __init__(self, width: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.out = nn.Linear(width, out_dim)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        """x (…, T', D) with temb broadcastable (…, 1 or T', D) → (…, T', out_dim)."""
        shift, scale = self.ada(temb).chunk(2, dim=-1)
        return self.out(modulate(self.norm(x), shift, scale))


@dataclass
class _Context:
    """What the blocks read of the condition: SCG input (B, 2·text_dim), track tokens
    (B, L, D) at times (B, L), global tokens (B, G, D), and their masks (B, Tq, L + G) — or,
    for split attention, ``split`` with per-group masks and the masks None."""

    scg_in: Tensor
    track: Tensor
    glob: Tensor
    times: Tensor
    mask_v: Tensor | None
    mask_a: Tensor | None
    split: SplitMasks | None = None


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------
class UnisonDiT(nn.Module):
    video_shift: Tensor  # (Cv,) buffers: codec latents → model space
    video_scale: Tensor
    audio_shift: Tensor  # (Ca,)
    audio_scale: Tensor

    def __init__(self, cfg: UnisonConfig) -> None:
        super().__init__()
        self.cfg = cfg
        m, d = cfg.model, cfg.model.width
        self.streams = cfg.audio_streams()
        gh, gw = (s // cfg.latent.patch for s in cfg.latent.latent_hw(cfg.media))
        tok_v = cfg.latent.video_token_dim()
        # ---- input embedders
        self.video_in = nn.Linear(tok_v, d)
        self.video_pos = nn.Parameter(_sincos_2d(d, gh, gw))  # (P, D) spatial, learned
        self.audio_in = nn.Linear(cfg.latent.audio_channels, d)
        self.stream_bias = nn.Parameter(torch.zeros(self.streams, d))  # per-sub-stream bias
        self.t_embed_v, self.t_embed_a = TimestepEmbedder(d), TimestepEmbedder(d)
        self.t_proj_v = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.t_proj_a = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.gate_t_embed = TimestepEmbedder(d)  # other stream's noise level → cross-modal gates
        # ---- conditioning embedders
        self.caption_in = nn.Linear(m.text_dim, d)
        self.track_embed = nn.Embedding(m.track_vocab, d)
        self.track_dur = nn.Linear(1, d)
        self.identity_in = nn.Linear(tok_v, d)
        # ---- trunk and heads
        self.blocks = nn.ModuleList(DualStreamBlock(m, self.streams) for _ in range(m.depth))
        self.final_v = FinalLayer(d, tok_v)
        self.final_a = FinalLayer(d, cfg.latent.audio_channels)
        self.rope = TimeRotary(d // m.heads, m.rope_min_period_s, m.rope_max_period_s)
        # codec latents → model space: x_model = (x − shift) / scale, per channel; stored with
        # the weights (set from training-data statistics; identity for an untrained model)
        cv, ca = cfg.latent.video_channels, cfg.latent.audio_channels
        self.register_buffer("video_shift", torch.zeros(cv))
        self.register_buffer("video_scale", torch.ones(cv))
        self.register_buffer("audio_shift", torch.zeros(ca))
        self.register_buffer("audio_scale", torch.ones(ca))
        self._layouts: dict[torch.device, Layout] = {}
        # streaming on a CPU attends group by group (attention.split_attention); False keeps
        # the widened single call of training (benchmarks compare the two in one process)
        self.split_attention = True
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier for linears; zeros where a path must start closed.

        - adaLN-single projections and the final layers are zero-initialised (DiT): every block
          starts as the identity and the first prediction is 0;
        - the cross-modal gates start at tanh(0) = 0, so audio↔video coupling opens only as
          training finds it useful.
        """
        for mod in self.modules():
            if isinstance(mod, nn.Linear):
                nn.init.xavier_uniform_(mod.weight)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)
        nn.init.normal_(self.track_embed.weight, std=0.02)
        zero: list[nn.Module] = [self.t_proj_v[1], self.t_proj_a[1]]
        zero += [self.final_v.ada[1], self.final_a.ada[1], self.final_v.out, self.final_a.out]
        zero += [getattr(blk, name) for blk in self.blocks for name in ("gate_v", "gate_a")]
        for lin in zero:
            assert isinstance(lin, nn.Linear)
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    # ---- latent normalisation ----------------------------------------------------------------
    def normalize_video(self, x: Tensor) -> Tensor:
        """Codec video latents (B, F, C, h, w) → model space."""
        return (x - self.video_shift[:, None, None]) / self.video_scale[:, None, None]

    def denormalize_video(self, x: Tensor) -> Tensor:
        return x * self.video_scale[:, None, None] + self.video_shift[:, None, None]

    def normalize_audio(self, x: Tensor) -> Tensor:
        """Codec audio latents (…, Ca) → model space."""
        return (x - self.audio_shift) / self.audio_scale

    def denormalize_audio(self, x: Tensor) -> Tensor:
        return x * self.audio_scale + self.audio_shift

    def block(self, i: int) -> DualStreamBlock:
        """Typed access to block ``i``."""
        blk = self.blocks[i]
        assert isinstance(blk, DualStreamBlock)
        return blk

    def param_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- public entry points ----------------------------------------------------------------
    def forward(
        self, video: Tensor, audio: Tensor, t_video: Tensor, t_audio: Tensor, cond: Conditioning
    ) -> tuple[Tensor, Tensor]:
        """Full sequence of chunks with the block-causal mask; chunk 0 is the sink.

        video (B, F, P, Cv·p²), audio (B, S, N, Ca), t_video (B, F), t_audio (B, S, N);
        track times in ``cond`` are seconds from the sequence start.
        Returns the velocity for video (B, F, P, Cv·p²) and audio (B, S, N, Ca).
        """
        fc = self.cfg.stream.chunk_latent_frames
        assert video.shape[1] % fc == 0, f"{video.shape[1]} frames is not a whole number of chunks"
        n_chunks = video.shape[1] // fc
        lay = Layout.build(self.cfg, n_chunks, video.device)
        w = self.cfg.stream.window_chunks
        mask_v, sink_v = lay.full_self_mask(lay.chunk_v, w)
        mask_a, sink_a = lay.full_self_mask(lay.chunk_a, w)
        ctx = self._context(cond, lay, split=False)
        out_v, out_a, _ = self._run(
            video, audio, t_video, t_audio, ctx, lay, mask_v, mask_a, (sink_v, sink_a), None
        )
        return out_v, out_a

    def forward_chunk(
        self,
        video: Tensor,
        audio: Tensor,
        t_video: Tensor,
        t_audio: Tensor,
        cond: Conditioning,
        *,
        cache: RollingKVCache,
        chunk_index: int,
        write: bool,
    ) -> tuple[Tensor, Tensor]:
        """One chunk against the cache; with ``write`` its K/V are appended to the cache.

        Shapes as :meth:`forward` for one chunk; track times relative to the chunk's start.
        """
        lay = self._chunk_layout(video.device)
        views_v = [cache.view(i, "video", chunk_index) for i in range(len(self.blocks))]
        views_a = [cache.view(i, "audio", chunk_index) for i in range(len(self.blocks))]
        if self.split_attention and video.device.type == "cpu":  # no widened keys (attention.py)
            ctx = self._chunk_context(cond, lay, cache)
            mask_v = mask_a = None
            extras = ([v.split_groups() for v in views_v], [v.split_groups() for v in views_a])
        else:
            ctx = self._context(cond, lay, split=False)
            mask_v = Layout.cached_self_mask(lay.times_v.numel(), views_v[0].valid)
            mask_a = Layout.cached_self_mask(lay.times_a.numel(), views_a[0].valid)
            extras = ([v.groups for v in views_v], [v.groups for v in views_a])
        out_v, out_a, kvs = self._run(
            video, audio, t_video, t_audio, ctx, lay, mask_v, mask_a, (None, None), extras
        )
        if write:
            for i, ((kv, vv), (ka, va)) in enumerate(kvs):
                cache.append(i, "video", kv, vv, chunk_index)
                cache.append(i, "audio", ka, va, chunk_index)
        return out_v, out_a

    def _chunk_layout(self, device: torch.device) -> Layout:
        """The one-chunk layout, built once per device (it depends only on the config)."""
        if device not in self._layouts:
            self._layouts[device] = Layout.build(self.cfg, 1, device)
        return self._layouts[device]

    def new_cache(
        self, batch: int, *, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
    ) -> RollingKVCache:
        """An empty cache sized for this model and ``batch`` streams."""
        lay = Layout.build(self.cfg, 1)
        m = self.cfg.model
        return RollingKVCache(
            layers=m.depth,
            streams={
                "video": (lay.times_v.numel(), lay.times_v),
                "audio": (lay.times_a.numel(), lay.times_a),
            },
            batch=batch,
            heads=m.heads,
            head_dim=m.width // m.heads,
            window=self.cfg.stream.window_chunks,
            chunk_seconds=self.cfg.chunk_seconds(),
            device=device,
            dtype=dtype or next(self.parameters()).dtype,
        )

    def modulation(self, temb_v: Tensor, temb_a: Tensor) -> tuple[Tensor, Tensor]:
        """adaLN-single vectors from per-token timestep embeddings.

        temb_v (B, F, D) → (B, F, 6, D); temb_a (B, S, N, D) → (B, S, N, 6, D).
        """
        d = temb_v.shape[-1]
        mod_v = self.t_proj_v(temb_v).unflatten(-1, (6, d))
        return mod_v, self.t_proj_a(temb_a).unflatten(-1, (6, d))

    # ---- conditioning context (depends on the condition only: once per chunk when streaming)
    def _context(self, cond: Conditioning, lay: Layout, *, split: bool) -> _Context:
        """Track and global tokens, their masks (bool), or with ``split`` per-group masks."""
        dt = self.video_in.weight.dtype
        b = cond.batch
        track = self.track_embed(cond.track_ids) + self.track_dur(
            (cond.track_end - cond.track_start).unsqueeze(-1).to(dt)
        )
        pp = self.cfg.latent.patch**2  # identity tokens are codec latents, (c, py, px) order
        ident_n = (
            cond.identity - self.video_shift.repeat_interleave(pp)
        ) / self.video_scale.repeat_interleave(pp)
        ident = self.identity_in(ident_n.to(dt)) + self.video_pos
        glob = torch.cat((self.caption_in(cond.caption_tokens.to(dt)), ident), dim=1)
        glob_mask = torch.cat(
            (
                cond.caption_mask,
                torch.ones(b, ident.shape[1], dtype=torch.bool, device=ident.device),
            ),
            dim=1,
        )
        margin = self.cfg.model.track_window_s
        track_args = (cond.track_start, cond.track_end, cond.track_mask, glob_mask, margin)
        mask_v = Layout.cond_mask(lay.times_v, *track_args)  # (B, Tv, L + G)
        mask_a = Layout.cond_mask(lay.times_a, *track_args)
        ctx = _Context(
            scg_in=torch.cat((cond.transcript_pooled, cond.caption_pooled), dim=-1).to(dt),
            track=track,
            glob=glob,
            times=(cond.track_start + cond.track_end) / 2,
            mask_v=mask_v,
            mask_a=mask_a,
        )
        if split:
            n = track.shape[1]
            ctx.split = SplitMasks(
                av_v=additive_mask(lay.av_mask_v, dt),
                av_a=additive_mask(lay.av_mask_a, dt),
                track_v=additive_mask(mask_v[..., :n], dt),
                track_a=additive_mask(mask_a[..., :n], dt),
                glob=additive_mask(glob_mask[:, None, :], dt),
                cond_keys={},
            )
            ctx.mask_v = ctx.mask_a = None
        return ctx

    def _chunk_context(self, cond: Conditioning, lay: Layout, cache: RollingKVCache) -> _Context:
        """:meth:`_context` for split attention, kept in the cache's per-chunk memo (the several
        calls of a chunk share it; a write clears it). Not kept while autograd records: a
        training step changes the weights between the calls of one chunk."""
        if torch.is_grad_enabled():
            return self._context(cond, lay, split=True)
        key = ("context", id(cond))
        hit = cache.memo.get(key)
        if isinstance(hit, tuple) and hit[0] is cond:
            return hit[1]
        ctx = self._context(cond, lay, split=True)
        cache.memo[key] = (cond, ctx)  # holding cond keeps its id from being reused
        return ctx

    # ---- shared trunk -----------------------------------------------------------------------
    def _run(
        self,
        video: Tensor,
        audio: Tensor,
        t_video: Tensor,
        t_audio: Tensor,
        ctx: _Context,
        lay: Layout,
        mask_v: Tensor | None,
        mask_a: Tensor | None,
        sinks: tuple[Tensor | None, Tensor | None],
        extras: tuple[list[list[Keys]], list[list[Keys]]] | None,
    ) -> tuple[Tensor, Tensor, list[tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]]]:
        b, f, p, _c = video.shape
        s, n = audio.shape[1], audio.shape[2]
        assert s == self.streams, f"audio has {s} sub-streams, the model {self.streams}"
        assert (f, n) == (lay.frames_v, lay.frames_a), "token counts do not match the layout"
        dt = self.video_in.weight.dtype
        # ---- tokens
        xv = (self.video_in(video.to(dt)) + self.video_pos).view(b, f * p, -1)  # (B, Tv, D)
        xa = self.audio_in(audio.to(dt)) + self.stream_bias[None, :, None, :]  # (B, S, N, D)
        # ---- timestep modulation (per token, per stream) and cross-modal gate embeddings
        temb_v, temb_a = self.t_embed_v(t_video), self.t_embed_a(t_audio)  # (B,F,D), (B,S,N,D)
        mod_v, mod_a = self.modulation(temb_v, temb_a)
        a_for_v, v_for_a = lay.local_other_t(t_video, t_audio)
        d = temb_v.shape[-1]
        inp = BlockInputs(
            mod_v=mod_v,
            mod_a=mod_a,
            gate_emb_v=self.gate_t_embed(a_for_v),
            gate_emb_a=self.gate_t_embed(v_for_a),
            scg_in=ctx.scg_in,
            times_v=lay.times_v,
            times_a=lay.times_a,
            self_mask_v=mask_v,
            self_mask_a=mask_a,
            sink_idx_v=sinks[0],
            sink_idx_a=sinks[1],
            biaca_mask=lay.biaca_mask,
            av_mask_v=lay.av_mask_v,
            av_mask_a=lay.av_mask_a,
            cond_track=ctx.track,
            cond_global=ctx.glob,
            cond_times=ctx.times,
            cond_mask_v=ctx.mask_v,
            cond_mask_a=ctx.mask_a,
            split=ctx.split,
        )
        kvs = []
        for i, blk in enumerate(self.blocks):
            ev, ea = (extras[0][i], extras[1][i]) if extras is not None else ([], [])
            xv, xa, kv_v, kv_a = blk(xv, xa, inp, self.rope, ev, ea)
            kvs.append((kv_v, kv_a))
        out_v = self.final_v(xv.view(b, f, p, d), temb_v.unsqueeze(2))  # (B, F, P, Cv·p²)
        out_a = self.final_a(xa, temb_a)  # (B, S, N, Ca)
        return out_v.float(), out_a.float(), kvs
