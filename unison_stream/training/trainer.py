"""The training loop: flow matching with cross-modal forcing, EMA, exact resume, DDP/FSDP.

Runs unchanged as one process or under ``torchrun --nproc_per_node N`` (DDP: gloo on CPU,
NCCL on CUDA; ``strategy: fsdp`` shards parameters for ``base``). Each rank draws its own data
(seeded by rank) and noise; gradients are averaged, so every rank holds identical weights.

Checkpoints are one safetensors file per save: model, EMA, optimizer state and RNG states as
tensors; the model and training configs and the step in the metadata. Loading one restores the
run exactly (a test compares a resumed run with an uninterrupted one bit for bit).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm import tqdm

from unison_stream.config import UnisonConfig, to_dict
from unison_stream.extras import require
from unison_stream.model.dit import UnisonDiT, patchify
from unison_stream.training.batch import BatchSource, TrainBatch
from unison_stream.training.config import TrainConfig
from unison_stream.training.forcing import (
    TASKS,
    NoisePlan,
    event_frame_weights,
    flow_losses,
    sample_noise_plan,
)

__all__ = ["Trainer", "expand_plan", "setup_distributed"]

log = logging.getLogger(__name__)


def setup_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device) — initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if cuda else "cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return rank, world, device


def expand_plan(plan: NoisePlan, cfg: UnisonConfig) -> tuple[Tensor, Tensor]:
    """Per-chunk levels (B, K) → per-token timesteps: video (B, K·Fc), audio (B, S, K·Nc)."""
    fc, nc, s = cfg.stream.chunk_latent_frames, cfg.audio_frames_per_chunk(), cfg.audio_streams()
    t_v = plan.t_video.repeat_interleave(fc, dim=1)
    t_a = plan.t_audio.repeat_interleave(nc, dim=1)[:, None, :].expand(-1, s, -1)
    return t_v, t_a


class Trainer:
    """Owns the model, EMA, optimizer and the step counter of one training run."""

    def __init__(
        self,
        cfg: UnisonConfig,
        tcfg: TrainConfig,
        source: BatchSource,
        *,
        val_source: BatchSource | None = None,
        model: UnisonDiT | None = None,
    ) -> None:
        self.cfg, self.tcfg, self.source, self.val_source = cfg, tcfg, source, val_source
        self.rank, self.world, self.device = setup_distributed()
        torch.manual_seed(tcfg.seed)  # identical initial weights on every rank
        self.model = (model or UnisonDiT(cfg)).to(self.device).train()
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.net: nn.Module = self.model
        if self.world > 1:
            if tcfg.strategy == "fsdp":
                from torch.distributed.fsdp import FullyShardedDataParallel

                self.net = FullyShardedDataParallel(self.model, use_orig_params=True)
            else:
                ids = [self.device.index] if self.device.type == "cuda" else None
                # ablations leave some modules unused in forward
                self.net = nn.parallel.DistributedDataParallel(
                    self.model, device_ids=ids, find_unused_parameters=True
                )
        self.opt = torch.optim.AdamW(
            self.net.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay, betas=(0.9, 0.99)
        )
        self.noise_g = torch.Generator().manual_seed(tcfg.seed * 1000 + self.rank)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.out = Path(tcfg.out_dir)

    # ---- one optimisation step --------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        """Linear warm-up then cosine decay to 10 %."""
        t = self.tcfg
        if step < t.warmup:
            return t.lr * (step + 1) / t.warmup
        p = (step - t.warmup) / max(1, t.steps - t.warmup)
        return t.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))

    def losses(
        self, net: nn.Module, batch: TrainBatch, plan: NoisePlan, g: torch.Generator
    ) -> dict[str, Tensor]:
        """Noise the batch by ``plan``, predict velocities, return the flow-matching losses."""
        cfg = self.cfg
        x0_v = patchify(self.model.normalize_video(batch.video), cfg.latent.patch)  # (B, F, P, ·)
        x0_a = self.model.normalize_audio(batch.audio)  # (B, S, N, Ca)
        t_v, t_a = expand_plan(plan, cfg)
        t_v, t_a = t_v.to(self.device), t_a.to(self.device)
        eps_v = torch.randn(x0_v.shape, generator=g).to(self.device)
        eps_a = torch.randn(x0_a.shape, generator=g).to(self.device)
        xt_v = (1 - t_v[:, :, None, None]) * x0_v + t_v[:, :, None, None] * eps_v
        xt_a = (1 - t_a[..., None]) * x0_a + t_a[..., None] * eps_a
        bf16 = self.tcfg.precision == "bf16"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            pred_v, pred_a = net(xt_v, xt_a, t_v, t_a, batch.cond)
        forcing = cfg.model.ablation.cross_modal_forcing
        lam = self.tcfg.curriculum.lam
        frame_w = None
        if self.tcfg.event_frame_weight > 0 and x0_a.shape[1] == 2:
            frame_w = event_frame_weights(
                batch.cond, x0_a.shape[2], cfg.latent.audio_hz, self.tcfg.event_frame_weight
            )
        return flow_losses(
            pred_v.float(),
            pred_a.float(),
            eps_v - x0_v,
            eps_a - x0_a,
            plan,
            lam,
            forcing=forcing,
            sfx_weight=self.tcfg.sfx_weight,
            sfx_frame_weight=frame_w,
        )

    def train_step(self) -> dict[str, float]:
        t = self.tcfg
        batch = self.source.next_batch().to(self.device)
        k = batch.video.shape[1] // self.cfg.stream.chunk_latent_frames
        plan = sample_noise_plan(
            batch.video.shape[0],
            k,
            self.step / max(1, t.steps),
            t.curriculum,
            t.tasks,
            self.noise_g,
            forcing=self.cfg.model.ablation.cross_modal_forcing,
        )
        if t.heard_track_prob > 0:  # audio-driven rows hear the front end's track
            heard = torch.rand(plan.task.shape, generator=self.noise_g) < t.heard_track_prob
            batch = batch.hearing((plan.task == TASKS.index("audio_to_video")) & heard)
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        losses = self.losses(self.net, batch, plan, self.noise_g)
        self.opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        gnorm = nn.utils.clip_grad_norm_(self.net.parameters(), t.grad_clip)
        self.opt.step()
        self._update_ema()
        self.step += 1
        out = {k: float(v.detach()) for k, v in losses.items()}
        out.update(step=self.step, lr=self.lr_at(self.step - 1), grad_norm=float(gnorm))
        out["task_" + TASKS[int(plan.task[0])]] = 1.0
        return out

    @torch.no_grad()
    def _update_ema(self) -> None:
        d = self.tcfg.ema
        for pe, pm in zip(self.ema.parameters(), self.model.parameters(), strict=True):
            pe.lerp_(pm.detach(), 1 - d)

    @torch.no_grad()
    def validate(self, batches: int = 4) -> dict[str, float]:
        """EMA losses on fixed validation batches with fixed noise (comparable over time)."""
        src = self.val_source
        if src is None:
            return {}
        state = src.state()
        g = torch.Generator().manual_seed(1234)
        sums: dict[str, float] = {}
        for _ in range(batches):
            batch = src.next_batch().to(self.device)
            k = batch.video.shape[1] // self.cfg.stream.chunk_latent_frames
            plan = sample_noise_plan(
                batch.video.shape[0], k, 1.0, self.tcfg.curriculum, self.tcfg.tasks, g
            )
            for name, v in self.losses(self.ema, batch, plan, g).items():
                sums[name] = sums.get(name, 0.0) + float(v) / batches
        src.restore(state)  # the same batches every time
        return {f"val_{k}": v for k, v in sums.items()}

    # ---- checkpoints ------------------------------------------------------------------------
    def save(self, path: Path | None = None) -> Path:
        """Write the whole run state to one safetensors file (rank 0 writes)."""
        path = path or self.out / f"ckpt-{self.step:06d}.safetensors"
        tensors: dict[str, Tensor] = {}
        for k, v in self.model.state_dict().items():
            tensors[f"model.{k}"] = v.detach().cpu().contiguous()
        for k, v in self.ema.state_dict().items():
            tensors[f"ema.{k}"] = v.detach().cpu().contiguous()
        opt = self.opt.state_dict()
        for pid, st in opt["state"].items():
            for name, v in st.items():
                tensors[f"optim.{pid}.{name}"] = torch.as_tensor(v).detach().cpu().contiguous()
        tensors["rng.noise"] = self.noise_g.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        for k, v in self.source.state().items():
            tensors[f"source.{k}"] = v
        meta = {
            "config": json.dumps(to_dict(self.cfg)),
            "train_config": json.dumps(_train_dict(self.tcfg)),
            "step": str(self.step),
            "history": json.dumps(self.history[-5000:]),
        }
        if self.rank == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            save_file(tensors, str(tmp), metadata=meta)
            tmp.replace(path)  # never leave a half-written checkpoint
        return path

    def load(self, path: Path) -> None:
        """Restore a run saved by :meth:`save` (weights, EMA, optimizer, RNG, data position)."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))

        def part(prefix: str) -> dict[str, Tensor]:
            return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

        self.model.load_state_dict(part("model."))
        self.ema.load_state_dict(part("ema."))
        opt = self.opt.state_dict()
        state: dict[int, dict[str, Tensor]] = {}
        for k, v in part("optim.").items():
            pid, name = k.split(".", 1)
            state.setdefault(int(pid), {})[name] = v.to(self.device) if name != "step" else v
        opt["state"] = state
        self.opt.load_state_dict(opt)
        self.noise_g.set_state(tensors["rng.noise"])
        torch.set_rng_state(tensors["rng.torch"])
        self.source.restore(part("source."))
        self.step = int(meta["step"])
        self.history = json.loads(meta.get("history", "[]"))

    def latest_checkpoint(self) -> Path | None:
        found = sorted(self.out.glob("ckpt-*.safetensors"))
        return found[-1] if found else None

    # ---- the loop ---------------------------------------------------------------------------
    def fit(
        self, *, until: int | None = None, on_val: Callable[[Trainer], None] | None = None
    ) -> list[dict[str, float]]:
        """Train to ``steps`` (or stop early at ``until``, checkpointing there), resuming from
        the latest checkpoint in ``out_dir`` if any."""
        t = self.tcfg
        stop = min(t.steps, until) if until is not None else t.steps
        last = self.latest_checkpoint()
        if last is not None and self.step == 0:
            self.load(last)
            log.info("resumed from %s at step %d", last, self.step)
        self.out.mkdir(parents=True, exist_ok=True)
        logf = (self.out / "train_log.jsonl").open("a") if self.rank == 0 else None
        bar = tqdm(
            total=t.steps, initial=self.step, desc="train", disable=self.rank != 0, file=sys.stderr
        )
        t0 = time.perf_counter()
        while self.step < stop:
            rec = self.train_step()
            rec["wall_s"] = time.perf_counter() - t0
            if self.step % t.val_every == 0 or self.step == t.steps:
                rec.update(self.validate())
                if on_val is not None and self.rank == 0:
                    on_val(self)
            if self.step % t.log_every == 0 or "val_loss" in rec:
                self.history.append(rec)
                if logf is not None:
                    logf.write(json.dumps(rec) + "\n")
                    logf.flush()
                bar.set_postfix(loss=f"{rec['loss']:.4f}")
            if self.step % t.ckpt_every == 0 or self.step == stop:
                self.save()
                if self.rank == 0:
                    plot_curves(self.history, self.out / "curves.png")
            bar.update(1)
        bar.close()
        if logf is not None:
            logf.close()
        return self.history


def _train_dict(t: TrainConfig) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return dict(OmegaConf.to_container(OmegaConf.structured(t)))  # type: ignore[arg-type]  # a dict at top level


def plot_curves(history: list[dict[str, float]], path: Path) -> None:
    """Loss and validation curves as a PNG (one panel per stream)."""
    matplotlib = require("matplotlib", "train")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in ("loss", "video", "speech", "sfx", "audio"):
        pts = [(h["step"], h[name]) for h in history if name in h]
        if pts:
            axes[0].plot(*zip(*pts, strict=True), label=name)
        vpts = [(h["step"], h[f"val_{name}"]) for h in history if f"val_{name}" in h]
        if vpts:
            axes[1].plot(*zip(*vpts, strict=True), marker="o", label=f"val {name}")
    for ax, title in zip(
        axes, ("training loss (per stream)", "validation (EMA, fixed noise)"), strict=True
    ):
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:  # no validation yet in a short run
            ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
