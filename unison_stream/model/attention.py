"""Attention primitives shared by every attention in the model.

All attentions here take two groups of keys:

- *timed* keys, which carry a media time in seconds and are rotated (rotary, relative time),
- *global* keys, which are position-free (the cache sink, caption tokens, identity tokens).

One softmax runs over both groups. The trick that lets a single fused
``scaled_dot_product_attention`` call do it: queries are doubled along the head width as
``[rot(q), q]``, timed keys as ``[rot(k), 0]`` and global keys as ``[0, k]``, so a timed logit
is ``rot(q)·rot(k)`` (depends on t_q − t_k only) and a global logit is ``q·k`` (no position).
The cost is a wider QK product (and values padded to match).

Streaming chunks take a cheaper route, :func:`split_attention`: each group is attended on its
own at width hd (queries rotated for timed groups, plain for global ones) and the partial
results are merged exactly through their log-sum-exps (the split-K merge of flash decoding).
No call widens, pads or concatenates keys, and a group's mask is an additive bias prepared once
per chunk (``Keys.bias``) or absent when every key is visible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unison_stream.model.rope import TimeRotary, rotate

__all__ = [
    "CrossAttention",
    "Keys",
    "SelfAttention",
    "additive_mask",
    "mixed_attention",
    "split_attention",
]


@dataclass
class Keys:
    """Keys/values of one group, already split into heads: k, v (B, H, T, hd).

    ``times`` (T,) or (B, T) in seconds for a timed group, None for a global group.
    ``memo`` (set by the KV cache for groups read several times per chunk) keeps the keys as
    prepared for attention, so the cached window is rotated once per chunk, not once per step.
    """

    k: Tensor
    v: Tensor
    times: Tensor | None = None
    memo: dict[bool, Tensor] | None = None
    # split attention only: additive mask (B or 1, 1, Tq or 1, T) in the query's dtype and the
    # rows that see at least one key of the group (B or 1, 1, Tq or 1); None = all visible
    bias: Tensor | None = None
    seen: Tensor | None = None

    def prepared(self, rope: TimeRotary, mixed: bool) -> Tensor:
        """Keys rotated (timed) and, in a mixed call, widened to [rot(k), 0] or [0, k]."""
        if self.memo is not None and mixed in self.memo:
            return self.memo[mixed]
        k = self.k
        if self.times is not None:
            kc, ksn = rope.angles(self.times)
            k = rotate(k, kc, ksn)
        if mixed:
            zero = torch.zeros_like(self.k)
            k = torch.cat((k, zero) if self.times is not None else (zero, k), dim=-1)
        if self.memo is not None:
            self.memo[mixed] = k
        return k


def mixed_attention(
    q: Tensor, q_times: Tensor, groups: list[Keys], mask: Tensor | None, rope: TimeRotary
) -> Tensor:
    """One softmax over timed and global key groups.

    q (B, H, Tq, hd) with q_times (Tq,) or (B, Tq); groups concatenated in order along the key
    axis; mask (B or 1, Tq, Tk_total) bool, True = may attend. Returns (B, H, Tq, hd).
    ``mask=None`` selects :func:`split_attention` (each group carries its own mask).

    When every group is of one kind, plain attention runs at width hd. Otherwise the doubled
    width (module docstring) is used and values are zero-padded to 2·hd as well, because
    PyTorch's fused CPU kernels need equal q/k/v widths (else it falls back to a ~3× slower
    path).
    """
    if mask is None:
        return split_attention(q, q_times, groups, rope)
    hd = q.shape[-1]
    timed = [g.times is not None for g in groups]
    mixed = any(timed) and not all(timed)
    cos, sin = rope.angles(q_times)
    q_rot = rotate(q, cos, sin) if any(timed) else q
    k_all = torch.cat([g.prepared(rope, mixed) for g in groups], dim=2)  # (B, H, Tk, hd|2hd)
    v_all = torch.cat([g.v for g in groups], dim=2)  # (B, H, Tk, hd)
    assert mask.shape[-1] == k_all.shape[2], (
        f"mask covers {mask.shape[-1]} keys, not {k_all.shape[2]}"
    )
    m = mask.unsqueeze(1)  # (B or 1, 1, Tq, Tk)
    if not mixed:
        return F.scaled_dot_product_attention(q_rot, k_all, v_all, attn_mask=m, scale=hd**-0.5)
    q2 = torch.cat((q_rot, q), dim=-1)  # (B, H, Tq, 2hd)
    v2 = torch.cat((v_all, torch.zeros_like(v_all)), dim=-1)
    out = F.scaled_dot_product_attention(q2, k_all, v2, attn_mask=m, scale=hd**-0.5)
    return out[..., :hd]


def additive_mask(mask: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Bool mask (B or 1, Tq or 1, Tk), True = may attend → (bias (…, 1, Tq, Tk) with 0 / −inf
    in ``dtype``, seen (…, 1, Tq): rows with at least one visible key)."""
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    bias = bias.masked_fill(~mask, float("-inf")).unsqueeze(1)
    return bias, mask.any(dim=-1).unsqueeze(1)


