"""Batching sessions that share a model replica into one forward (``docs/engine.md``).

Every session owns a batch-1 :class:`~unison_stream.model.kv_cache.RollingKVCache` and its own
chunk counter, so it has its own sink (its identity), its own history and can join or leave at
any time. To run B sessions in one forward, :class:`StackedCache` presents their caches to
``UnisonDiT.forward_chunk`` as one batch-B cache:

- ``view``: each row's view at the row's *own* chunk index; key groups are concatenated along
  the batch and the ring's times stacked to (B, T) (the attention takes per-row times), so rows
  whose ring slots sit in a different order or time still attend exactly as alone. The shared
  validity mask must agree across rows: only sessions whose windows are equally full are
  batched (the worker groups them; in steady state every window is full);
- ``append``: the batch's K/V are split by row and appended to each session's cache at its
  own index;
- ``reset`` does nothing: the rows belong to their sessions.

A batch-1 stack delegates to the row's cache and copies nothing. :class:`BatchStepper` keeps
one :class:`~unison_stream.model.generator.CausalGenerator` per batch size and runs
``step`` with such a stack as its cache; the noise of each step is seeded from the rows'
session seeds and chunk indices (a session alone is reproducible whatever else runs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from unison_stream.model.attention import Keys
from unison_stream.model.conditioning import Conditioning, TimedTrack
from unison_stream.model.dit import UnisonDiT
from unison_stream.model.generator import AVChunk, CausalGenerator, PlanSlice
from unison_stream.model.kv_cache import CacheView, RollingKVCache

__all__ = ["BatchStepper", "Row", "StackedCache", "cat_conditioning"]


@dataclass
class Row:
    """One session's part of a batched step."""

    cache: RollingKVCache  # batch-1 cache owned by the session
    index: int  # the session's next model chunk index (0 = its sink)
    seed: int


class StackedCache(RollingKVCache):
    """B batch-1 caches seen as one batch-B cache (module docstring)."""

    def __init__(self, rows: list[Row]) -> None:  # no super().__init__: it owns no storage
        self.rows = rows
        self.batch = len(rows)
        self._views: dict[tuple[int, str, int], CacheView] = {}
        self.memo: dict[object, object] = {}

    def reset(self) -> None:
        """Nothing to forget: every row belongs to its session."""
        self._clear_views()

    def append(self, layer: int, stream: str, k: Tensor, v: Tensor, chunk_index: int) -> None:
        """Split (B, H, Tc, hd) by row; each row is appended at its own chunk index."""
        self._clear_views()
        for b, row in enumerate(self.rows):
            row.cache.append(layer, stream, k[b : b + 1], v[b : b + 1], row.index)

    def evict(self, chunk_index: int) -> None:
        for row in self.rows:
            row.cache.evict(row.index)

    def view(self, layer: int, stream: str, chunk_index: int) -> CacheView:
        """Rows' views at their own indices, concatenated (``chunk_index`` is ignored)."""
        if len(self.rows) == 1:
            return self.rows[0].cache.view(layer, stream, self.rows[0].index)
        key = (layer, stream, chunk_index)
        if key in self._views:
            return self._views[key]
        views = [r.cache.view(layer, stream, r.index) for r in self.rows]
        for v in views[1:]:
            assert torch.equal(v.valid, views[0].valid) and len(v.groups) == len(views[0].groups), (
                "batched sessions must have equally full cache windows"
            )
        groups = []
        for g in range(len(views[0].groups)):
            parts = [v.groups[g] for v in views]
            times = None
            if parts[0].times is not None:
                times = torch.stack([p.times for p in parts if p.times is not None])  # (B, T)
            k = torch.cat([p.k for p in parts])  # (B, H, T, hd)
            groups.append(Keys(k, torch.cat([p.v for p in parts]), times, memo={}))
        view = CacheView(groups, views[0].valid)
        self._views[key] = view
        return view

    def nbytes(self) -> int:
        return sum(r.cache.nbytes() for r in self.rows)

    def chunks(self) -> list[int]:
        return self.rows[0].cache.chunks()


def window_fill(index: int, window: int) -> tuple[int, int]:
    """(chunks of the window a query at ``index`` sees, sink present) — the batching key. A
    session's chunk 0 is its sink and chunks 1… go through the ring of ``window`` slots."""
    return min(max(index - 1, 0), window), int(index > 0)


def cat_conditioning(conds: list[Conditioning], tracks: list[TimedTrack]) -> Conditioning:
    """Stack batch-1 conditionings (caption tokens padded) and set each row's track."""
    lc = max(c.caption_tokens.shape[1] for c in conds)

    def pad(x: Tensor, n: int) -> Tensor:  # (1, L, …) → (1, n, …) zero-padded
        if x.shape[1] == n:
            return x
        z = torch.zeros((1, n - x.shape[1], *x.shape[2:]), dtype=x.dtype, device=x.device)
        return torch.cat([x, z], dim=1)

    stacked = Conditioning(
        caption_tokens=torch.cat([pad(c.caption_tokens, lc) for c in conds]),
        caption_mask=torch.cat([pad(c.caption_mask, lc) for c in conds]),
        caption_pooled=torch.cat([c.caption_pooled for c in conds]),
        transcript_pooled=torch.cat([c.transcript_pooled for c in conds]),
        track_ids=torch.zeros(len(conds), 1, dtype=torch.long),
        track_start=torch.zeros(len(conds), 1),
        track_end=torch.zeros(len(conds), 1),
        track_mask=torch.zeros(len(conds), 1, dtype=torch.bool),
        identity=torch.cat([c.identity for c in conds]),
    )
    return stacked.with_tracks(tracks)


def _step_seed(rows: list[Row]) -> int:
    key = ",".join(f"{r.seed}:{r.index}" for r in rows).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=7).digest(), "little")


class BatchStepper:
    """Runs one ``CausalGenerator.step`` for a batch of sessions' rows."""

    def __init__(self, model: UnisonDiT) -> None:
        self.model = model
        self._gens: dict[int, CausalGenerator] = {}

    def new_cache(self) -> RollingKVCache:
        """A batch-1 cache for one session (in the model's device and dtype)."""
        p = next(self.model.parameters())
        return self.model.new_cache(1, device=p.device, dtype=p.dtype)

    def step(
        self, rows: list[Row], plan: PlanSlice, cancel: Callable[[], bool] | None = None
    ) -> AVChunk:
        """Generate and commit the next chunk of every row (``plan`` has batch len(rows));
        ``cancel``: see ``CausalGenerator.step`` (a cancelled step leaves the rows as they
        were)."""
        b = len(rows)
        if b not in self._gens:
            gen = CausalGenerator(self.model, batch=b)
            gen.cache = StackedCache(rows)  # its own batch-b cache is dropped here
            self._gens[b] = gen
        gen = self._gens[b]
        gen.cache = StackedCache(rows)
        gen.reset(seed=_step_seed(rows))  # fresh seeded noise; StackedCache.reset is a no-op
        out = gen.step(plan, cancel)
        for r in rows:
            r.index += 1
        return out
