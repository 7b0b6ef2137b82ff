"""Procedural sound effects, one synthesiser per event class (clap, snap, knock, whoosh, bell).

Each effect starts at its sample 0 with an attack of at most a few milliseconds, so its audio
onset is exactly where it is placed; the clip places that sample on the gesture's contact frame.
Parameters (pitch, decay, brightness) are drawn per instance so no two claps are identical.
Every waveform is peak-normalised to 1; the mixer sets its level.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from scipy.signal import butter, sosfilt

from unison_stream.vocab import EVENT_CLASSES

__all__ = ["ATTACK_S", "END_LEVEL", "audible_length", "synth_event", "typical_span_s"]

ATTACK_S = 0.002  # linear fade-in of every effect: 2 ms, well inside one 40 ms video frame
END_LEVEL = 0.01  # an effect "ends" when it falls below −40 dB of its peak


def _band(x: np.ndarray, lo: float, hi: float, sr: int, order: int = 2) -> np.ndarray:
    sos = butter(order, [lo, min(hi, 0.45 * sr)], btype="band", fs=sr, output="sos")
    return np.asarray(sosfilt(sos, x))


def _env(n: int, sr: int, decay_s: float) -> np.ndarray:
    t = np.arange(n) / sr
    return np.exp(-t / decay_s)


def _clap(rng: np.random.Generator, sr: int) -> np.ndarray:
    n = int(0.25 * sr)
    noise = rng.standard_normal(n)
    body = _band(noise, rng.uniform(800, 1200), rng.uniform(2500, 4000), sr)
    return body * _env(n, sr, rng.uniform(0.015, 0.03))


def _snap(rng: np.random.Generator, sr: int) -> np.ndarray:
    n = int(0.12 * sr)
    t = np.arange(n) / sr
    tone = np.sin(2 * np.pi * rng.uniform(1800, 2600) * t)
    click = _band(rng.standard_normal(n), 2500, 7000, sr)
    return (0.6 * tone + click) * _env(n, sr, rng.uniform(0.008, 0.015))


def _knock(rng: np.random.Generator, sr: int) -> np.ndarray:
    n = int(0.3 * sr)
    t = np.arange(n) / sr
    f0 = rng.uniform(140, 260)
    body = np.sin(2 * np.pi * f0 * t) + 0.5 * np.sin(2 * np.pi * 2.3 * f0 * t)
    thud = _band(rng.standard_normal(n), 200, 1500, sr)
    return (body * _env(n, sr, rng.uniform(0.03, 0.06))) + 0.7 * thud * _env(n, sr, 0.012)


def _whoosh(rng: np.random.Generator, sr: int) -> np.ndarray:
    dur = rng.uniform(0.3, 0.45)
    n = int(dur * sr)
    t = np.arange(n) / sr
    noise = rng.standard_normal(n)
    # a band sweeping downwards, built from short overlapping blocks
    out = np.zeros(n)
    block = int(0.02 * sr)
    f_hi, f_lo = rng.uniform(3000, 5000), rng.uniform(400, 800)
    for s in range(0, n, block):
        frac = s / n
        fc = f_hi * (f_lo / f_hi) ** frac
        seg = _band(noise[max(0, s - block) : s + block], 0.6 * fc, 1.6 * fc, sr)
        out[s : s + block] = seg[-len(out[s : s + block]) :]
    swell = np.minimum(1.0, 0.5 + t / 0.05) * np.exp(-t / (0.45 * dur))
    return out * swell


def _bell(rng: np.random.Generator, sr: int) -> np.ndarray:
    n = int(0.9 * sr)
    t = np.arange(n) / sr
    f0 = rng.uniform(1400, 2600)
    partials = ((1.0, 1.0, 0.5), (2.76, 0.5, 0.25), (5.4, 0.25, 0.1), (8.93, 0.12, 0.05))
    out = np.zeros(n)
    for ratio, amp, decay in partials:
        if ratio * f0 < 0.45 * sr:
            out += amp * np.sin(2 * np.pi * ratio * f0 * t) * np.exp(-t / decay)
    strike = _band(rng.standard_normal(n), 2000, 6000, sr) * _env(n, sr, 0.004)
    return out + 0.3 * strike


_SYNTHS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "clap": _clap,
    "snap": _snap,
    "knock": _knock,
    "whoosh": _whoosh,
    "bell": _bell,
}
assert set(_SYNTHS) == set(EVENT_CLASSES), "every event class needs a synthesiser"


def synth_event(name: str, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """A fresh instance of effect ``name``: float32, onset at sample 0, peak 1."""
    if name not in _SYNTHS:
        raise ValueError(f"unknown event {name!r}; known events: {', '.join(_SYNTHS)}")
    x = _SYNTHS[name](rng, sample_rate)
    ramp = max(1, int(ATTACK_S * sample_rate))
    x[:ramp] *= np.linspace(0.0, 1.0, ramp, endpoint=False) + 1.0 / ramp
    x /= max(1e-9, float(np.abs(x).max()))
    return x.astype(np.float32)


def audible_length(x: np.ndarray) -> int:
    """Samples from the start of effect ``x`` to its last one above ``END_LEVEL`` × its peak."""
    loud = np.nonzero(np.abs(x) > END_LEVEL * np.abs(x).max(initial=0.0))[0]
    return int(loud[-1]) + 1 if len(loud) else 0


@functools.cache
def typical_span_s(name: str, sample_rate: int, draws: int = 64) -> float:
    """Median audible length (s) of ``draws`` seeded instances of effect ``name``: the span
    (onset → ``audio_end``) its event token has in the world's annotations, hence in training.
    About 0.05 s for a snap, 0.1 clap, 0.19 knock, 0.38 whoosh, 0.9 bell."""
    rng = np.random.default_rng(0)
    spans = [audible_length(synth_event(name, rng, sample_rate)) for _ in range(draws)]
    return float(np.median(spans)) / sample_rate
