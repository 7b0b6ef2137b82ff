"""Flow-matching sampler with a time grid per modality (``docs/model.md`` "Sampler and generator").

Convention: ``x_t = (1 − t)·x₀ + t·ε``; the model predicts the velocity ``v = ε − x₀``; an Euler
step from t to t' is ``x ← x + (t' − t)·v``.

Two mechanisms from the method:

- **clean-modality conditioning**: a modality (or one audio sub-stream) given clean is held at
  ``t = 0`` and its tokens are re-imposed after every step (text→AV, audio→video, video→audio);
- **cross-modal forcing schedules**: inside a chunk one modality may lead by ``lead_steps`` solver
  steps, so the other one denoises against a cleaner partner. With ``steps`` S and lead L the
  chunk takes S + L model calls; L = 0 (or ``lead = "none"``) is plain joint sampling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ForcingStep", "Sampler", "forcing_schedule", "time_grid"]

# denoise(x_video, x_audio, t_video (B, F), t_audio (B, S, N), final) -> (v_video, v_audio);
# ``final`` is True on the chunk's last model call (where a "last_step" commit writes the cache).
DenoiseFn = Callable[[Tensor, Tensor, Tensor, Tensor, bool], tuple[Tensor, Tensor]]


def time_grid(steps: int, shift: float = 1.0) -> list[float]:
    """Noise levels from 1 to 0 in ``steps`` intervals, shifted by ``t' = s·t / (1 + (s−1)·t)``
    (s > 1 spends more steps at high noise)."""
    ts = [1.0 - i / steps for i in range(steps + 1)]
    return [shift * t / (1.0 + (shift - 1.0) * t) for t in ts]


@dataclass(frozen=True)
class ForcingStep:
    """One model call of a chunk: each modality's noise level now and after the update."""

    t_video: float
    t_video_next: float
    t_audio: float
    t_audio_next: float


def forcing_schedule(
    steps: int, lead: str, lead_steps: int, shift: float = 1.0
) -> list[ForcingStep]:
    """The per-call noise levels of both modalities for one chunk.

    The leader walks the grid from the first call; the follower waits at t = 1 for
    ``lead_steps`` calls, then walks it; a modality that has arrived at t = 0 stays there
    (its clean tokens guide the other one).
    """
    if lead not in ("none", "audio", "video"):
        raise ValueError(f"lead must be none, audio or video, not {lead!r}")
    grid = time_grid(steps, shift)
    lag = 0 if lead == "none" else lead_steps

    def at(i: int) -> float:
        return grid[min(max(i, 0), steps)]

    out = []
    for i in range(steps + lag):
        lead_t, lead_n = at(i), at(i + 1)
        fol_t, fol_n = at(i - lag), at(i - lag + 1) if i - lag >= 0 else at(0)
        if lead == "video":
            out.append(ForcingStep(lead_t, lead_n, fol_t, fol_n))
        else:  # audio leads, or no leader (lag = 0, both identical)
            out.append(ForcingStep(fol_t, fol_n, lead_t, lead_n))
    return out


@dataclass
class Sampler:
    """Runs one chunk's schedule against a denoiser; sans-I/O and stateless between chunks."""

    steps: int
    shift: float = 1.0
    cross_modal_forcing: bool = True  # ablation switch: False forces joint sampling

    def schedule(self, lead: str, lead_steps: int) -> list[ForcingStep]:
        if not self.cross_modal_forcing:
            lead, lead_steps = "none", 0
        return forcing_schedule(self.steps, lead, lead_steps, self.shift)

    def sample(
        self,
        denoise: DenoiseFn,
        noise_v: Tensor,
        noise_a: Tensor,
        *,
        clean_v: Tensor | None = None,
        clean_a: Tensor | None = None,
        clean_a_mask: Tensor | None = None,
        lead: str = "none",
        lead_steps: int = 0,
    ) -> tuple[Tensor, Tensor]:
        """Denoise one chunk from noise.

        noise_v (B, F, P, C), noise_a (B, S, N, Ca). ``clean_v`` holds video clean;
        ``clean_a`` with ``clean_a_mask`` (S,) bool holds the chosen audio sub-streams clean
        (e.g. speech given, SFX generated). Returns x₀ estimates for video and audio; when
        everything is given clean no model call is made.
        """
        b, f = noise_v.shape[:2]
        s, n = noise_a.shape[1:3]
        dev = noise_v.device
        a_fixed = torch.zeros(s, dtype=torch.bool, device=dev)
        if clean_a is not None:
            a_fixed = clean_a_mask if clean_a_mask is not None else ~a_fixed
        xv = clean_v.clone() if clean_v is not None else noise_v.clone()
        xa = noise_a.clone()
        if clean_a is not None:
            xa = torch.where(a_fixed[None, :, None, None], clean_a, noise_a)
        all_a_fixed = bool(a_fixed.all())
        if clean_v is not None or all_a_fixed:
            lead, lead_steps = "none", 0  # nothing to lead when one side is given whole
        calls = [
            st
            for st in self.schedule(lead, lead_steps)
            if (clean_v is None and st.t_video != st.t_video_next)
            or (not all_a_fixed and st.t_audio != st.t_audio_next)
        ]
        for i, st in enumerate(calls):
            tv = torch.full((b, f), 0.0 if clean_v is not None else st.t_video, device=dev)
            ta = torch.full((b, s, n), st.t_audio, device=dev)
            ta[:, a_fixed] = 0.0
            vel_v, vel_a = denoise(xv, xa, tv, ta, i == len(calls) - 1)
            if clean_v is None:
                xv = xv + (st.t_video_next - st.t_video) * vel_v
            xa_new = xa + (st.t_audio_next - st.t_audio) * vel_a
            xa = torch.where(a_fixed[None, :, None, None], xa, xa_new)  # re-impose clean tokens
        return xv, xa
