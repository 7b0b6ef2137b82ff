"""One dual-stream Unison block and its small parts (``docs/model.md`` "A block").

Per block, in order:

1. self-attention per stream (video over video tokens; audio over both sub-streams),
   adaLN-modulated by *per-token timesteps of that stream*;
2. Bi-ACA between the speech and SFX sub-streams, scaled by SCG gates
   ``[g_sp, g_sfx] = sigmoid(MLP([c_s; c_a]))``:
   ``h_sp += g_sp·Attn(LN(h_sp), LN(h_sfx))``, ``h_sfx += g_sfx·Attn(LN(h_sfx), LN(h_sp))``;
3. audio↔video cross-attention in a local window, each direction gated by a gate computed
   from the *other* stream's noise level;
4. cross-attention to the conditioning (caption, timed phoneme/event track, identity);
5. MLP per stream, adaLN-modulated.

Modulation follows adaLN-single (PixArt-α): a timestep embedding is projected once per stream to
six vectors (shift/scale/gate for attention and MLP) and each block adds its own learned table.
The layout of tokens and all masks come from :class:`~unison_stream.model.layout.Layout`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unison_stream.config import ModelConfig
from unison_stream.model.attention import CrossAttention, Keys, SelfAttention
from unison_stream.model.rope import TimeRotary

__all__ = ["BlockInputs", "DualStreamBlock", "SplitMasks", "TimestepEmbedder", "modulate"]


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """t ∈ [0, 1] (any shape) → (…, D) through sinusoids and a 2-layer MLP."""

    def __init__(self, width: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.fc1, self.fc2 = nn.Linear(freq_dim, width), nn.Linear(width, width)

    def forward(self, t: Tensor) -> Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
        a = (t.float() * 1000.0).unsqueeze(-1) * freqs  # (…, half); t scaled as in DiT
        emb = torch.cat((a.cos(), a.sin()), dim=-1)
        return self.fc2(F.silu(self.fc1(emb.to(self.fc1.weight.dtype))))


class Mlp(nn.Sequential):
    def __init__(self, width: int, ratio: float) -> None:
        hidden = int(width * ratio)
        super().__init__(
            nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width)
        )


@dataclass
class SplitMasks:
    """Streaming chunks (split attention, ``attention.split_attention``): each masked key
    group's additive bias and seen-rows, prepared once per chunk; ``(bias, seen)`` pairs."""

    av_v: tuple[Tensor, Tensor]  # video queries → audio keys: (1, 1, Tv, Ta), (1, 1, Tv)
    av_a: tuple[Tensor, Tensor]  # (1, 1, Ta, Tv), (1, 1, Ta)
    track_v: tuple[Tensor, Tensor]  # (B, 1, Tv, L), (B, 1, Tv)
    track_a: tuple[Tensor, Tensor]  # (B, 1, Ta, L), (B, 1, Ta)
    glob: tuple[Tensor, Tensor]  # (B, 1, 1, G), (B, 1, 1)
    # conditioning keys per cross-attention module, projected at the chunk's first call
    cond_keys: dict[nn.Module, list[Keys]]


@dataclass
class BlockInputs:
    """Everything a block needs besides the two hidden states (built once per forward).

    Shapes: Fv video frames with P tokens each (Tv = Fv·P); S audio sub-streams of N frames
    (Ta = S·N). ``mod_v`` (B, Fv, 6, D) and ``mod_a`` (B, S, N, 6, D) are the adaLN-single
    vectors before each block's table; ``gate_emb_v`` (B, Fv, D) / ``gate_emb_a`` (B, S·N, D)
    embed the *other* stream's local noise level.
    """

    mod_v: Tensor
    mod_a: Tensor
    gate_emb_v: Tensor
    gate_emb_a: Tensor
    scg_in: Tensor  # (B, 2·text_dim): [c_s ; c_a]
    times_v: Tensor  # (Tv,) seconds
    times_a: Tensor  # (Ta,) seconds
    self_mask_v: Tensor | None  # (1, Tv, Tv + extra) bool; None: split attention
    self_mask_a: Tensor | None  # (1, Ta, Ta + extra)
    sink_idx_v: Tensor | None  # full-sequence mode: own tokens re-used as the global sink group
    sink_idx_a: Tensor | None
    biaca_mask: Tensor  # (1, N, N)
    av_mask_v: Tensor  # (1, Tv, Ta) video queries → audio keys
    av_mask_a: Tensor  # (1, Ta, Tv)
    cond_track: Tensor  # (B, L, D) timed phoneme/event tokens
    cond_global: Tensor  # (B, G, D) caption + identity tokens
    cond_times: Tensor  # (B, L) seconds
    cond_mask_v: Tensor | None  # (B, Tv, L + G); None: split attention
    cond_mask_a: Tensor | None  # (B, Ta, L + G)
    split: SplitMasks | None = None  # streaming: per-group masks instead of the four above


