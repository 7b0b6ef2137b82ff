"""Audio helpers of the engine: the loudness-controlled mix and audio-driven input.

- :class:`Mixer`: speech and SFX stems → one mono mix with per-stem gains and a peak limiter
  whose gain is carried across chunks (instant attack ramped over the chunk, slow release),
  so loud effects never clip and chunk joins never click.
- :func:`split_mix`: a mix and the raw stems it was made of → the stems at the mix's level
  (speech + sfx == mix); the one place besides :class:`Mixer` that knows its gains
  (``docs/stems.md``).
- :func:`resample`: any input rate → the media rate (polyphase, no delay);
  :class:`StreamResampler` does the same piece by piece (streaming audio input), sample for
  sample what :func:`resample` gives for the whole waveform.
- :class:`BandEnergySpeechEncoder`: a **fallback** speech encoder for the audio-driven mode,
  used until the trained audio codec ships its encoder (``unison_stream/codecs``): log band
  energies of each audio-latent hop, one band per latent channel. It is deterministic, so the
  latents held clean in the model are exactly the ones it computed; the speech *stem* the
  engine returns is the caller's waveform itself, untouched.
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
from scipy.signal import resample_poly

from unison_stream.config import UnisonConfig

__all__ = [
    "SFX_GAIN_DB",
    "SPEECH_GAIN_DB",
    "BandEnergySpeechEncoder",
    "Mixer",
    "StreamResampler",
    "resample",
    "split_mix",
]

SPEECH_GAIN_DB = 0.0  # the voice at its own level
SFX_GAIN_DB = -3.0  # effects sit a little under the voice, so a clap never masks a word


def resample(pcm: np.ndarray, rate: int, target: int) -> np.ndarray:
    """(S,) float waveform at ``rate`` → float32 at ``target``."""
    x = np.asarray(pcm, dtype=np.float32).reshape(-1)
    if rate == target:
        return x.copy()
    r = Fraction(target, rate)
    return resample_poly(x, r.numerator, r.denominator).astype(np.float32)


class StreamResampler:
    """Pieces of a waveform at ``rate`` → float32 at ``target``, bit-exact with
    :func:`resample` of the whole.

    ``resample_poly`` is shift-invariant for input offsets that are multiples of ``down`` and
    its output sample *n* only reads inputs within ``half_len / up`` of ``n·down/up``
    (``half_len = 10·max(up, down)``, scipy's filter). So each piece resamples a window that
    starts ``ctx`` inputs before the first output still owed (rounded down to a multiple of
    ``down``) and emits only the outputs whose whole support has arrived; :meth:`end` emits the
    rest, zero-padded at the end exactly as the whole-waveform call pads it.
    """

    def __init__(self, rate: int, target: int) -> None:
        r = Fraction(target, rate)
        self.up, self.down = r.numerator, r.denominator
        self.ctx = 10 * max(self.up, self.down) // self.up + 2  # inputs an output reads, each side
        self._x = np.zeros(0, np.float32)  # inputs from ``_base`` on (earlier ones are dropped)
        self._base = 0  # input index of ``_x[0]`` (a multiple of ``down``)
        self._done = 0  # outputs emitted

    @property
    def identity(self) -> bool:
        return self.up == self.down == 1

    def push(self, pcm: np.ndarray) -> np.ndarray:
        """Add (S,) input samples; returns the outputs they complete (possibly none)."""
        x = np.asarray(pcm, dtype=np.float32).reshape(-1)
        if self.identity:
            self._done += x.size
            return x.copy()
        self._x = np.concatenate([self._x, x])
        n = self._base + self._x.size
        return self._emit(max(0, (n - self.ctx) * self.up // self.down))

    def end(self) -> np.ndarray:
        """The remaining outputs, up to ``⌈S·up/down⌉`` for the S inputs pushed."""
        if self.identity:
            return np.zeros(0, np.float32)
        n = self._base + self._x.size
        return self._emit(-(-n * self.up // self.down))

    def _emit(self, upto: int) -> np.ndarray:
        if upto <= self._done:
            return np.zeros(0, np.float32)
        first_input = self._done * self.down // self.up
        a = max(0, (first_input - self.ctx) // self.down * self.down)  # ≥ _base: inputs kept
        y = resample_poly(self._x[a - self._base :], self.up, self.down).astype(np.float32)
        off = a * self.up // self.down
        out = y[self._done - off : upto - off]
        self._done = upto
        self._x, self._base = self._x[a - self._base :], a  # what later windows can still read
        return out


class Mixer:
    """speech·g_sp + sfx·g_sfx under a carried peak limiter (see the module docstring)."""

    ATTACK = 80  # samples (5 ms at 16 kHz) over which a gain cut is ramped in

    def __init__(
        self,
        *,
        speech_gain_db: float = SPEECH_GAIN_DB,
        sfx_gain_db: float = SFX_GAIN_DB,
        ceiling: float = 0.95,
        release_per_chunk: float = 0.25,
    ) -> None:
        self.g_sp = 10 ** (speech_gain_db / 20)
        self.g_sfx = 10 ** (sfx_gain_db / 20)
        self.ceiling, self.release = ceiling, release_per_chunk
        self.gain = 1.0  # limiter gain carried to the next chunk

    def reset(self) -> None:
        self.gain = 1.0

    def mix(self, speech: np.ndarray, sfx: np.ndarray | None) -> np.ndarray:
        """(S,) stems → (S,) float32 mix in [-1, 1]."""
        x = self.g_sp * speech.astype(np.float32)
        if sfx is not None:
            x = x + self.g_sfx * sfx.astype(np.float32)
        peak = float(np.abs(x).max()) if x.size else 0.0
        full = min(1.0, self.ceiling / peak) if peak > 0 else 1.0
        if full < self.gain:  # attack: reach the new gain within the first ATTACK samples
            ramp = np.full(x.size, full, dtype=np.float32)
            m = min(x.size, self.ATTACK)
            ramp[:m] = np.linspace(self.gain, full, num=m, dtype=np.float32)
            self.gain = full
        else:  # release: move part of the way back up, linearly across the chunk
            new = self.gain + self.release * (full - self.gain)
            ramp = np.linspace(self.gain, new, num=x.size, dtype=np.float32)
            self.gain = new
        return np.clip(x * ramp, -1.0, 1.0).astype(np.float32)


def split_mix(
    mix: np.ndarray,
    speech: np.ndarray | None,
    sfx: np.ndarray | None,
    *,
    speech_gain_db: float = SPEECH_GAIN_DB,
    sfx_gain_db: float = SFX_GAIN_DB,
) -> tuple[np.ndarray, np.ndarray]:
    """(S,) mix and the raw (S,) stems :meth:`Mixer.mix` made it of → the stems at the mix's
    level, (S,) float32 each, whose sum is the mix up to float rounding.

    The mix is ``g_sp·speech + g_sfx·sfx`` times a limiter gain, then clipped; the gain applied
    at each sample is ``k = mix / (g_sp·speech + g_sfx·sfx)`` (0 where that sum is 0; in
    [0, 1], as a limiter and a clip only lower the level), so the speech stem is
    ``k·g_sp·speech`` and the effects stem the rest of the mix. Where one stem is silent the
    other is the mix whatever the gains; the gains only share out samples where both sound. A
    chunk without stems is all speech; without effects, the effects stem is silence. The gains
    default to :class:`Mixer`'s, the mixer every engine chunk comes from.
    """
    mix = np.asarray(mix, np.float32)
    if sfx is None:  # no effects stem (or no stems at all): the mix is all speech
        return mix.copy(), np.zeros_like(mix)
    g_sp, g_sfx = 10 ** (speech_gain_db / 20), 10 ** (sfx_gain_db / 20)
    sp = g_sp * np.asarray(np.zeros_like(mix) if speech is None else speech, np.float32)
    fx = g_sfx * np.asarray(sfx, np.float32)
    assert sp.shape == fx.shape == mix.shape, (
        f"stems must match the mix sample for sample, got {sp.shape}, {fx.shape}, {mix.shape}"
    )
    total = sp + fx  # the mixer's sum before its limiter, in the same float32 steps
    k = np.divide(mix, total, out=np.zeros_like(mix), where=total != 0)
    speech_out = np.clip(k, 0.0, 1.0) * sp
    return speech_out, mix - speech_out


class BandEnergySpeechEncoder:
    """Fallback speech encoder: (S,) waveform → (N, Ca) log band energies per latent hop."""

    def __init__(self, cfg: UnisonConfig) -> None:
        self.sr = cfg.media.sample_rate
        self.hop = round(self.sr / cfg.latent.audio_hz)
        self.channels = cfg.latent.audio_channels
        freqs = np.fft.rfftfreq(self.hop, 1.0 / self.sr)
        edges = np.geomspace(60.0, self.sr / 2, self.channels + 1)
        self.bands = [(freqs >= lo) & (freqs < hi) for lo, hi in itertools.pairwise(edges)]

    def encode(self, pcm: np.ndarray) -> np.ndarray:
        """(S,) float at the media rate, S a multiple of the hop → (S / hop, Ca) float32."""
        n = len(pcm) // self.hop
        frames = pcm[: n * self.hop].reshape(n, self.hop) * np.hanning(self.hop)  # (N, hop)
        power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2  # (N, hop/2+1)
        bands = np.stack(
            [power[:, m].sum(-1) if m.any() else np.zeros(n) for m in self.bands], axis=-1
        )  # (N, Ca)
        return ((np.log10(bands + 1e-8) + 4.0) / 4.0).astype(np.float32)  # ~[-1, 1]
