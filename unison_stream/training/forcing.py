"""Bidirectional cross-modal forcing for training (``docs/training.md`` "The objective").

- Per-chunk, per-modality timesteps ``t_v``, ``t_a`` (diffusion forcing: every chunk has its own
  noise level; chunk 0 is the clean reference/sink).
- **Progressive stabilization**: the first ``sync_frac`` of training uses ``t_a = t_v``; the next
  ``bounded_frac`` samples them independently with probability ``p`` under ``|t_a − t_v| ≤ gap``;
  the rest fully independently.
- Direction ``d = 1[t_a < t_v]`` (the cleaner modality guides the noisier one) weights the losses:
  ``L = (1 + λd)·L_video + (1 + λ(1 − d))·(L_speech + L_sfx)``.
- Multi-task: text→AV, audio→video (audio held at t = 0), video→audio (video held at t = 0).

With ``model.ablation.cross_modal_forcing = false`` timesteps are always synchronous and the
loss weights are 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from unison_stream.model.conditioning import Conditioning
from unison_stream.training.config import CurriculumConfig, TaskConfig

__all__ = ["NoisePlan", "event_frame_weights", "flow_losses", "sample_noise_plan", "stage_at"]

TASKS = ("text_to_av", "audio_to_video", "video_to_audio")


def stage_at(progress: float, cur: CurriculumConfig) -> str:
    """Curriculum stage at ``progress`` ∈ [0, 1]: "sync", "bounded" or "independent"."""
    if progress < cur.sync_frac:
        return "sync"
    if progress < cur.sync_frac + cur.bounded_frac:
        return "bounded"
    return "independent"


@dataclass
class NoisePlan:
    """Noise levels per sequence and chunk: t_video, t_audio (B, K); task index per sequence."""

    t_video: Tensor
    t_audio: Tensor
    task: Tensor  # (B,) long, index into TASKS


def _logit_normal(shape: tuple[int, ...], g: torch.Generator) -> Tensor:
    """t = sigmoid(N(0, 1)): flow matching's usual emphasis on mid noise levels."""
    return torch.sigmoid(torch.randn(shape, generator=g))


def sample_noise_plan(
    batch: int,
    chunks: int,
    progress: float,
    cur: CurriculumConfig,
    tasks: TaskConfig,
    g: torch.Generator,
    *,
    forcing: bool = True,
) -> NoisePlan:
    """Sample per-chunk noise levels for a batch of ``chunks``-chunk sequences."""
    t_v = _logit_normal((batch, chunks), g)
    stage = stage_at(progress, cur) if forcing else "sync"
    if stage == "sync":
        t_a = t_v.clone()
    elif stage == "bounded":
        gap = (torch.rand((batch, chunks), generator=g) * 2 - 1) * cur.max_gap
        indep = torch.rand((batch, 1), generator=g) < cur.p_independent
        t_a = torch.where(indep, (t_v + gap).clamp(0.0, 1.0), t_v)
    else:
        t_a = _logit_normal((batch, chunks), g)
    # history as the cache holds it: clean chunks before the last one
    clean_hist = torch.rand((batch, 1), generator=g) < cur.clean_history_prob
    hist = torch.zeros(batch, chunks, dtype=torch.bool)
    hist[:, 1:-1] = True
    t_v = torch.where(clean_hist & hist, 0.0, t_v)
    t_a = torch.where(clean_hist & hist, 0.0, t_a)
    # tasks: hold one modality clean
    probs = torch.tensor([tasks.text_to_av, tasks.audio_to_video, tasks.video_to_audio])
    task = torch.multinomial(probs / probs.sum(), batch, replacement=True, generator=g)
    t_a = torch.where((task == 1)[:, None], 0.0, t_a)
    t_v = torch.where((task == 2)[:, None], 0.0, t_v)
    t_v[:, 0] = 0.0  # the reference chunk is given clean
    t_a[:, 0] = 0.0
    return NoisePlan(t_v, t_a, task)


