"""Streaming through the rolling KV cache equals the block-causal full forward."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import live_model, make_inputs, small_config, stream_chunks

ATOL = 1e-4


@pytest.mark.parametrize("batch", [1, 2])
def test_cached_stream_equals_full_forward(batch: int) -> None:
    cfg = small_config()
    model = live_model(cfg)
    k = 4  # < window: nothing evicted
    inp = make_inputs(cfg, k, batch=batch)
    with torch.no_grad():
        full_v, full_a = model(inp.video, inp.audio, inp.t_video, inp.t_audio, inp.cond)
        str_v, str_a = stream_chunks(model, inp, k)
    assert full_v.abs().mean() > 0.1, "outputs must be non-trivial for the comparison to mean much"
    torch.testing.assert_close(str_v, full_v, atol=ATOL, rtol=0)
    torch.testing.assert_close(str_a[:, 0], full_a[:, 0], atol=ATOL, rtol=0)  # speech
    torch.testing.assert_close(str_a[:, 1], full_a[:, 1], atol=ATOL, rtol=0)  # sfx


def test_windowed_stream_equals_masked_sink_plus_last_w() -> None:
    cfg = small_config("stream.window_chunks=2")
    model = live_model(cfg)
    k = 7  # the ring wraps more than twice
    inp = make_inputs(cfg, k)
    with torch.no_grad():
        full_v, full_a = model(inp.video, inp.audio, inp.t_video, inp.t_audio, inp.cond)
        str_v, str_a = stream_chunks(model, inp, k)
    torch.testing.assert_close(str_v, full_v, atol=ATOL, rtol=0)
    torch.testing.assert_close(str_a, full_a, atol=ATOL, rtol=0)


def _chunk_out(model, inp, k: int):
    cfg = model.cfg
    fc, nc = cfg.stream.chunk_latent_frames, cfg.audio_frames_per_chunk()
    ov, oa = model(inp.video, inp.audio, inp.t_video, inp.t_audio, inp.cond)
    return ov[:, k * fc : (k + 1) * fc], oa[:, :, k * nc : (k + 1) * nc]


@torch.no_grad()
def test_mask_is_block_causal_with_sink_and_window() -> None:
    """Chunk k depends on itself, chunks k−W…k−1 and the sink (chunk 0) — nothing else.

    One layer, so that no influence arrives indirectly (with depth, chunk k−W−1 reaches chunk k
    through chunk k−W's keys, in training and streaming alike).
    """
    cfg = small_config("stream.window_chunks=2", "model.depth=1")
    model = live_model(cfg)
    inp = make_inputs(cfg, 6)
    fc = cfg.stream.chunk_latent_frames
    k = 4
    base_v, base_a = _chunk_out(model, inp, k)

    def changed_by(chunk: int) -> bool:
        video = inp.video.clone()
        video[:, chunk * fc : (chunk + 1) * fc] += 1.0
        pert = type(inp)(video, inp.audio, inp.t_video, inp.t_audio, inp.cond, inp.track)
        v, a = _chunk_out(model, pert, k)
        return bool((v - base_v).abs().max() > 1e-4 or (a - base_a).abs().max() > 1e-4)

    assert changed_by(0), "the sink must stay visible"
    assert not changed_by(1), "chunk 1 is outside the window of chunk 4 (W=2)"
    assert changed_by(2) and changed_by(3), "the last W chunks are visible"
    assert changed_by(4), "a chunk sees itself"
    assert not changed_by(5), "the future is never visible"


@torch.no_grad()
def test_inside_a_chunk_attention_is_bidirectional() -> None:
    cfg = small_config()
    model = live_model(cfg)
    inp = make_inputs(cfg, 2)
    v0, _ = model(inp.video, inp.audio, inp.t_video, inp.t_audio, inp.cond)
    video = inp.video.clone()
    video[:, 3] += 1.0  # last frame of chunk 1
    v1, _ = model(video, inp.audio, inp.t_video, inp.t_audio, inp.cond)
    assert (v1[:, 2] - v0[:, 2]).abs().max() > 1e-4, "first frame of the chunk sees its last"
    torch.testing.assert_close(v1[:, :2], v0[:, :2], atol=1e-6, rtol=0)


@torch.no_grad()
def test_positions_are_relative_so_a_late_chunk_matches_an_early_one() -> None:
    """Shifting the whole history by many chunks changes nothing (keys are position-free)."""
    cfg = small_config("stream.window_chunks=2")
    model = live_model(cfg)
    inp = make_inputs(cfg, 4)
    fc, nc = cfg.stream.chunk_latent_frames, cfg.audio_frames_per_chunk()
    cond = inp.cond.with_tracks([type(inp.track)()])  # no track: it is absolute in this test
    outs = []
    for offset in (0, 100_000):  # chunk 100,000 is ~4.4 hours in
        cache = model.new_cache(1)
        for j in range(4):
            k = 0 if j == 0 else offset + j  # sink first, then a run of consecutive chunks
            sv, sa = slice(j * fc, (j + 1) * fc), slice(j * nc, (j + 1) * nc)
            ov, oa = model.forward_chunk(
                inp.video[:, sv], inp.audio[:, :, sa], inp.t_video[:, sv], inp.t_audio[:, :, sa],
                cond, cache=cache, chunk_index=k, write=True,
            )  # fmt: skip
        outs.append((ov, oa))
    torch.testing.assert_close(outs[0][0], outs[1][0], atol=ATOL, rtol=0)
    torch.testing.assert_close(outs[0][1], outs[1][1], atol=ATOL, rtol=0)
