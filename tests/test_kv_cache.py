"""The RollingKVCache contract: append, evict, view, reset; constant memory."""

from __future__ import annotations

import torch

from unison_stream.model.kv_cache import RollingKVCache

TOKENS, HEADS, HD, W, CS = 3, 2, 4, 3, 0.5


def make_cache(layers: int = 2) -> RollingKVCache:
    return RollingKVCache(
        layers=layers,
        streams={"video": (TOKENS, torch.tensor([0.1, 0.2, 0.3]))},
        batch=1,
        heads=HEADS,
        head_dim=HD,
        window=W,
        chunk_seconds=CS,
    )


def kv(value: float) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.full((1, HEADS, TOKENS, HD), value)
    return t, -t


def append_chunk(cache: RollingKVCache, chunk: int, layers: int = 2) -> None:
    for layer in range(layers):
        cache.append(layer, "video", *kv(float(chunk)), chunk)


def test_first_chunk_is_the_sink_and_the_ring_keeps_the_last_w() -> None:
    cache = make_cache()
    for c in range(6):
        append_chunk(cache, c)
    assert cache.chunks() == [0, 3, 4, 5]
    view = cache.view(0, "video", 6)
    ring, sink = view.groups
    assert sink.times is None, "the sink is position-free"
    assert torch.equal(sink.k, torch.zeros_like(sink.k)), "the sink holds chunk 0"
    assert ring.times is not None
    # every valid ring token has its chunk's value and a time relative to chunk 6's start
    vals = ring.k[0, 0, :, 0]
    for i in range(W * TOKENS):
        c = int(vals[i])
        assert c in (3, 4, 5)
        expected = (c - 6) * CS + [0.1, 0.2, 0.3][i % TOKENS]
        assert abs(float(ring.times[i]) - expected) < 1e-6
    assert bool(view.valid.all())


def test_view_marks_slots_outside_the_window_invalid() -> None:
    cache = make_cache()
    for c in range(3):
        append_chunk(cache, c)
    view = cache.view(0, "video", 3)  # holds sink 0, ring 1, 2 (one empty slot)
    assert int(view.valid.sum()) == 3 * TOKENS
    view_far = cache.view(0, "video", 10)  # chunks 1, 2 are older than 10 − W
    assert int(view_far.valid.sum()) == TOKENS, "only the sink remains visible"


def test_evict_and_reset() -> None:
    cache = make_cache()
    for c in range(3):
        append_chunk(cache, c)
    cache.evict(5)  # chunk 1 < 5 − 3
    assert cache.chunks() == [0, 2]
    cache.reset()
    assert cache.chunks() == []
    times = cache.view(0, "video", 0).groups[0].times
    assert times is not None and times.numel() == W * TOKENS, "storage stays allocated"
    assert int(cache.view(0, "video", 0).valid.sum()) == 0


def test_appending_out_of_order_is_refused() -> None:
    cache = make_cache()
    append_chunk(cache, 0)
    append_chunk(cache, 1)
    try:
        append_chunk(cache, 1)
    except AssertionError as e:
        assert "increasing order" in str(e)
    else:
        raise AssertionError("appending a chunk twice must fail")


def test_memory_is_the_same_after_10_and_1000_chunks() -> None:
    cache = make_cache()
    ptrs = [t.data_ptr() for r in cache._rings.values() for t in (r.k, r.v, r.sink_k)]
    sizes = {}
    for c in range(1000):
        append_chunk(cache, c)
        if c + 1 in (10, 1000):
            sizes[c + 1] = cache.nbytes()
    assert sizes[10] == sizes[1000]
    assert ptrs == [t.data_ptr() for r in cache._rings.values() for t in (r.k, r.v, r.sink_k)]
    assert cache.chunks() == [0, 997, 998, 999]
