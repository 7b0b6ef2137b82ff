"""Few-step streaming stage: train as you infer (DESIGN.md §3).

The many-step causal model (the teacher, frozen EMA) and the few-step student are rolled out
chunk by chunk through the *same* KV-cache code the runtime uses (``forward_chunk``):

1. both caches start with the clean reference chunk (the sink);
2. for each next chunk the teacher integrates its ODE from noise with ``teacher_steps`` Euler
   steps, and its states at the student's grid times are kept (ODE-pair regression, CausVid);
3. at each of its ``student_steps`` grid points the student, reading its own cache, regresses
   the velocity that carries the teacher's state to the teacher's next state;
4. the chunk's result is committed to both caches (the teacher's result, or — with
   ``history: student`` — the student's own 4-step sample, so it learns to continue from its
   own output as at inference: a short self-rollout fine-tune).

``evaluate`` measures what the stage buys: the latent distance from a few-step sample to the
teacher's many-step sample from the same noise and history, for the student and for the teacher
itself run with few steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unison_stream.model.conditioning import Conditioning
from unison_stream.model.dit import UnisonDiT, patchify
from unison_stream.model.kv_cache import RollingKVCache
from unison_stream.model.sampler import time_grid
from unison_stream.training.batch import TrainBatch
from unison_stream.training.config import DistillConfig

__all__ = ["FewStepDistiller"]


class FewStepDistiller:
    def __init__(
        self, teacher: UnisonDiT, student: UnisonDiT, dcfg: DistillConfig, *, lr: float = 1e-4
    ) -> None:
        assert dcfg.teacher_steps % dcfg.student_steps == 0, (
            "teacher grid must refine the student's"
        )
        self.teacher = teacher.eval().requires_grad_(False)
        self.student = student.train()
        self.dcfg = dcfg
        self.cfg = student.cfg
        self.opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)

    # ---- helpers ----------------------------------------------------------------------------
    def _chunk(self, batch: TrainBatch, k: int) -> tuple[Tensor, Tensor]:
        """Chunk k of the batch as model tokens: video (B, Fc, P, D), audio (B, S, Nc, Ca)."""
        fc, nc = self.cfg.stream.chunk_latent_frames, self.cfg.audio_frames_per_chunk()
        s = self.student
        v = patchify(
            s.normalize_video(batch.video[:, k * fc : (k + 1) * fc]), self.cfg.latent.patch
        )
        return v, s.normalize_audio(batch.audio[:, :, k * nc : (k + 1) * nc])

    def _cond(self, batch: TrainBatch, k: int) -> Conditioning:
        """Conditioning with the track moved to chunk k's time frame (tracks are absolute)."""
        cs = self.cfg.chunk_seconds()
        shift = k * cs
        c = batch.cond
        return type(c)(
            c.caption_tokens, c.caption_mask, c.caption_pooled, c.transcript_pooled,
            c.track_ids, c.track_start - shift, c.track_end - shift, c.track_mask, c.identity,
        )  # fmt: skip

    @staticmethod
    def _t(shape_v: torch.Size, shape_a: torch.Size, t: float) -> tuple[Tensor, Tensor]:
        return torch.full(shape_v[:2], t), torch.full(shape_a[:3], t)

    @torch.no_grad()
    def _integrate(
        self,
        model: UnisonDiT,
        cache: RollingKVCache,
        k: int,
        cond: Conditioning,
        xv: Tensor,
        xa: Tensor,
        steps: int,
        keep: int,
    ) -> list[tuple[Tensor, Tensor]]:
        """Euler from t = 1 to 0 in ``steps``; the states at every ``keep``-th grid point."""
        grid = time_grid(steps, self.cfg.sampler.shift)
        states = [(xv, xa)]
        for i in range(steps):
            tv, ta = self._t(xv.shape, xa.shape, grid[i])
            vv, va = model.forward_chunk(
                xv, xa, tv, ta, cond, cache=cache, chunk_index=k, write=False
            )
            xv, xa = xv + (grid[i + 1] - grid[i]) * vv, xa + (grid[i + 1] - grid[i]) * va
            if (i + 1) % keep == 0:
                states.append((xv, xa))
        return states

    @torch.no_grad()
    def _commit(
        self,
        model: UnisonDiT,
        cache: RollingKVCache,
        k: int,
        cond: Conditioning,
        xv: Tensor,
        xa: Tensor,
    ) -> None:
        tv, ta = self._t(xv.shape, xa.shape, 0.0)
        model.forward_chunk(xv, xa, tv, ta, cond, cache=cache, chunk_index=k, write=True)

    # ---- training ---------------------------------------------------------------------------
    def train_step(self, batch: TrainBatch, g: torch.Generator) -> dict[str, float]:
        """One rollout over the batch's chunks; returns the mean regression loss per stream."""
        d, cfg = self.dcfg, self.cfg
        b = batch.video.shape[0]
        k_total = min(d.chunks, batch.video.shape[1] // cfg.stream.chunk_latent_frames)
        t_cache, s_cache = self.teacher.new_cache(b), self.student.new_cache(b)
        ref_v, ref_a = self._chunk(batch, 0)
        cond0 = self._cond(batch, 0)
        self._commit(self.teacher, t_cache, 0, cond0, ref_v, ref_a)
        self._commit(self.student, s_cache, 0, cond0, ref_v, ref_a)
        keep = d.teacher_steps // d.student_steps
        grid = time_grid(d.student_steps, cfg.sampler.shift)
        sums = {"video": 0.0, "audio": 0.0}
        n = 0
        for k in range(1, k_total):
            cond = self._cond(batch, k)
            xv0, xa0 = self._chunk(batch, k)
            nv = torch.randn(xv0.shape, generator=g)
            na = torch.randn(xa0.shape, generator=g)
            states = self._integrate(self.teacher, t_cache, k, cond, nv, na, d.teacher_steps, keep)
            self.opt.zero_grad(set_to_none=True)
            loss = torch.zeros(())
            for i in range(d.student_steps):
                (sv, sa), (ev, ea) = states[i], states[i + 1]
                dt = grid[i + 1] - grid[i]
                tv, ta = self._t(sv.shape, sa.shape, grid[i])
                pv, pa = self.student.forward_chunk(
                    sv, sa, tv, ta, cond, cache=s_cache, chunk_index=k, write=False
                )
                lv = F.mse_loss(pv, (ev - sv) / dt)
                la = F.mse_loss(pa, (ea - sa) / dt)
                loss = loss + lv + la
                sums["video"] += lv.item()
                sums["audio"] += la.item()
                n += 1
            (loss / d.student_steps).backward()
            nn.utils.clip_grad_norm_(self.student.parameters(), 1.0)
            self.opt.step()
            hv, ha = states[-1]
            if d.history == "student":
                hv, ha = self._integrate(
                    self.student, s_cache, k, cond, nv, na, d.student_steps, d.student_steps
                )[-1]
            self._commit(self.teacher, t_cache, k, cond, hv, ha)
            self._commit(self.student, s_cache, k, cond, hv, ha)
        return {name: v / max(1, n) for name, v in sums.items()}

    # ---- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, batch: TrainBatch, seed: int = 0) -> dict[str, float]:
        """Latent MSE to the teacher's many-step sample: student few-step vs teacher few-step.

        All three rollouts share the noise and the (teacher's) history, so the figures isolate
        what the few-step stage learned.
        """
        d, cfg = self.dcfg, self.cfg
        was_training = self.student.training
        self.student.eval()
        g = torch.Generator().manual_seed(seed)
        b = batch.video.shape[0]
        caches = {
            name: m.new_cache(b)
            for name, m in (("t", self.teacher), ("tf", self.teacher), ("s", self.student))
        }
        models = {"t": self.teacher, "tf": self.teacher, "s": self.student}
        ref_v, ref_a = self._chunk(batch, 0)
        for name, c in caches.items():
            self._commit(models[name], c, 0, self._cond(batch, 0), ref_v, ref_a)
        err = {"s": 0.0, "tf": 0.0}
        k_total = min(d.chunks, batch.video.shape[1] // cfg.stream.chunk_latent_frames)
        for k in range(1, k_total):
            cond = self._cond(batch, k)
            xv0, xa0 = self._chunk(batch, k)
            nv, na = torch.randn(xv0.shape, generator=g), torch.randn(xa0.shape, generator=g)
            ref = self._integrate(
                self.teacher, caches["t"], k, cond, nv, na, d.teacher_steps, d.teacher_steps
            )[-1]
            for name in ("s", "tf"):
                out = self._integrate(
                    models[name], caches[name], k, cond, nv, na, d.student_steps, d.student_steps
                )[-1]
                err[name] += (F.mse_loss(out[0], ref[0]) + F.mse_loss(out[1], ref[1])).item() / (
                    k_total - 1
                )
            for name, c in caches.items():
                self._commit(models[name], c, k, cond, *ref)
        self.student.train(was_training)
        return {
            f"student_{d.student_steps}step_mse_to_teacher_{d.teacher_steps}step": err["s"],
            f"teacher_{d.student_steps}step_mse_to_teacher_{d.teacher_steps}step": err["tf"],
        }
