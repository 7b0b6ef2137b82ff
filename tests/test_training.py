"""Training: cross-modal forcing schedules and weights, learning, exact resume, DDP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import TEST_OVERRIDES, small_config
from unison_stream.model.conditioning import Conditioning, TimedTrack
from unison_stream.training.batch import RandomLatentSource
from unison_stream.training.config import (
    CurriculumConfig,
    TaskConfig,
    TrainConfig,
    load_train_config,
)
from unison_stream.training.forcing import (
    NoisePlan,
    event_frame_weights,
    flow_losses,
    sample_noise_plan,
    stage_at,
)
from unison_stream.training.trainer import Trainer
from unison_stream.vocab import SILENCE_ID, event_id

ROOT = Path(__file__).resolve().parent.parent


def test_progressive_stabilization_stages() -> None:
    cur = CurriculumConfig()
    assert [stage_at(p, cur) for p in (0.0, 0.29, 0.3, 0.69, 0.7, 1.0)] == [
        "sync", "sync", "bounded", "bounded", "independent", "independent",
    ]  # fmt: skip
    g = torch.Generator().manual_seed(0)
    only_t2av = TaskConfig(text_to_av=1, audio_to_video=0, video_to_audio=0)
    no_hist = CurriculumConfig(clean_history_prob=0.0)
    sync = sample_noise_plan(256, 4, 0.1, no_hist, only_t2av, g)
    assert torch.equal(sync.t_video, sync.t_audio)
    bounded = sample_noise_plan(256, 4, 0.5, no_hist, only_t2av, g)
    gap = (bounded.t_audio - bounded.t_video).abs()
    assert gap.max() <= 0.25 + 1e-6 and gap.max() > 0.05
    frac_indep = float((gap[:, 1:] > 0).any(dim=1).float().mean())
    assert 0.35 < frac_indep < 0.65, "independent with probability p = 0.5"
    indep = sample_noise_plan(256, 4, 0.9, no_hist, only_t2av, g)
    assert (indep.t_audio - indep.t_video).abs().max() > 0.5
    off = sample_noise_plan(256, 4, 0.9, no_hist, only_t2av, g, forcing=False)
    assert torch.equal(off.t_video, off.t_audio), "ablation: always synchronous"


def test_reference_chunk_clean_history_and_tasks() -> None:
    g = torch.Generator().manual_seed(1)
    plan = sample_noise_plan(512, 4, 0.9, CurriculumConfig(clean_history_prob=0.5), TaskConfig(), g)
    assert bool((plan.t_video[:, 0] == 0).all() and (plan.t_audio[:, 0] == 0).all())
    a2v, v2a = plan.task == 1, plan.task == 2
    assert bool((plan.t_audio[a2v] == 0).all()) and bool((plan.t_video[v2a] == 0).all())
    assert 0.08 < float(a2v.float().mean()) < 0.22
    hist_clean = (plan.t_video[:, 1:-1] == 0).all(dim=1) & (plan.task == 0)
    assert 0.3 < float(hist_clean.float().sum() / (plan.task == 0).sum()) < 0.7
    assert bool((plan.t_video[plan.task == 0, -1] > 0).all()), "the last chunk is always noisy"


def test_forcing_weights_favour_the_noisier_modality() -> None:
    b = 1
    pv, tv = torch.ones(b, 4, 3, 2), torch.zeros(b, 4, 3, 2)  # video error 1 per element
    pa, ta = torch.ones(b, 2, 4, 5), torch.zeros(b, 2, 4, 5)  # speech and sfx error 1
    audio_cleaner = NoisePlan(
        torch.tensor([[0.0, 0.8]]), torch.tensor([[0.0, 0.2]]), torch.zeros(1)
    )
    out = flow_losses(pv, pa, tv, ta, audio_cleaner, lam=0.5)
    assert out["video"] == 1 and out["speech"] == 1 and out["sfx"] == 1
    assert abs(float(out["loss"]) - (1.5 + 1 + 1)) < 1e-6, "d = 1: video weighted 1 + λ"
    video_cleaner = NoisePlan(
        torch.tensor([[0.0, 0.2]]), torch.tensor([[0.0, 0.8]]), torch.zeros(1)
    )
    out = flow_losses(pv, pa, tv, ta, video_cleaner, lam=0.5)
    assert abs(float(out["loss"]) - (1 + 1.5 + 1.5)) < 1e-6, "d = 0: audio weighted 1 + λ"
    out = flow_losses(pv, pa, tv, ta, video_cleaner, lam=0.5, forcing=False)
    assert abs(float(out["loss"]) - 3.0) < 1e-6
    out = flow_losses(pv, pa, tv, ta, video_cleaner, lam=0.5, forcing=False, sfx_weight=3.0)
    assert abs(float(out["loss"]) - 5.0) < 1e-6, "only the SFX term is multiplied"
    assert out["sfx"] == 1, "the reported SFX loss stays unweighted"


def test_event_frames_weigh_more_in_the_sfx_loss() -> None:
    """Frames overlapping [onset − 40 ms, onset + 160 ms] of an event weigh 1 + w; phonemes and
    masked padding do not count; the reported SFX term stays unweighted."""
    tracks = [
        TimedTrack((SILENCE_ID, event_id("clap")), (0.0, 0.50), (0.5, 0.54)),
        TimedTrack((SILENCE_ID,), (0.0,), (1.28,)),
    ]
    g = torch.Generator().manual_seed(0)
    cond = Conditioning.random(
        2, text_dim=8, caption_len=3, identity_shape=(4, 8), generator=g, tracks=tracks
    )
    w = event_frame_weights(cond, 32, 25.0, 4.0)  # frame n covers [n/25, (n+1)/25) s
    assert w[1].eq(1).all(), "a track without events weighs every frame 1"
    assert w[0].eq(5).nonzero().flatten().tolist() == list(range(11, 17))  # 0.44 … 0.68 s
    b, k, n = 2, 4, 32
    plan = NoisePlan(torch.full((b, k), 0.5), torch.full((b, k), 0.5), torch.zeros(b))
    pv, tv = torch.zeros(b, 16, 2, 3), torch.zeros(b, 16, 2, 3)
    pa, ta = torch.zeros(b, 2, n, 3), torch.zeros(b, 2, n, 3)
    pa[0, 1, 13] = 1.0  # one SFX error inside the event's frames
    plain = flow_losses(pv, pa, tv, ta, plan, 0.5)
    weighted = flow_losses(pv, pa, tv, ta, plan, 0.5, sfx_frame_weight=w)
    assert torch.isclose(weighted["loss"], 5 * plain["loss"])
    assert torch.equal(weighted["sfx"], plain["sfx"])
    pa[0, 1, 13], pa[0, 1, 25] = 0.0, 1.0  # the same error far from the event
    assert torch.isclose(flow_losses(pv, pa, tv, ta, plan, 0.5, sfx_frame_weight=w)["loss"],
                         plain["loss"])  # fmt: skip


def _trainer(tmp: Path, steps: int, fixed: bool = False, **kw: object) -> Trainer:
    cfg = small_config("stream.window_chunks=2")
    t = TrainConfig(
        out_dir=str(tmp),
        steps=steps,
        batch=2,
        seq_chunks=3,
        lr=2e-3,
        warmup=2,
        val_every=1000,
        ckpt_every=1000,
        log_every=1,
    )
    for k, v in kw.items():
        setattr(t, k, v)
    return Trainer(
        cfg, t, RandomLatentSource(cfg, batch=t.batch, chunks=t.seq_chunks, seed=7, fixed=fixed)
    )


def test_training_fits_a_batch_in_every_stream(tmp_path: Path) -> None:
    """Gradients reach every stream: on one repeated batch each loss falls well below its start."""
    tr = _trainer(tmp_path, 60, fixed=True)
    hist = tr.fit()
    first, last = hist[:10], hist[-10:]
    for name in ("video", "speech", "sfx"):
        before = sum(h[name] for h in first) / 10
        after = sum(h[name] for h in last) / 10
        assert after < 0.75 * before, f"{name}: {before:.3f} → {after:.3f}"
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert (tmp_path / "train_log.jsonl").read_text().count("\n") == 60


def test_resume_is_exact(tmp_path: Path) -> None:
    straight = _trainer(tmp_path / "a", 6)
    straight.fit()
    half = _trainer(tmp_path / "b", 6)
    half.fit(until=3)  # stops and checkpoints at step 3 (same schedule as the straight run)
    resumed = _trainer(tmp_path / "b", 6)
    resumed.fit()  # finds ckpt-000003 and continues
    assert resumed.step == 6
    for (n, p), q in zip(
        straight.model.named_parameters(), resumed.model.parameters(), strict=True
    ):
        assert torch.equal(p, q), n
    for p, q in zip(straight.ema.parameters(), resumed.ema.parameters(), strict=True):
        assert torch.equal(p, q)


def test_train_preset_loads_and_validates() -> None:
    t = load_train_config("tiny", ["steps=5"])
    assert t.steps == 5 and t.curriculum.lam == 0.5
    with pytest.raises(ValueError, match="seq_chunks"):
        load_train_config("tiny", ["seq_chunks=1"])


@pytest.mark.slow
def test_two_gloo_processes_keep_identical_weights(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        "--nproc_per_node", "2", "--master_port", "29517",
        "-m", "unison_stream.training.cli",
        "--preset", "tiny", "--train", "tiny", "--dump-rank-weights",
        "steps=3", "batch=1", "seq_chunks=2", f"out_dir={tmp_path}", "data=random", "ckpt_every=3",
        *TEST_OVERRIDES,
    ]  # fmt: skip
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    w0 = load_file(str(tmp_path / "rank0.safetensors"))
    w1 = load_file(str(tmp_path / "rank1.safetensors"))
    assert w0.keys() == w1.keys()
    init = load_file(str(tmp_path / "init.safetensors"))
    moved = any(not torch.equal(w0[k], init[k]) for k in w0)
    assert moved, "the weights trained"
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k


def test_ablation_presets_switch_one_component_each(tmp_path: Path) -> None:
    import json

    from safetensors import safe_open

    from unison_stream.cli import main
    from unison_stream.training.config import load_train_config

    base = load_train_config("ablation")
    variants = {
        "no_forcing": "model.ablation.cross_modal_forcing=false",
        "no_split": "model.ablation.split_audio=false",
        "no_scg": "model.ablation.scg=false",
        "no_biaca": "model.ablation.bi_aca=false",
    }
    for name, switch in variants.items():
        t = load_train_config(f"ablation_{name}")
        assert t.model_overrides == [switch] and t.out_dir == f"runs/ablations/{name}"
        assert (t.steps, t.seed, t.lr, t.batch) == (base.steps, base.seed, base.lr, base.batch)
    prog = load_train_config("ablation_no_progressive")
    assert (prog.curriculum.sync_frac, prog.curriculum.bounded_frac) == (0.0, 0.0)
    assert prog.model_overrides == [] and base.curriculum.sync_frac > 0
    # the model a variant trains has its switch off (stored in the checkpoint's config)
    out = tmp_path / "run"
    args = ["train", "model", "--train", "ablation_no_scg", "steps=1", "data=random"]
    assert main([*args, "ckpt_every=1", "val_every=1", f"out_dir={out}"]) == 0
    with safe_open(str(next(out.glob("ckpt-*.safetensors"))), framework="pt") as f:
        cfg = json.loads((f.metadata() or {})["config"])
    assert cfg["model"]["ablation"]["scg"] is False