def _attend(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """Softmax attention and its log-sum-exp, from PyTorch's fused CPU kernel (which returns
    both): out (B, H, Tq, hd), lse (B, H, Tq) fp32. CPU only: other devices keep the widened
    single call (``UnisonDiT.forward_chunk``)."""
    assert q.device.type == "cpu", "split attention runs on the CPU"
    if k.dtype != q.dtype:  # under autocast q is bf16 while cached keys may be fp32
        k, v = k.to(q.dtype), v.to(q.dtype)
    if bias is not None and bias.dtype != q.dtype:  # likewise masks made in fp32
        bias = bias.to(q.dtype)
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, attn_mask=bias, scale=q.shape[-1] ** -0.5
    )
    return out, lse


def split_attention(q: Tensor, q_times: Tensor, groups: list[Keys], rope: TimeRotary) -> Tensor:
    """The softmax of :func:`mixed_attention` over all groups, one group at a time.

    q (B, H, Tq, hd); each group brings its own ``bias``/``seen`` (None: every key visible).
    Returns (B, H, Tq, hd). Rows that see no key of a group get no weight from it; every row
    must see some key of some group.
    """
    if len(groups) == 1 and groups[0].bias is None:
        g = groups[0]
        qq = rotate(q, *rope.angles(q_times)) if g.times is not None else q
        return F.scaled_dot_product_attention(
            qq, g.prepared(rope, False), g.v, scale=q.shape[-1] ** -0.5
        )
    q_rot = rotate(q, *rope.angles(q_times)) if any(g.times is not None for g in groups) else q
    outs, lses = [], []
    for g in groups:
        o, lse = _attend(q_rot if g.times is not None else q, g.prepared(rope, False), g.v, g.bias)
        if g.seen is not None:  # the fused kernel gives lse 0 to a row with no visible key
            lse = lse.masked_fill(~g.seen, float("-inf"))
        outs.append(o)
        lses.append(lse)
    lse_all = torch.stack(lses)  # (G, B, H, Tq)
    w = torch.softmax(lse_all, dim=0).unsqueeze(-1).to(q.dtype)  # each group's share of the mass
    out = outs[0] * w[0]
    for o, wi in zip(outs[1:], w[1:], strict=True):
        out = out + o * wi
    return out


class _Heads(nn.Module):
    """Shared helpers: split/merge heads and per-head RMS norm of q and k (QK-norm)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = width // heads
        self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6)
        self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6)
        self.out = nn.Linear(width, width)

    def split(self, x: Tensor, norm: nn.RMSNorm | None = None) -> Tensor:
        """(B, T, D) → (B, H, T, hd), RMS-normalised per head first when ``norm`` is given
        (on the contiguous layout: ~3× cheaper than after the transpose)."""
        b, t, _ = x.shape
        x = x.view(b, t, self.heads, self.head_dim)  # (B, T, H, hd)
        if norm is not None:
            x = norm(x)
        return x.transpose(1, 2)

    def merge(self, x: Tensor) -> Tensor:
        b, _, t, _ = x.shape
        return self.out(x.transpose(1, 2).reshape(b, t, -1))  # (B, T, D)


class SelfAttention(_Heads):
    """Self-attention over one stream's tokens (block-causal across chunks via the mask).

    ``forward`` returns the output and the position-free (k, v) of the given tokens, so the
    caller can write them to the KV cache.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__(width, heads)
        self.qkv = nn.Linear(width, 3 * width)

    def forward(
        self,
        x: Tensor,
        times: Tensor,
        extra: list[Keys],
        mask: Tensor | None,
        rope: TimeRotary,
        sink_idx: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, D), times (T,); extra = cached/sink groups after the own tokens.

        ``sink_idx`` (full-sequence mode): indices of own tokens that also serve as the
        position-free sink group, appended after ``extra``.
        Returns out (B, T, D) and this call's k, v (B, H, T, hd) before rotation.
        """
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = self.split(q, self.q_norm), self.split(k, self.k_norm), self.split(v)
        groups = [Keys(k, v, times), *extra]
        if sink_idx is not None:
            groups.append(Keys(k.index_select(2, sink_idx), v.index_select(2, sink_idx)))
        o = mixed_attention(q, times, groups, mask, rope)
        return self.merge(o), k, v


class CrossAttention(_Heads):
    """Queries from x, keys/values from a context made of timed and global groups."""

    def __init__(self, width: int, heads: int, context_dim: int | None = None) -> None:
        super().__init__(width, heads)
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(context_dim or width, 2 * width)

    def project(self, ctx: Tensor, times: Tensor | None = None) -> Keys:
        """ctx (B, Tk, Dc) → a key group (timed when ``times`` is given)."""
        k, v = self.kv(ctx).chunk(2, dim=-1)
        return Keys(self.split(k, self.k_norm), self.split(v), times)

    def forward(
        self, x: Tensor, times: Tensor, groups: list[Keys], mask: Tensor | None, rope: TimeRotary
    ) -> Tensor:
        """x (B, Tq, D) at ``times`` → (B, Tq, D)."""
        q = self.split(self.q(x), self.q_norm)
        return self.merge(mixed_attention(q, times, groups, mask, rope))