class DualStreamBlock(nn.Module):
    """One Unison block over video tokens (B, Tv, D) and audio tokens (B, S, N, D)."""

    def __init__(self, cfg: ModelConfig, audio_streams: int) -> None:
        super().__init__()
        d, h = cfg.width, cfg.heads
        self.ablation = cfg.ablation
        self.audio_streams = audio_streams
        # per-block adaLN-single tables (6 vectors each: shift/scale/gate × attn/mlp)
        self.table_v = nn.Parameter(torch.zeros(6, d))
        self.table_a = nn.Parameter(torch.zeros(6, d))
        self.norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn_v, self.attn_a = SelfAttention(d, h), SelfAttention(d, h)
        self.mlp_v, self.mlp_a = Mlp(d, cfg.mlp_ratio), Mlp(d, cfg.mlp_ratio)
        # Bi-ACA + SCG (only when speech and SFX are separate sub-streams)
        if audio_streams == 2:
            self.ln_sp, self.ln_sfx = nn.LayerNorm(d), nn.LayerNorm(d)
            self.aca_sp, self.aca_sfx = CrossAttention(d, h), CrossAttention(d, h)
            self.scg = nn.Sequential(
                nn.Linear(2 * cfg.text_dim, cfg.scg_hidden), nn.SiLU(), nn.Linear(cfg.scg_hidden, 2)
            )
        # audio ↔ video, gated by the other stream's noise level
        self.ln_av_v, self.ln_av_a = nn.LayerNorm(d), nn.LayerNorm(d)
        self.av_v, self.av_a = CrossAttention(d, h), CrossAttention(d, h)
        self.gate_v, self.gate_a = nn.Linear(d, d), nn.Linear(d, d)
        # conditioning cross-attention
        self.ln_c_v, self.ln_c_a = nn.LayerNorm(d), nn.LayerNorm(d)
        self.cond_v, self.cond_a = CrossAttention(d, h), CrossAttention(d, h)

    # ---- sub-layers ---------------------------------------------------------------------
    def scg_gates(self, scg_in: Tensor) -> Tensor:
        """SCG gates (B, 2) = [g_sp, g_sfx] in (0, 1); all ones when SCG is ablated."""
        if not self.ablation.scg:
            return torch.ones(scg_in.shape[0], 2, device=scg_in.device, dtype=scg_in.dtype)
        return torch.sigmoid(self.scg(scg_in))

    def forward(
        self,
        xv: Tensor,
        xa: Tensor,
        inp: BlockInputs,
        rope: TimeRotary,
        extra_v: list[Keys],
        extra_a: list[Keys],
    ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """xv (B, Tv, D), xa (B, S, N, D) → same shapes, plus this chunk's (k, v) per stream.

        ``extra_v``/``extra_a`` are the key groups besides the stream's own tokens (the cache
        window and sink in streaming mode, the sink copy in full-sequence mode).
        """
        b, s, n, d = xa.shape
        fv = inp.mod_v.shape[1]
        mv = inp.mod_v + self.table_v  # (B, Fv, 6, D)
        ma = inp.mod_a + self.table_a  # (B, S, N, 6, D)
        sh_v, sc_v, g_v, sh2_v, sc2_v, g2_v = (m.unsqueeze(2) for m in mv.unbind(2))  # (B,Fv,1,D)
        sh_a, sc_a, g_a, sh2_a, sc2_a, g2_a = ma.unbind(3)  # (B, S, N, D)

        # 1. self-attention (video: per frame modulation broadcast over the frame's P tokens)
        hv = modulate(self.norm(xv).view(b, fv, -1, d), sh_v, sc_v).view(b, -1, d)
        ov, kv_v, vv_v = self.attn_v(
            hv, inp.times_v, extra_v, inp.self_mask_v, rope, inp.sink_idx_v
        )
        xv = xv + (g_v * ov.view(b, fv, -1, d)).view(b, -1, d)
        ha = modulate(self.norm(xa), sh_a, sc_a).reshape(b, s * n, d)
        oa, kv_a, vv_a = self.attn_a(
            ha, inp.times_a, extra_a, inp.self_mask_a, rope, inp.sink_idx_a
        )
        xa = xa + g_a * oa.view(b, s, n, d)

        # 2. Bi-ACA with SCG gates
        if s == 2 and self.ablation.bi_aca:
            xa = self._bi_aca(xa, inp, rope)

        # 3. audio ↔ video cross-attention, gates from the other stream's noise level
        if self.ablation.cross_modal_attention:
            xv, xa = self._av(xv, xa, inp, rope)

        # 4. conditioning
        xv = xv + self._cond(self.cond_v, self.ln_c_v(xv), inp.times_v, inp, "v", rope)
        ca = self._cond(self.cond_a, self.ln_c_a(xa).view(b, s * n, d), inp.times_a, inp, "a", rope)
        xa = xa + ca.view(b, s, n, d)

        # 5. MLP
        hv = modulate(self.norm(xv).view(b, fv, -1, d), sh2_v, sc2_v)
        xv = xv + (g2_v * self.mlp_v(hv)).view(b, -1, d)
        xa = xa + g2_a * self.mlp_a(modulate(self.norm(xa), sh2_a, sc2_a))
        return xv, xa, (kv_v, vv_v), (kv_a, vv_a)

    def _bi_aca(self, xa: Tensor, inp: BlockInputs, rope: TimeRotary) -> Tensor:
        """Speech ↔ SFX cross-attention inside the chunk, scaled by the SCG gates."""
        g = self.scg_gates(inp.scg_in)  # (B, 2)
        sp, sfx = self.ln_sp(xa[:, 0]), self.ln_sfx(xa[:, 1])  # (B, N, D)
        t = inp.times_a[: xa.shape[2]]  # both sub-streams share time positions
        mask = None if inp.split is not None else inp.biaca_mask  # one chunk: all visible
        d_sp = self.aca_sp(sp, t, [self.aca_sp.project(sfx, t)], mask, rope)
        d_sfx = self.aca_sfx(sfx, t, [self.aca_sfx.project(sp, t)], mask, rope)
        upd = torch.stack((g[:, 0, None, None] * d_sp, g[:, 1, None, None] * d_sfx), dim=1)
        return xa + upd

    def av_gates(self, gate_emb_v: Tensor, gate_emb_a: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-modal gates from embeddings of the other stream's local noise level.

        gate_emb_v (B, Fv, D) → video's gate on audio→video (B, Fv, D); gate_emb_a (B, S·N, D)
        → audio's gate (B, S·N, D).
        """
        return torch.tanh(self.gate_v(gate_emb_v)), torch.tanh(self.gate_a(gate_emb_a))

    def _av(
        self, xv: Tensor, xa: Tensor, inp: BlockInputs, rope: TimeRotary
    ) -> tuple[Tensor, Tensor]:
        b, s, n, d = xa.shape
        fv = inp.gate_emb_v.shape[1]
        hv, ha = self.ln_av_v(xv), self.ln_av_a(xa).view(b, s * n, d)
        gv, ga = self.av_gates(inp.gate_emb_v, inp.gate_emb_a)
        gv = gv.unsqueeze(2)  # (B, Fv, 1, D)
        kv_v, kv_a = self.av_v.project(ha, inp.times_a), self.av_a.project(hv, inp.times_v)
        mask_v: Tensor | None = inp.av_mask_v
        mask_a: Tensor | None = inp.av_mask_a
        if inp.split is not None:
            (kv_v.bias, kv_v.seen), (kv_a.bias, kv_a.seen) = inp.split.av_v, inp.split.av_a
            mask_v = mask_a = None
        dv = self.av_v(hv, inp.times_v, [kv_v], mask_v, rope)
        da = self.av_a(ha, inp.times_a, [kv_a], mask_a, rope)
        xv = xv + (gv * dv.view(b, fv, -1, d)).view(b, -1, d)
        xa = xa + (ga * da).view(b, s, n, d)
        return xv, xa

    def _cond(
        self,
        attn: CrossAttention,
        x: Tensor,
        times: Tensor,
        inp: BlockInputs,
        stream: str,
        rope: TimeRotary,
    ) -> Tensor:
        """Cross-attention of one stream ("v" | "a") to the timed track and the global tokens."""
        if inp.split is None:
            groups = [attn.project(inp.cond_track, inp.cond_times), attn.project(inp.cond_global)]
            return attn(
                x, times, groups, inp.cond_mask_v if stream == "v" else inp.cond_mask_a, rope
            )
        sm = inp.split
        if attn not in sm.cond_keys:  # the chunk's first call: project once, reuse after
            track, glob = (
                attn.project(inp.cond_track, inp.cond_times),
                attn.project(inp.cond_global),
            )
            track.bias, track.seen = sm.track_v if stream == "v" else sm.track_a
            glob.bias, glob.seen = sm.glob
            sm.cond_keys[attn] = [track, glob]
        return attn(x, times, sm.cond_keys[attn], None, rope)
