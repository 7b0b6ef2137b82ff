"""Rolling KV cache: a permanent sink plus a ring of the last W chunks (``docs/model.md``).

Contract (tested in ``tests/test_kv_cache.py``):

- ``append(layer, stream, k, v, chunk_index)`` stores one chunk's keys/values. The first chunk
  appended after ``reset()`` becomes the **sink** (the identity / first chunk) and is never
  evicted; later chunks go into a ring of ``window`` slots that overwrites its oldest slot.
- ``evict(chunk_index)`` drops window chunks older than ``chunk_index − window``; ``append``
  does it implicitly, ``evict`` is for callers that skip chunks.
- ``view(layer, stream, chunk_index)`` returns the key groups a query chunk attends to: the
  ring (timed, times relative to the query chunk's start) and the sink (global,
  position-free), with a validity mask for empty or out-of-window slots.
- ``reset()`` forgets everything (memory stays allocated).

Keys are stored *position-free* (before rotary); positions are applied on read relative to
the current chunk, so the numbers stay small and a stream can run for hours. Storage is
allocated once: memory is the same after 10 and after 1,000 chunks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from unison_stream.model.attention import Keys

__all__ = ["CacheView", "RollingKVCache"]


class CacheView:
    """What one query chunk sees of one (layer, stream): key groups and their validity."""

    def __init__(self, groups: list[Keys], valid: Tensor) -> None:
        self.groups = groups  # window (timed) first, then sink (global) if present
        self.valid = valid  # (Tk,) bool over the concatenated keys of ``groups``
        self._split: list[Keys] | None = None

    def split_groups(self) -> list[Keys]:
        """The groups for split attention: each with its own mask (``Keys.bias``), the window
        left out while none of its slots is valid, no mask once all are (steady state)."""
        if self._split is None:
            ring = self.groups[0]
            n = ring.k.shape[2]
            valid = self.valid[:n]
            out = []
            if bool(valid.all()):
                out.append(ring)
            elif bool(valid.any()):
                bias = torch.zeros(n, dtype=ring.k.dtype, device=ring.k.device)
                bias = bias.masked_fill(~valid, float("-inf"))[None, None, None, :]
                out.append(Keys(ring.k, ring.v, ring.times, memo=ring.memo, bias=bias))
            self._split = out + self.groups[1:]  # the sink: position-free, always visible
        return self._split


class _Ring:
    """Storage of one (layer, stream): sink (B, H, Tc, hd) and ring (B, H, W·Tc, hd)."""

    def __init__(
        self, batch: int, heads: int, head_dim: int, tokens: int, window: int, **kw: object
    ) -> None:
        shape = (batch, heads, tokens, head_dim)
        ring = (batch, heads, window * tokens, head_dim)
        self.sink_k, self.sink_v = torch.zeros(shape, **kw), torch.zeros(shape, **kw)  # type: ignore[call-overload]  # kw: device/dtype
        self.k, self.v = torch.zeros(ring, **kw), torch.zeros(ring, **kw)  # type: ignore[call-overload]  # kw: device/dtype
        self.tokens = tokens


class RollingKVCache:
    """KV cache for every layer and stream of a :class:`~unison_stream.model.dit.UnisonDiT`.

    ``streams`` maps a stream name to (tokens per chunk, token time offsets within a chunk in
    seconds (T,)). All layers share the slot bookkeeping: a chunk is written to every layer.
    """

    def __init__(
        self,
        *,
        layers: int,
        streams: dict[str, tuple[int, Tensor]],
        batch: int,
        heads: int,
        head_dim: int,
        window: int,
        chunk_seconds: float,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        assert window >= 1, "the cache needs at least one window slot"
        self.layers, self.window, self.batch = layers, window, batch
        self.chunk_seconds = chunk_seconds
        self.offsets = {
            s: off.to(device=device, dtype=torch.float32) for s, (_, off) in streams.items()
        }
        self._rings = {
            (layer, s): _Ring(batch, heads, head_dim, n, window, device=device, dtype=dtype)
            for layer in range(layers)
            for s, (n, _) in streams.items()
        }
        self.slot_chunk: list[int] = [-1] * window  # chunk index held by each slot, -1 = empty
        self.sink_chunk: int = -1  # chunk index of the sink, -1 = no sink yet
        self._written: set[tuple[int, str]] = set()  # (layer, stream) written for pending chunk
        self._pending: int | None = None
        # views of the current contents, reused by the several model calls of one chunk;
        # cleared by every write (the views' memoised keys would be stale)
        self._views: dict[tuple[int, str, int], CacheView] = {}
        # anything else derived once per chunk by the model (conditioning masks, keys);
        # same lifetime as the views
        self.memo: dict[object, object] = {}

    # ---- contract -----------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every chunk; memory stays allocated."""
        self.slot_chunk = [-1] * self.window
        self.sink_chunk = -1
        self._written.clear()
        self._pending = None
        self._clear_views()

    def append(self, layer: int, stream: str, k: Tensor, v: Tensor, chunk_index: int) -> None:
        """Store chunk ``chunk_index``'s k, v (B, H, Tc, hd) for one layer and stream."""
        self._clear_views()
        ring = self._rings[(layer, stream)]
        assert k.shape[2] == ring.tokens, (
            f"{stream}: {k.shape[2]} tokens, cache holds {ring.tokens}"
        )
        if self._pending != chunk_index:  # first write of a new chunk: claim its slot
            assert not self._written, "previous chunk was only partly written to the cache"
            assert chunk_index > max([*self.slot_chunk, self.sink_chunk]), (
                f"chunks must be appended in increasing order, got {chunk_index}"
            )
            self._pending = chunk_index
            if self.sink_chunk < 0:
                self.sink_chunk = chunk_index
            else:
                self.evict(chunk_index)
                self.slot_chunk[chunk_index % self.window] = chunk_index
        if self.sink_chunk == chunk_index:
            ring.sink_k.copy_(k)
            ring.sink_v.copy_(v)
        else:
            sl = self._slot_range(chunk_index, ring.tokens)
            ring.k[:, :, sl].copy_(k)
            ring.v[:, :, sl].copy_(v)
        self._written.add((layer, stream))
        if len(self._written) == len(self._rings):
            self._written.clear()
            self._pending = None

    def evict(self, chunk_index: int) -> None:
        """Drop window chunks that a query at ``chunk_index`` may no longer see."""
        self._clear_views()
        for i, c in enumerate(self.slot_chunk):
            if c >= 0 and c < chunk_index - self.window:
                self.slot_chunk[i] = -1

    def view(self, layer: int, stream: str, chunk_index: int) -> CacheView:
        """Key groups for a query chunk: the whole ring (timed) and the sink (global).

        The ring is returned in slot order, not time order (attention does not care), so a
        read copies nothing; slots that are empty or outside the window are marked invalid.
        """
        memo_key = (layer, stream, chunk_index)
        if memo_key in self._views:
            return self._views[memo_key]
        ring = self._rings[(layer, stream)]
        off = self.offsets[stream]
        rel, valid = [], []
        for c in self.slot_chunk:
            seen = c >= 0 and chunk_index - self.window <= c < chunk_index
            rel.append(off + (c - chunk_index) * self.chunk_seconds if seen else off)
            valid.append(torch.full_like(off, float(seen), dtype=torch.bool))
        groups = [Keys(ring.k, ring.v, torch.cat(rel), memo={})]  # times relative to the query
        if 0 <= self.sink_chunk < chunk_index:
            groups.append(Keys(ring.sink_k, ring.sink_v, None, memo={}))
            valid.append(torch.ones(ring.tokens, dtype=torch.bool, device=off.device))
        view = CacheView(groups, torch.cat(valid))
        self._views[memo_key] = view
        return view

    # ---- introspection ------------------------------------------------------------------
    def nbytes(self) -> int:
        """Bytes held by the cache's tensors (constant for the cache's lifetime)."""
        return sum(
            t.numel() * t.element_size()
            for r in self._rings.values()
            for t in (r.sink_k, r.sink_v, r.k, r.v)
        )

    def chunks(self) -> list[int]:
        """Chunk indices currently held, sink first, then the window oldest first."""
        held = sorted(c for c in self.slot_chunk if c >= 0)
        return ([self.sink_chunk] if self.sink_chunk >= 0 else []) + held

    def _clear_views(self) -> None:
        self._views.clear()
        self.memo.clear()

    def _slot_range(self, chunk_index: int, tokens: int) -> slice:
        i = chunk_index % self.window
        return slice(i * tokens, (i + 1) * tokens)
