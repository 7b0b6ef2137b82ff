"""Harmony between the speech and sound-effect sub-streams (``docs/eval.md``).

Three figures per clip, on the model's stems and on the ground truth's alike:

* **effect-to-speech ratio** (dB): the RMS of the effects stem in each requested effect's
  window (``EFFECT_WINDOW_S`` from its contact) over the RMS of the speech stem where it is
  voiced (20 ms frames above ``VOICED_DBFS``). The request fixes the effects and the sentence;
  the world's clip for the same request is the target, so the report gives the generated and
  ground-truth ratios and their mean absolute difference per clip.
* **speech → effects leakage** (dB): the effects stem's RMS over voiced speech frames at least
  ``GUARD_S`` from every contact, over the speech stem's RMS there: speech the effects
  sub-stream made (the world's stem holds only ambience there).
* **effects → speech leakage** (dB): the speech stem's RMS in the effect windows over the
  effects stem's RMS there (every effect sits in a speech pause, so the speech stem should be
  near silent).

A model without the speech/SFX split (the one-stream ablation) has no stems: its figures are
None. Leakages are floored at ``FLOOR_DB`` so a silent stem gives a finite figure.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["FLOOR_DB", "clip_harmony", "rms", "summarise_harmony"]

EFFECT_WINDOW_S = 0.15  # the effect's attack and body after its contact
GUARD_S = 0.3  # voiced frames this close to a contact are left out of speech → effects
FRAME_S = 0.02
VOICED_DBFS = -35.0  # a 20 ms speech frame above this is voiced
FLOOR_DB = -60.0


def rms(x: np.ndarray) -> float:
    """Root mean square of ``x`` (0 for an empty array)."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _db(num: float, den: float) -> float | None:
    if den <= 0:
        return None
    return max(FLOOR_DB, 20.0 * float(np.log10(max(num, 1e-12) / den)))


def clip_harmony(
    speech: np.ndarray, sfx: np.ndarray, contacts: Sequence[float], sample_rate: int
) -> dict[str, float | None]:
    """The three figures of one clip: ``speech``/``sfx`` (S,) float32 stems, ``contacts`` the
    requested effects' contact times (s). A figure is None when its frames are missing."""
    hop = round(FRAME_S * sample_rate)
    n = min(len(speech), len(sfx)) // hop
    sp = speech[: n * hop].reshape(n, hop)
    fx = sfx[: n * hop].reshape(n, hop)
    level = 20 * np.log10(np.sqrt(np.mean(sp.astype(np.float64) ** 2, axis=1)) + 1e-12)
    voiced = level > VOICED_DBFS  # (n,)
    centre = (np.arange(n) + 0.5) * FRAME_S
    near = np.zeros(n, bool)
    window = np.zeros(n, bool)
    for t in contacts:
        near |= np.abs(centre - t) < GUARD_S
        window |= (centre >= t) & (centre < t + EFFECT_WINDOW_S)
    far = voiced & ~near
    return {
        "effect_to_speech_db": (
            _db(rms(fx[window]), rms(sp[voiced])) if window.any() and voiced.any() else None
        ),
        "speech_in_sfx_db": _db(rms(fx[far]), rms(sp[far])) if far.any() else None,
        "sfx_in_speech_db": _db(rms(sp[window]), rms(fx[window])) if window.any() else None,
    }


def _mean(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return float(np.mean(vals)) if vals else None


def summarise_harmony(
    generated: list[dict[str, float | None]], truth: list[dict[str, float | None]]
) -> dict[str, float | None]:
    """The report's ``harmony_*`` keys: means over clips of the generated figures and of the
    ground truth's, and the mean |generated − truth| effect-to-speech ratio per clip."""
    err = [
        abs(g["effect_to_speech_db"] - t["effect_to_speech_db"])
        for g, t in zip(generated, truth, strict=True)
        if g["effect_to_speech_db"] is not None and t["effect_to_speech_db"] is not None
    ]
    out: dict[str, float | None] = {"harmony_esr_error_db": float(np.mean(err)) if err else None}
    for key, short in (
        ("effect_to_speech_db", "esr_db"),
        ("speech_in_sfx_db", "speech_in_sfx_db"),
        ("sfx_in_speech_db", "sfx_in_speech_db"),
    ):
        out[f"harmony_{short}"] = _mean([g[key] for g in generated])
        out[f"harmony_{short}_gt"] = _mean([t[key] for t in truth])
    return out
