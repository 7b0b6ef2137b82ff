"""SCG gates, ablation switches, per-token timesteps and the noise-level cross-modal gates."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.helpers import Inputs, live_model, make_inputs, small_config
from unison_stream.model.dit import UnisonDiT
from unison_stream.model.layout import Layout


def run(model: UnisonDiT, inp: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return model(inp.video, inp.audio, inp.t_video, inp.t_audio, inp.cond)


def same_weights(src: UnisonDiT, dst: UnisonDiT) -> UnisonDiT:
    """Copy every parameter the two models share by name (ablated ones lack some)."""
    theirs = dict(src.named_parameters())
    with torch.no_grad():
        for name, p in dst.named_parameters():
            p.copy_(theirs[name])
    return dst


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).abs().max() < 1e-5)


# ---- SCG ------------------------------------------------------------------------------------
def test_scg_gates_lie_in_open_unit_interval_and_follow_the_text() -> None:
    cfg = small_config()
    model = live_model(cfg)
    blk = model.block(0)
    inp = make_inputs(cfg, 1, batch=3)
    scg_in = torch.cat((inp.cond.transcript_pooled, inp.cond.caption_pooled), dim=-1)
    g = blk.scg_gates(scg_in)
    assert g.shape == (3, 2)
    assert bool(((g > 0) & (g < 1)).all())
    other_caption = torch.cat((inp.cond.transcript_pooled, -inp.cond.caption_pooled), dim=-1)
    other_transcript = torch.cat((-inp.cond.transcript_pooled, inp.cond.caption_pooled), dim=-1)
    assert not close(blk.scg_gates(other_caption), g), "gates move with the caption"
    assert not close(blk.scg_gates(other_transcript), g), "gates move with the transcript"
    assert not close(model.block(1).scg_gates(scg_in), g), "gates differ per block"


@pytest.mark.slow
def test_scg_gates_move_with_real_caption_embeddings() -> None:
    from unison_stream.model.text import TextEncoder

    cfg = small_config()
    model = live_model(cfg, std=0.05)
    enc = TextEncoder.shared()
    emb = enc.encode(["heavy rain and thunder outside", "a quiet empty room", "Nice to meet you"])
    c_s = emb.pooled[2:3].expand(2, -1)
    g = model.block(0).scg_gates(torch.cat((c_s, emb.pooled[:2]), dim=-1))
    assert bool(((g > 0) & (g < 1)).all())
    assert (g[0] - g[1]).abs().max() > 1e-3


# ---- ablations ------------------------------------------------------------------------------
def test_no_split_gives_one_mixed_audio_stream_and_no_bi_aca() -> None:
    cfg = small_config("model.ablation.split_audio=false")
    model = live_model(cfg)
    assert cfg.audio_streams() == 1
    assert not any("aca" in n or "scg" in n for n, _ in model.named_parameters())
    inp = make_inputs(cfg, 2)
    _, a = run(model, inp)
    assert a.shape[1] == 1


def test_no_bi_aca_removes_exactly_the_bi_aca_path() -> None:
    cfg_on, cfg_off = small_config(), small_config("model.ablation.bi_aca=false")
    on = live_model(cfg_on)
    off = same_weights(on, UnisonDiT(cfg_off).eval())
    inp = make_inputs(cfg_on, 2)
    _, a_on = run(on, inp)
    v_off, a_off = run(off, inp)
    assert not close(a_on, a_off), "Bi-ACA contributes when on"
    with torch.no_grad():  # zero the Bi-ACA read-outs: the 'on' model must equal 'off'
        for i in range(len(on.blocks)):
            blk = on.block(i)
            for attn in (blk.aca_sp, blk.aca_sfx):
                nn.init.zeros_(attn.out.weight)
                nn.init.zeros_(attn.out.bias)
    v_zero, a_zero = run(on, inp)
    assert close(a_zero, a_off) and close(v_zero, v_off)


def test_no_scg_fixes_the_gates_at_one_and_cuts_nothing_else() -> None:
    cfg_on, cfg_off = small_config(), small_config("model.ablation.scg=false")
    on = live_model(cfg_on)
    off = same_weights(on, UnisonDiT(cfg_off).eval())
    inp = make_inputs(cfg_on, 2)
    assert not close(run(on, inp)[1], run(off, inp)[1])
    scg_in = torch.randn(4, 2 * cfg_on.model.text_dim)
    assert torch.equal(off.block(0).scg_gates(scg_in), torch.ones(4, 2))
    with torch.no_grad():  # saturate the gates of the 'on' model: sigmoid(+50) == 1
        for i in range(len(on.blocks)):
            blk = on.block(i)
            nn.init.zeros_(blk.scg[2].weight)  # type: ignore[arg-type]  # Sequential item
            nn.init.constant_(blk.scg[2].bias, 50.0)  # type: ignore[arg-type]  # Sequential item
    assert close(run(on, inp)[1], run(off, inp)[1])


def test_no_cross_modal_attention_makes_video_blind_to_audio() -> None:
    for flag, should_depend in (("true", True), ("false", False)):
        cfg = small_config(f"model.ablation.cross_modal_attention={flag}")
        model = live_model(cfg)
        inp = make_inputs(cfg, 2)
        v0, a0 = run(model, inp)
        louder = Inputs(inp.video, inp.audio * 3, inp.t_video, inp.t_audio, inp.cond, inp.track)
        v1, _ = run(model, louder)
        brighter = Inputs(inp.video * 3, inp.audio, inp.t_video, inp.t_audio, inp.cond, inp.track)
        _, a1 = run(model, brighter)
        assert (not close(v0, v1)) == should_depend, f"video ← audio with attention={flag}"
        assert (not close(a0, a1)) == should_depend, f"audio ← video with attention={flag}"


def test_cross_modal_attention_is_local_in_time() -> None:
    """Audio 3+ latent frames away from a video frame (same chunk) cannot reach it directly."""
    cfg = small_config("stream.chunk_latent_frames=6", "model.depth=1")
    model = live_model(cfg)
    with torch.no_grad():  # no audio↔audio mixing before the A/V step: only direct paths remain
        blk = model.block(0)
        for lin in (blk.attn_a.out, blk.aca_sp.out, blk.aca_sfx.out):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
    inp = make_inputs(cfg, 1)
    v0, _ = run(model, inp)
    audio = inp.audio.clone()
    audio[:, :, -2:] += 2.0  # the last video frame's audio (frame 5)
    v1, _ = run(model, Inputs(inp.video, audio, inp.t_video, inp.t_audio, inp.cond, inp.track))
    assert close(v0[:, :4], v1[:, :4]), "frames 0-3 are outside the ±1-frame window"
    assert not close(v0[:, 4:], v1[:, 4:]), "frames 4-5 see it"
    lay = Layout.build(cfg, 1)
    assert lay.av_frames.int().tolist()[0] == [1, 1, 1, 1] + [0] * 8, "frame 0: audio of frames 0-1"
    assert lay.av_frames.int().tolist()[3] == [0, 0, 0, 0] + [1] * 6 + [0, 0], "frame 3: 2-4"


# ---- timesteps and the other stream's noise level -------------------------------------------
def test_per_token_timesteps_change_only_their_own_modulation() -> None:
    cfg = small_config()
    model = live_model(cfg)
    t_v = torch.full((1, 4), 0.5)
    t_a = torch.full((1, 2, 8), 0.5)
    mv0, ma0 = model.modulation(model.t_embed_v(t_v), model.t_embed_a(t_a))
    t_v2, t_a2 = t_v.clone(), t_a.clone()
    t_v2[0, 2] = 0.9
    t_a2[0, 1, 3] = 0.1  # one SFX token
    mv1, ma1 = model.modulation(model.t_embed_v(t_v2), model.t_embed_a(t_a2))
    changed_v = (mv1 - mv0).abs().amax(dim=(0, 2, 3)) > 1e-6  # per frame
    assert changed_v.tolist() == [False, False, True, False]
    changed_a = (ma1 - ma0).abs().amax(dim=(0, 3, 4)) > 1e-6  # (S, N)
    assert changed_a.nonzero().tolist() == [[1, 3]]


def test_cross_modal_gate_follows_the_other_streams_noise_level() -> None:
    cfg = small_config()
    model = live_model(cfg)
    lay = Layout.build(cfg, 2)
    blk = model.block(0)
    t_v = torch.full((1, lay.frames_v), 0.5)

    def video_gate(audio_level: float) -> torch.Tensor:
        t_a = torch.full((1, 2, lay.frames_a), audio_level)
        a_for_v, v_for_a = lay.local_other_t(t_v, t_a)
        return blk.av_gates(model.gate_t_embed(a_for_v), model.gate_t_embed(v_for_a))[0]

    assert not close(video_gate(0.1), video_gate(0.9)), "video's gate reads audio's noise"
    t_a = torch.full((1, 2, lay.frames_a), 0.3)
    _, v_for_a = lay.local_other_t(t_v, t_a)
    _, v_for_a2 = lay.local_other_t(torch.full((1, lay.frames_v), 0.8), t_a)
    assert not close(v_for_a, v_for_a2), "audio's gate reads video's noise"
    a_for_v0, _ = lay.local_other_t(t_v, t_a)
    t_a_one = t_a.clone()
    t_a_one[:, :, -1] = 1.0  # noisier audio at the very end only
    a_for_v1, _ = lay.local_other_t(t_v, t_a_one)
    changed = ((a_for_v1 - a_for_v0).abs() > 1e-6)[0].tolist()
    assert changed == [False] * (lay.frames_v - 2) + [True, True], "the level is local"
