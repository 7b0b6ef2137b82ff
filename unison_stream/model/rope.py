"""Rotary positions in seconds, on both time axes (``docs/model.md`` "Token streams").

Video and audio tokens carry their media time in seconds, so a video latent frame and the audio
latents of the same span share a position and cross-modal attention is local in time. Angles are
``t · ω_i`` with periods spaced geometrically between ``min_period_s`` and ``max_period_s``.
Callers pass times *relative to the current chunk*, which keeps angles small and exact however
long a stream runs (absolute-position caches cap streams at minutes; ``docs/model.md``,
"Block-causal attention and the rolling KV cache").
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["TimeRotary", "rotate"]


class TimeRotary(nn.Module):
    """Rotary frequencies for one head width; ``angles(t)`` gives (cos, sin) for times in s."""

    omega: Tensor

    def __init__(self, head_dim: int, min_period_s: float, max_period_s: float) -> None:
        super().__init__()
        assert head_dim % 2 == 0, "rotary needs an even head width"
        n = head_dim // 2
        periods = torch.logspace(math.log10(min_period_s), math.log10(max_period_s), n)
        self.register_buffer("omega", 2 * math.pi / periods, persistent=False)  # (hd/2,)
        self._memo: dict[int, tuple[Tensor, Tensor, Tensor]] = {}

    def angles(self, times: Tensor) -> tuple[Tensor, Tensor]:
        """times (..., T) in seconds → cos, sin (..., T, hd/2), computed in fp32.

        The last few results are memoised by tensor identity (time tensors are never written
        in place): a streaming chunk asks for the same query and cache times at every layer and
        step.
        """
        key = id(times)
        hit = self._memo.get(key)
        if hit is not None and hit[0] is times:
            return hit[1], hit[2]
        a = times.float().unsqueeze(-1) * self.omega  # (..., T, hd/2)
        cos, sin = a.cos(), a.sin()
        if len(self._memo) >= 32:
            self._memo.pop(next(iter(self._memo)))
        self._memo[key] = (times, cos, sin)
        return cos, sin


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate feature pairs (first half, second half) of x (B, H, T, hd).

    cos/sin are (T, hd/2) or (B, T, hd/2) in fp32; the product runs in x's dtype (bf16 keeps
    ~3 significant digits of the rotation, enough since relative times stay within a window).
    """
    if cos.dim() == 3:  # (B, T, hd/2) → (B, 1, T, hd/2)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