EVENT_FRAME_SPAN_S = (-0.04, 0.16)  # an effect's attack and early body around its onset


def event_frame_weights(
    cond: Conditioning,
    frames: int,
    hz: float,
    weight: float,
    span: tuple[float, float] = EVENT_FRAME_SPAN_S,
) -> Tensor:
    """(B, frames) loss weights of audio latent frames: ``1 + weight`` for a frame that overlaps
    ``[onset + span[0], onset + span[1]]`` of an event token of ``cond``'s track (times from the
    sequence start), 1 elsewhere. An effect's attack fills one or two of the ~8 frames of a
    chunk, so a chunk mean alone gives it little weight."""
    onset = cond.track_start  # (B, L)
    is_event = cond.event_mask()  # (B, L)
    t0 = torch.arange(frames, device=onset.device, dtype=onset.dtype) / hz  # (N,) frame starts
    hit = (t0[None, :, None] + 1 / hz > onset[:, None] + span[0]) & (
        t0[None, :, None] < onset[:, None] + span[1]
    )  # (B, N, L)
    near = (hit & is_event[:, None]).any(-1)  # (B, N)
    return 1.0 + weight * near.float()


def _chunk_mse(
    pred: Tensor, target: Tensor, chunks: int, dim: int, weight: Tensor | None = None
) -> Tensor:
    """Mean squared error per chunk: splits ``dim`` into ``chunks`` equal parts → (B, K).
    ``weight`` (B, T) scales each position along ``dim`` first."""
    err = (pred - target).pow(2)
    err = err.movedim(dim, 1)  # (B, T, …)
    if weight is not None:
        err = err * weight.view(*weight.shape, *([1] * (err.dim() - 2)))
    b, t = err.shape[:2]
    return err.reshape(b, chunks, t // chunks, -1).mean(dim=(2, 3))


def flow_losses(
    pred_v: Tensor,
    pred_a: Tensor,
    target_v: Tensor,
    target_a: Tensor,
    plan: NoisePlan,
    lam: float,
    *,
    forcing: bool = True,
    sfx_weight: float = 1.0,
    sfx_frame_weight: Tensor | None = None,
) -> dict[str, Tensor]:
    """Separate flow-matching losses for video, speech and SFX, weighted by direction.

    pred/target_v (B, F, P, Cv·p²), pred/target_a (B, S, N, Ca); only noisy chunks (t > 0)
    count. Returns ``loss`` (the weighted total, the SFX term also times ``sfx_weight`` and,
    frame by frame, ``sfx_frame_weight`` (B, N): see :func:`event_frame_weights`) and the
    unweighted ``video``, ``speech``, ``sfx`` (and ``audio`` when S = 1) terms.
    """
    k = plan.t_video.shape[1]
    mv = plan.t_video > 0
    ma = plan.t_audio > 0
    d = (plan.t_audio < plan.t_video).float()
    w_v = (1 + lam * d) if forcing else torch.ones_like(d)
    w_a = (1 + lam * (1 - d)) if forcing else torch.ones_like(d)
    mse_v = _chunk_mse(pred_v, target_v, k, 1)  # (B, K)

    def masked(x: Tensor, w: Tensor, m: Tensor) -> Tensor:
        return (x * w * m).sum() / m.sum().clamp_min(1)

    out = {"video": masked(mse_v, torch.ones_like(d), mv)}
    total = masked(mse_v, w_v, mv)
    names = ("speech", "sfx") if pred_a.shape[1] == 2 else ("audio",)
    for i, name in enumerate(names):
        mse = _chunk_mse(pred_a[:, i], target_a[:, i], k, 1)
        out[name] = masked(mse, torch.ones_like(d), ma)
        if name == "sfx":
            if sfx_frame_weight is not None:
                mse = _chunk_mse(pred_a[:, i], target_a[:, i], k, 1, sfx_frame_weight)
            total = total + masked(mse, w_a, ma) * sfx_weight
        else:
            total = total + masked(mse, w_a, ma)
    out["loss"] = total
    return out
