"""Few-step streaming stage: train as you infer (``docs/training.md`` "Few-step stage").

The many-step causal model (the teacher, frozen) and the few-step student are rolled out chunk
by chunk through the *same* sampler, guided call and KV-cache code the runtime uses
(``Sampler``, ``guided_call``, ``forward_chunk``):

1. both caches start with the clean reference chunk (the sink);
2. for each next chunk the teacher samples from noise with ``teacher_steps`` (with its event
   guidance when ``distill.guidance``: guidance distillation), and its states at the student's
   grid times are kept (ODE-pair regression, CausVid);
3. at each of its ``student_steps`` grid points the student, reading its own cache, regresses
   the velocity that carries the teacher's state to the teacher's next state;
4. the chunk is committed to both caches as the runtime commits (``stream.commit``: a clean
   pass over the result, or the K/V of the last call); with ``history: student`` both continue
   from the student's own sample (a short self-rollout fine-tune).

With ``audio_driven_prob`` a step holds the speech clean (the audio→video task), as the
runtime's audio-driven mode does.

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
from unison_stream.model.generator import guidance_condition, guided_call
from unison_stream.model.kv_cache import RollingKVCache
from unison_stream.model.sampler import Sampler, time_grid
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

    def _rollout(
        self,
        model: UnisonDiT,
        cache: RollingKVCache,
        k: int,
        cond: Conditioning,
        noise: tuple[Tensor, Tensor],
        steps: int,
        *,
        guided: bool,
        write: bool,
        clean_a: Tensor | None = None,
    ) -> list[tuple[Tensor, Tensor]]:
        """The runtime's sampler on chunk k (the same ``Sampler`` and guided call as
        :class:`CausalGenerator`): the states at each of the ``steps + 1`` grid points.

        ``guided``: event guidance of ``model.cfg.sampler`` (the teacher); ``write``: the last
        call writes the cache (``stream.commit: last_step``); ``clean_a`` (B, S, Nc, Ca): the
        speech sub-stream is given clean (the audio-driven task).
        """
        sampler = Sampler(steps=steps, shift=self.cfg.sampler.shift)
        bare = guidance_condition(model.cfg, cond) if guided else None
        states: list[tuple[Tensor, Tensor]] = []

        def denoise(
            xv: Tensor, xa: Tensor, tv: Tensor, ta: Tensor, final: bool
        ) -> tuple[Tensor, Tensor]:
            states.append((xv, xa))
            return guided_call(
                model, xv, xa, tv, ta, cond, bare, cache=cache, chunk_index=k, write=final and write
            )

        with torch.no_grad():
            out = sampler.sample(
                denoise, *noise, clean_a=clean_a, clean_a_mask=self._speech_mask(clean_a)
            )
        return [*states, out]

    def _speech_mask(self, clean_a: Tensor | None) -> Tensor | None:
        """(S,) bool: the sub-streams held clean (speech) when ``clean_a`` is given."""
        if clean_a is None:
            return None
        return torch.arange(clean_a.shape[1]) == 0

    def _times(
        self, xv: Tensor, xa: Tensor, t: float, clean_a: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Per-token levels at grid time t: video (B, F), audio (B, S, N) with held streams 0."""
        tv, ta = self._t(xv.shape, xa.shape, t)
        fixed = self._speech_mask(clean_a)
        if fixed is not None:
            ta[:, fixed] = 0.0
        return tv, ta

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

    @torch.no_grad()
    def _commit_at(
        self,
        model: UnisonDiT,
        cache: RollingKVCache,
        k: int,
        cond: Conditioning,
        state: tuple[Tensor, Tensor],
        t: float,
        clean_a: Tensor | None,
    ) -> None:
        """Write chunk k as a last-step commit does: the K/V of a call on ``state`` at t."""
        tv, ta = self._times(*state, t, clean_a)
        model.forward_chunk(*state, tv, ta, cond, cache=cache, chunk_index=k, write=True)

    # ---- training ---------------------------------------------------------------------------
    def train_step(self, batch: TrainBatch, g: torch.Generator) -> dict[str, float]:
        """One rollout over the batch's chunks; returns the mean regression loss per stream.

        The teacher runs the runtime sampler (``teacher_steps``, event guidance when
        ``distill.guidance``: guidance distillation, so the student needs no extra call); at
        each of its grid points the student regresses the velocity that carries the teacher's
        state to the teacher's next one. With ``stream.commit: last_step`` each cache is written
        as at inference, by the K/V of the model's last call of the chunk.
        """
        d, cfg = self.dcfg, self.cfg
        b = batch.video.shape[0]
        k_total = min(d.chunks, batch.video.shape[1] // cfg.stream.chunk_latent_frames)
        audio_driven = (
            d.audio_driven_prob > 0 and float(torch.rand((), generator=g)) < d.audio_driven_prob
        )
        heard = audio_driven and d.heard_track_prob > 0  # the front end's track, as served
        if heard and float(torch.rand((), generator=g)) < d.heard_track_prob:
            batch = batch.hearing(torch.ones(b, dtype=torch.bool))
        t_cache, s_cache = self.teacher.new_cache(b), self.student.new_cache(b)
        ref_v, ref_a = self._chunk(batch, 0)
        cond0 = self._cond(batch, 0)
        self._commit(self.teacher, t_cache, 0, cond0, ref_v, ref_a)
        self._commit(self.student, s_cache, 0, cond0, ref_v, ref_a)
        keep = d.teacher_steps // d.student_steps
        grid = time_grid(d.student_steps, cfg.sampler.shift)
        last_step = cfg.stream.commit == "last_step"
        sums = {"video": 0.0, "speech": 0.0, "sfx": 0.0}
        n = 0
        for k in range(1, k_total):
            cond = self._cond(batch, k)
            xv0, xa0 = self._chunk(batch, k)
            noise = (torch.randn(xv0.shape, generator=g), torch.randn(xa0.shape, generator=g))
            clean_a = xa0 if audio_driven else None
            states = self._rollout(
                self.teacher, t_cache, k, cond, noise, d.teacher_steps,
                guided=d.guidance, write=last_step and d.history == "teacher", clean_a=clean_a,
            )  # fmt: skip
            self.opt.zero_grad(set_to_none=True)
            loss = torch.zeros(())
            for i in range(d.student_steps):
                (sv, sa), (ev, ea) = states[i * keep], states[(i + 1) * keep]
                dt = grid[i + 1] - grid[i]
                tv, ta = self._times(sv, sa, grid[i], clean_a)
                pv, pa = self.student.forward_chunk(
                    sv, sa, tv, ta, cond, cache=s_cache, chunk_index=k, write=False
                )
                lv = F.mse_loss(pv, (ev - sv) / dt)
                la = ((pa - (ea - sa) / dt) ** 2).mean(dim=(0, 2, 3))  # (S,) per sub-stream
                scored = la[1:] if audio_driven else la  # a held stream is not predicted
                loss = loss + lv + scored.mean()
                sums["video"] += lv.item()
                sums["speech"] += la[0].item() if not audio_driven else 0.0
                sums["sfx"] += la[-1].item()
                n += 1
            (loss / d.student_steps).backward()
            nn.utils.clip_grad_norm_(self.student.parameters(), 1.0)
            self.opt.step()
            if d.history == "student":  # both continue from the student's own sample
                own = self._rollout(
                    self.student, s_cache, k, cond, noise, d.student_steps,
                    guided=False, write=last_step, clean_a=clean_a,
                )[-1]  # fmt: skip
                if not last_step:
                    self._commit(self.student, s_cache, k, cond, *own)
                self._commit(self.teacher, t_cache, k, cond, *own)
            elif last_step:  # the teacher's last call wrote its cache; the student's likewise
                last = states[(d.student_steps - 1) * keep]
                self._commit_at(self.student, s_cache, k, cond, last, grid[-2], clean_a)
            else:
                self._commit(self.teacher, t_cache, k, cond, *states[-1])
                self._commit(self.student, s_cache, k, cond, *states[-1])
        return {name: v / max(1, n) for name, v in sums.items()}

    # ---- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, batch: TrainBatch, seed: int = 0) -> dict[str, float]:
        """Latent MSE to the teacher's sample (``teacher_steps``, guided as configured):
        student at ``student_steps`` vs the teacher itself at ``student_steps``.

        All three rollouts share the noise and the (teacher's) history, so the figures isolate
        what the few-step stage learned.
        """
        d, cfg = self.dcfg, self.cfg
        was_training = self.student.training
        self.student.eval()
        g = torch.Generator().manual_seed(seed)
        b = batch.video.shape[0]
        models = {"t": self.teacher, "tf": self.teacher, "s": self.student}
        caches = {name: m.new_cache(b) for name, m in models.items()}
        ref_v, ref_a = self._chunk(batch, 0)
        for name, c in caches.items():
            self._commit(models[name], c, 0, self._cond(batch, 0), ref_v, ref_a)
        err = {"s": 0.0, "tf": 0.0}
        last_step = cfg.stream.commit == "last_step"
        grid = time_grid(d.student_steps, cfg.sampler.shift)
        last = (d.student_steps - 1) * (d.teacher_steps // d.student_steps)
        k_total = min(d.chunks, batch.video.shape[1] // cfg.stream.chunk_latent_frames)
        for k in range(1, k_total):
            cond = self._cond(batch, k)
            xv0, xa0 = self._chunk(batch, k)
            noise = (torch.randn(xv0.shape, generator=g), torch.randn(xa0.shape, generator=g))
            states = self._rollout(
                self.teacher, caches["t"], k, cond, noise, d.teacher_steps,
                guided=d.guidance, write=last_step,
            )  # fmt: skip
            ref = states[-1]
            for name in ("s", "tf"):
                out = self._rollout(
                    models[name], caches[name], k, cond, noise, d.student_steps,
                    guided=d.guidance and name == "tf", write=False,
                )[-1]  # fmt: skip
                err[name] += (F.mse_loss(out[0], ref[0]) + F.mse_loss(out[1], ref[1])).item() / (
                    k_total - 1
                )
            for name, c in caches.items():  # the teacher's history, committed as in training
                if not last_step:
                    self._commit(models[name], c, k, cond, *ref)
                elif name != "t":
                    self._commit_at(models[name], c, k, cond, states[last], grid[-2], None)
        self.student.train(was_training)
        return {
            f"student_{d.student_steps}step_mse_to_teacher_{d.teacher_steps}step": err["s"],
            f"teacher_{d.student_steps}step_mse_to_teacher_{d.teacher_steps}step": err["tf"],
        }
