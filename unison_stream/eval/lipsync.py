"""Lip sync measured from pixels and sound (``docs/eval.md``; ``docs/eval-measures.md``).

Per clip, the mouth-interior area of each frame (:func:`~unison_stream.data.synth.measure.
mouth_opening`) is correlated with the RMS envelope of the speech the frame owns
(:func:`~unison_stream.data.synth.measure.speech_envelope`) at every lag within ``± max_lag``
frames. The lag of the highest correlation is the clip's **offset** (SyncNet's offset analogue,
positive = the sound comes after the mouth), refined below a frame by a parabola through the
peak and its neighbours, and that correlation its **confidence**. Over clips
the figures are the median ``|offset|`` in ms and the mean confidence; the model's confidence is
reported relative to the same figure on ground-truth clips.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unison_stream.data.synth.measure import lagged_correlation, mouth_opening, speech_envelope

__all__ = ["LipSync", "lip_sync", "summarise_lip_sync"]

MAX_LAG = 5  # frames searched either way (± 200 ms at 25 fps): wider than any plausible offset


@dataclass(frozen=True)
class LipSync:
    """One clip: best lag (frames, + = sound after mouth; None: no sync measurable) and the
    correlation there (0 when none is positive)."""

    lag: int | None
    corr: float
    fps: float
    max_lag: int = MAX_LAG
    frac: float = 0.0  # sub-frame refinement of the peak, in (−0.5, 0.5) frames

    @property
    def offset_ms(self) -> float:
        """Signed offset in ms; a clip without measurable sync counts as the largest searched."""
        lag = self.max_lag if self.lag is None else self.lag + self.frac
        return 1000.0 * lag / self.fps


def lip_sync(
    frames: np.ndarray,
    speech: np.ndarray,
    sample_rate: int,
    fps: float,
    *,
    max_lag: int = MAX_LAG,
    mouth: np.ndarray | None = None,
) -> LipSync:
    """``frames (F, H, W, 3)`` uint8 and their ``speech (S,)`` → :class:`LipSync`.

    ``mouth (F,)``: another per-frame mouth signal to use instead of the interior-colour
    detector (e.g. :func:`~unison_stream.eval.features.mouth_open` for frames that went
    through a lossy video codec). A clip whose mouth never shows, that is silent, or whose best
    correlation is not positive has no measurable sync: lag None, correlation 0 (it counts as
    unsynced, never as perfect).
    """
    mouth = mouth_opening(frames) if mouth is None else np.asarray(mouth, np.float32)
    env = speech_envelope(speech, sample_rate, fps)
    n = min(len(mouth), len(env))
    mouth, env = mouth[:n], env[:n]
    lags = range(-max_lag, max_lag + 1)
    corrs = [lagged_correlation(mouth, env, lag) for lag in lags]
    best = int(np.argmax(corrs))  # ties → the smallest lag
    if corrs[best] <= 0.0:
        return LipSync(None, 0.0, fps, max_lag)
    frac = 0.0
    if 0 < best < len(corrs) - 1:  # parabola through the peak and its neighbours
        a, b, c = corrs[best - 1], corrs[best], corrs[best + 1]
        curve = a - 2 * b + c
        frac = float(np.clip(0.5 * (a - c) / curve, -0.5, 0.5)) if curve < 0 else 0.0
    return LipSync(lags[best], float(corrs[best]), fps, max_lag, frac)


def summarise_lip_sync(clips: list[LipSync]) -> dict[str, float | None]:
    """Median |offset| (ms), median signed offset (ms), mean confidence, unmeasurable clips."""
    if not clips:
        return {"offset_ms": None, "offset_signed_ms": None, "corr": None, "unmeasured": 0}
    return {
        "unmeasured": sum(c.lag is None for c in clips),
        "offset_ms": float(np.median([abs(c.offset_ms) for c in clips])),
        "offset_signed_ms": float(np.median([c.offset_ms for c in clips])),
        "corr": float(np.mean([c.corr for c in clips])),
    }
