"""Ambience beds that run under a whole clip: rain, crowd, room hum, wind, traffic, café, quiet.

Each bed is stationary noise shaped to sound like its scene, RMS-normalised to 1; the mixer
sets its level well under speech. Beds go to the ``sfx`` stem (everything that is not speech)
and are also saved alone as the ``ambience`` stem.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.signal import butter, sosfilt

__all__ = ["AMBIENCES", "synth_ambience"]


def _lp(x: np.ndarray, hz: float, sr: int) -> np.ndarray:
    return np.asarray(sosfilt(butter(2, hz, btype="low", fs=sr, output="sos"), x))


def _bp(x: np.ndarray, lo: float, hi: float, sr: int) -> np.ndarray:
    return np.asarray(sosfilt(butter(2, [lo, hi], btype="band", fs=sr, output="sos"), x))


def _slow(rng: np.random.Generator, n: int, sr: int, hz: float) -> np.ndarray:
    """A smooth random modulation in 0..1 with fluctuations around ``hz``."""
    m = _lp(rng.standard_normal(n), hz, sr)
    return (m - m.min()) / max(1e-9, float(m.max() - m.min()))


def _rain(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    hiss = _bp(rng.standard_normal(n), 800, 6000, sr)
    drops = np.zeros(n)
    idx = rng.integers(0, n, size=int(n / sr * rng.uniform(40, 120)))
    drops[idx] = rng.uniform(1.0, 4.0, size=len(idx))
    drops = _bp(drops, 2000, 7000, sr)
    return hiss + drops


def _crowd(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    out = np.zeros(n)
    for _ in range(6):  # six distant talkers: speech-band noise with syllable-rate bursts
        voice = _bp(rng.standard_normal(n), rng.uniform(200, 400), rng.uniform(1500, 3000), sr)
        out += voice * _slow(rng, n, sr, rng.uniform(3.0, 6.0)) ** 2
    return out


def _hum(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    f0 = float(rng.choice(np.array([50.0, 60.0])))
    tone = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.28)) / k for k in (1, 2, 3, 4))
    return tone + 0.3 * _lp(rng.standard_normal(n), 300, sr)


def _wind(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    return _lp(rng.standard_normal(n), rng.uniform(300, 700), sr) * (0.3 + _slow(rng, n, sr, 0.5))


def _traffic(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    rumble = _lp(rng.standard_normal(n), 200, sr)
    swish = _bp(rng.standard_normal(n), 300, 2500, sr) * _slow(rng, n, sr, 0.4) ** 3
    return rumble + swish


def _cafe(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    out = 0.6 * _crowd(rng, n, sr) / 6
    t = np.arange(int(0.15 * sr)) / sr
    for at in rng.integers(0, max(1, n - len(t)), size=int(n / sr * 1.5)):
        clink = np.sin(2 * np.pi * rng.uniform(2500, 4000) * t) * np.exp(-t / 0.03)
        out[at : at + len(t)] += 0.5 * clink
    return out


def _quiet(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    return _lp(rng.standard_normal(n), 1000, sr)


# name → (synthesiser, caption phrase)
AMBIENCES: dict[str, tuple[Callable[[np.random.Generator, int, int], np.ndarray], str]] = {
    "rain": (_rain, "rain patters in the background"),
    "crowd": (_crowd, "a crowd murmurs in the background"),
    "hum": (_hum, "a room hums quietly"),
    "wind": (_wind, "wind blows outside"),
    "traffic": (_traffic, "traffic passes in the distance"),
    "cafe": (_cafe, "a busy café clinks and chatters"),
    "quiet": (_quiet, "a quiet room"),
}


def synth_ambience(name: str, rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """``n`` samples of bed ``name``, float32 with RMS 1."""
    if name not in AMBIENCES:
        raise ValueError(f"unknown ambience {name!r}; known: {', '.join(AMBIENCES)}")
    x = AMBIENCES[name][0](rng, n, sample_rate)
    x = x - x.mean()
    return (x / max(1e-9, float(np.sqrt(np.mean(x**2))))).astype(np.float32)
