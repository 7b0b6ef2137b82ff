"""Batched sessions: a StackedCache forward equals each session's own forward, row by row."""

from __future__ import annotations

import torch

from tests.helpers import live_model, make_inputs, random_cond, small_config
from unison_stream.engine.batching import (
    BatchStepper,
    Row,
    StackedCache,
    cat_conditioning,
    window_fill,
)
from unison_stream.model.conditioning import TimedTrack
from unison_stream.model.dit import UnisonDiT
from unison_stream.model.generator import PlanSlice


def _filled(model: UnisonDiT, chunks: int, seed: int) -> Row:
    """A batch-1 session cache holding ``chunks`` committed chunks of random history."""
    cfg = model.cfg
    inp = make_inputs(cfg, chunks, seed=seed)
    cache = model.new_cache(1)
    fc, nc = cfg.stream.chunk_latent_frames, cfg.audio_frames_per_chunk()
    for k in range(chunks):
        model.forward_chunk(
            inp.video[:, k * fc : (k + 1) * fc],
            inp.audio[:, :, k * nc : (k + 1) * nc],
            torch.zeros(1, fc),
            torch.zeros(1, cfg.audio_streams(), nc),
            inp.cond,
            cache=cache,
            chunk_index=k,
            write=True,
        )
    return Row(cache, chunks, seed)


@torch.inference_mode()
def test_stacked_forward_equals_each_session_alone_at_different_phases() -> None:
    cfg = small_config("stream.window_chunks=3")
    model = live_model(cfg)
    # phases differ: 7 and 9 chunks held → ring slots in different orders and times
    a, b = _filled(model, 7, 1), _filled(model, 9, 2)
    a2, b2 = _filled(model, 7, 1), _filled(model, 9, 2)
    inp = make_inputs(cfg, 1, batch=2, seed=5)
    conds = [random_cond(cfg, 1, seed=s) for s in (3, 4)]
    cond2 = cat_conditioning(conds, [TimedTrack(), TimedTrack()])
    tv, ta = torch.full((2, inp.video.shape[1]), 0.6), torch.full(inp.t_audio.shape, 0.6)
    out_v, out_a = model.forward_chunk(
        inp.video, inp.audio, tv, ta, cond2, cache=StackedCache([a, b]), chunk_index=0, write=True
    )
    for i, (row, cond) in enumerate(zip((a2, b2), conds, strict=True)):
        ov, oa = model.forward_chunk(
            inp.video[i : i + 1],
            inp.audio[i : i + 1],
            tv[i : i + 1],
            ta[i : i + 1],
            cond.with_tracks([TimedTrack()]),
            cache=row.cache,
            chunk_index=row.index,
            write=True,
        )
        torch.testing.assert_close(out_v[i : i + 1], ov, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out_a[i : i + 1], oa, atol=1e-4, rtol=1e-4)
    # the batched write landed in each session's own cache at its own index
    assert a.cache.chunks() == a2.cache.chunks() and b.cache.chunks() == b2.cache.chunks()
    assert a.cache.chunks()[-1] == 7 and b.cache.chunks()[-1] == 9


@torch.inference_mode()
def test_stepper_advances_each_row_and_noise_is_per_session_reproducible() -> None:
    cfg = small_config()
    model = live_model(cfg)
    stepper = BatchStepper(model)
    rows = [Row(stepper.new_cache(), 0, seed=11), Row(stepper.new_cache(), 0, seed=11)]
    cond = random_cond(cfg, 1).with_tracks([TimedTrack()])
    outs = [stepper.step([r], PlanSlice(cond)) for r in rows]  # same seed, same index
    assert [r.index for r in rows] == [1, 1]
    torch.testing.assert_close(outs[0].video, outs[1].video)


@torch.inference_mode()
def test_window_fill_from_the_index_matches_the_cache() -> None:
    """The engine keeps only a row's chunk index (the cache lives in the replica): the batching
    key computed from it equals what the cache itself holds, before and after the ring wraps."""
    cfg = small_config("stream.window_chunks=3")
    model = live_model(cfg)
    for chunks in range(7):
        row = _filled(model, chunks, 0)
        w = row.cache.window
        seen = sum(1 for c in row.cache.slot_chunk if c >= 0 and chunks - w <= c < chunks)
        held = (seen, int(0 <= row.cache.sink_chunk < chunks))
        assert window_fill(chunks, w) == held, chunks
