"""Training speech for the speech front end: the world's sentences in many espeak-ng voices,
augmented, with exact per-frame viseme labels (docs/frontend.md).

Each example is 1–3 sentences of the world's grammar (:func:`sample_sentence`, split by
``sentence_key`` like the dataset: training examples use train sentences, validation ones
val/test sentences) spoken by one espeak-ng voice (accent × variant, rate 120–220 wpm, pitch
20–80, range) with pauses between. Labels come from espeak's synthesis callback (phoneme spans,
:mod:`unison_stream.data.synth.speech`) through :func:`phoneme_viseme`: the viseme under each
10 ms frame's centre. Augmentations (each with its probability in :class:`VoiceDataConfig`):
speed (resampling: pitch, tempo and formants together; label times scaled exactly), a
formant (vocal-tract length) shift, equalisation, level, room reverb (synthetic impulse
response), noise (espeak babble, white, pink) at 5–30 dB SNR, telephone band (300–3400 Hz at
8 kHz), an Opus round trip (16–32 kb/s) and a random input rate of 8–48 kHz.

**Flite and Festival are never used here.** They are the evaluation's unseen voices; training
on them would make that figure measure memory. Only espeak-ng speaks training audio, and a
fixed held-out list of espeak voices (accents and variants never trained on) is kept for
validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy.signal import correlate, fftconvolve, istft, resample_poly, sosfilt, stft

from unison_stream.data.dataset import split_of
from unison_stream.data.synth.config import WorldConfig
from unison_stream.data.synth.speech import Timed, synthesize
from unison_stream.data.synth.text import Script, sample_sentence
from unison_stream.data.synth.visemes import VISEMES, phoneme_viseme

__all__ = [
    "FORBIDDEN_SYNTHS",
    "HELDOUT_VOICES",
    "SR",
    "TRAIN_VOICES",
    "VoiceDataConfig",
    "VoiceExample",
    "babble",
    "frame_visemes",
    "make_example",
    "opus_round_trip",
    "viseme_of",
    "world_sentence",
]

# ---- voices --------------------------------------------------------------------------------

TRAIN_ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan")
TRAIN_VARIANTS = (
    "", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f5",
    "klatt", "klatt2", "klatt3", "klatt5", "klatt6", "croak", "whisper", "grandpa", "grandma",
    "adam", "Alex", "Alicia", "Andrea", "Andy", "aunty", "belinda", "benjamin", "boris",
    "caleb", "david", "Denis", "ed", "edward", "Gene", "gustave", "Henrique", "Hugo", "iven",
    "iven3", "Jacky", "john", "Lee", "linda", "marcelo", "max", "Mike", "pablo", "paul",
    "quincy", "rob", "robosoft", "robosoft3", "sandro", "shelby", "steph", "Storm", "travis",
    "Tweaky", "victor", "zac", "anika",
)  # fmt: skip
TRAIN_VOICES: tuple[str, ...] = tuple(
    f"{a}+{v}" if v else a for a in TRAIN_ACCENTS for v in TRAIN_VARIANTS
)
# accents and variants that no training voice uses
HELDOUT_VOICES: tuple[str, ...] = (
    "en-gb-x-gbcwmd+f4",
    "en-us-nyc+m8",
    "en-gb-x-gbcwmd+klatt4",
    "en-us-nyc+norbert",
    "en-gb-x-gbcwmd+Annie",
    "en-us-nyc+whisperf",
    "en-us-nyc+Michael",
    "en-gb-x-gbcwmd+Mario",
)
# names of the evaluation's unseen synthesisers and voices; none may appear above
FORBIDDEN_SYNTHS = ("flite", "festival", "text2wave", "kal", "slt", "rms", "awb", "cmu_")

# mnemonics some accents print that the viseme table does not list
_EXTRA_VISEMES = {"aI2": "aa", "w#": "RR", "VR": "aa", "t[": "DD"}


@dataclass(frozen=True)
class VoiceDataConfig:
    """What the voice generator varies, with the reason for each range."""

    hop_s: float = 0.01  # one label per 10 ms frame (the front end's hop)
    sentences: tuple[int, int] = (1, 3)  # per example: a few seconds of context for the norm
    pause_s: tuple[float, float] = (0.05, 0.7)  # between sentences
    lead_s: tuple[float, float] = (0.0, 0.5)  # silence before the first sentence
    rate_wpm: tuple[int, int] = (120, 220)
    pitch: tuple[int, int] = (20, 80)
    pitch_range: tuple[int, int] = (10, 90)
    level_dbfs: tuple[float, float] = (-32.0, -12.0)  # speech RMS over its active samples
    p_speed: float = 0.4
    speed: tuple[float, float] = (0.85, 1.18)
    p_formant: float = 0.35
    formant: tuple[float, float] = (0.87, 1.15)  # frequency-axis warp of the envelope
    p_eq: float = 0.5
    p_reverb: float = 0.3
    rt60_s: tuple[float, float] = (0.15, 0.7)
    p_noise: float = 0.5
    snr_db: tuple[float, float] = (5.0, 30.0)
    p_phone: float = 0.12
    p_opus: float = 0.2
    opus_kbps: tuple[int, int] = (16, 32)
    input_rates: tuple[int, ...] = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)


@dataclass
class VoiceExample:
    """One example: PCM at ``sample_rate`` and the viseme index of every 10 ms frame."""

    audio: np.ndarray  # (S,) float32 at sample_rate
    sample_rate: int
    visemes: np.ndarray  # (F,) uint8 indices into VISEMES
    phonemes: list[Timed]  # the spans behind the labels (seconds), pauses as "_"
    voice: str
    augments: tuple[str, ...]


def viseme_of(label: str) -> str:
    """Viseme of an espeak mnemonic, with the extra mnemonics of some accents."""
    return _EXTRA_VISEMES.get(label.strip("',%="), phoneme_viseme(label))


def frame_visemes(phonemes: list[Timed], num_frames: int, hop_s: float) -> np.ndarray:
    """(F,) viseme index under each frame's centre; time outside every span is ``sil``."""
    out = np.zeros(num_frames, np.uint8)
    centres = (np.arange(num_frames) + 0.5) * hop_s
    index = {v: i for i, v in enumerate(VISEMES)}
    for p in phonemes:
        out[(centres >= p.start) & (centres < p.end)] = index[viseme_of(p.label)]
    return out


def world_sentence(rng: np.random.Generator, world: WorldConfig, split: str) -> str:
    """A sentence of the world's grammar whose sentence_key belongs to ``split``."""
    for _ in range(1000):
        words = sample_sentence(rng, world.min_words, world.max_words)
        key = Script(words=words, events=()).sentence_key()
        got = split_of(key, world.split_fractions)
        if got == split or (split == "val" and got == "test"):  # val uses val + test text
            return " ".join(words)
    raise RuntimeError(f"no {split} sentence in 1000 draws")


# ---- augmentations (16 kHz in, 16 kHz out unless stated) -----------------------------------

SR = 16000  # working rate of the generator


def _speed(x: np.ndarray, factor: float) -> tuple[np.ndarray, float]:
    """Play ``factor`` times faster; returns the audio and the exact time scale (out/in)."""
    r = Fraction(factor).limit_denominator(60)
    return resample_poly(x, r.denominator, r.numerator).astype(np.float32), float(1 / r)


def _formant(x: np.ndarray, alpha: float) -> np.ndarray:
    """Warp the magnitude spectrum's frequency axis by ``alpha`` (vocal-tract length)."""
    _, _, z = stft(x, fs=SR, nperseg=512, noverlap=384)  # (K, T)
    k = np.arange(z.shape[0], dtype=np.float64)
    src = np.clip(k / alpha, 0, z.shape[0] - 1)
    lo = np.floor(src).astype(int)
    hi, w = np.minimum(lo + 1, z.shape[0] - 1), (src - np.floor(src))[:, None]
    mag = np.abs(z)
    warped = (1 - w) * mag[lo] + w * mag[hi]
    _, y = istft(warped * np.exp(1j * np.angle(z)), fs=SR, nperseg=512, noverlap=384)
    return y[: len(x)].astype(np.float32)


def _peaking(f0: float, gain_db: float, q: float) -> np.ndarray:
    """RBJ peaking biquad as one second-order section."""
    a, w = 10 ** (gain_db / 40), 2 * np.pi * f0 / SR
    alpha = np.sin(w) / (2 * q)
    b = [1 + alpha * a, -2 * np.cos(w), 1 - alpha * a]
    d = [1 + alpha / a, -2 * np.cos(w), 1 - alpha / a]
    return np.array([[*(v / d[0] for v in b), *(v / d[0] for v in d)]])


def _eq(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sos = np.concatenate(
        [
            _peaking(float(np.exp(rng.uniform(np.log(120), np.log(6000)))), rng.uniform(-10, 10),
                     rng.uniform(0.4, 2.0))
            for _ in range(int(rng.integers(1, 4)))
        ]
    )  # fmt: skip
    return sosfilt(sos, x).astype(np.float32)


def _reverb(x: np.ndarray, rng: np.random.Generator, rt60: float) -> np.ndarray:
    """Direct path + exponentially decaying noise tail (a synthetic room), same length."""
    n = int(rt60 * SR)
    t = np.arange(n) / SR
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    tail[: int(rng.uniform(0.002, 0.012) * SR)] = 0.0  # first reflections arrive later
    tail = sosfilt(_peaking(4000.0, -6.0, 0.7), tail)  # walls absorb the highs
    drr = 10 ** (rng.uniform(-3, 10) / 20)  # direct-to-reverberant ratio
    ir = tail / np.sqrt(np.sum(tail**2))
    ir[0] += drr
    return fftconvolve(x, ir / np.sqrt(1 + drr**2))[: len(x)].astype(np.float32)


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n, 1 / SR), 20.0)
    return np.fft.irfft(spec / np.sqrt(f), n)


def babble(n: int, rng: np.random.Generator, world: WorldConfig) -> np.ndarray:
    """2–4 other espeak talkers (training voices) summed, looped to ``n`` samples."""
    out = np.zeros(n, np.float64)
    for _ in range(int(rng.integers(2, 5))):
        sp = synthesize(
            world_sentence(rng, world, "train"),
            voice=TRAIN_VOICES[int(rng.integers(len(TRAIN_VOICES)))],
            rate=int(rng.integers(140, 200)),
            sample_rate=SR,
        )
        a = np.tile(sp.audio, n // max(len(sp.audio), 1) + 2)
        off = int(rng.integers(len(sp.audio) or 1))
        out += a[off : off + n] / (np.sqrt(np.mean(sp.audio**2)) + 1e-9)
    return out


def _noise(x: np.ndarray, rng: np.random.Generator, cfg: VoiceDataConfig, world: WorldConfig,
           speech_rms: float) -> tuple[np.ndarray, str]:  # fmt: skip
    kind = ("babble", "white", "pink")[int(rng.integers(3))]
    if kind == "babble":
        noise = babble(len(x), rng, world)
    elif kind == "white":
        noise = rng.standard_normal(len(x))
    else:
        noise = _pink(len(x), rng)
    snr = rng.uniform(*cfg.snr_db)
    noise *= speech_rms / 10 ** (snr / 20) / (np.sqrt(np.mean(noise**2)) + 1e-12)
    return (x + noise).astype(np.float32), f"{kind}{snr:.0f}dB"


def _telephone(x: np.ndarray) -> np.ndarray:
    """300–3400 Hz band at 8 kHz (returns 8 kHz audio)."""
    from scipy.signal import butter

    sos = butter(4, [300, 3400], btype="band", fs=SR, output="sos")
    return resample_poly(sosfilt(sos, x), 1, 2).astype(np.float32)


def opus_round_trip(x: np.ndarray, rate: int, kbps: int) -> np.ndarray:
    """Encode with libopus (PyAV) at ``kbps`` and decode; delay removed, same length."""
    import av

    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format, enc.bit_rate = rate, "mono", "s16", kbps * 1000
    dec = av.CodecContext.create("libopus", "r")
    dec.sample_rate, dec.layout = rate, "mono"
    fs = rate // 50  # 20 ms frames
    pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16)
    pcm = np.pad(pcm, (0, -len(pcm) % fs + fs))  # one frame more: room for the delay
    out: list[np.ndarray] = []
    rates: list[int] = []

    def drain(packets: list[av.Packet]) -> None:
        for p in packets:
            for fr in dec.decode(p):
                out.append(fr.to_ndarray().reshape(-1))
                rates.append(fr.sample_rate)

    for i in range(0, len(pcm), fs):
        frame = av.AudioFrame.from_ndarray(pcm[None, i : i + fs], format="s16", layout="mono")
        frame.sample_rate, frame.pts = rate, i
        drain(enc.encode(frame))
    drain(enc.encode(None))
    y = np.concatenate(out).astype(np.float32) / 32768.0
    if rates and rates[0] != rate:  # libopus decodes at 48 kHz whatever it was asked
        r = Fraction(rate, rates[0])
        y = resample_poly(y, r.numerator, r.denominator).astype(np.float32)
    # the codec's delay (pre-skip plus filters, ~4–7 ms by rate): the lag of best correlation
    lags = correlate(y[: len(x) + rate // 50], x, mode="valid", method="fft")[: rate // 50]
    delay = int(np.argmax(lags))
    return y[delay : delay + len(x)]


# ---- examples ------------------------------------------------------------------------------


def _speak(rng: np.random.Generator, cfg: VoiceDataConfig, world: WorldConfig, split: str,
           voice: str) -> tuple[np.ndarray, list[Timed]]:  # fmt: skip
    """1–3 sentences in one voice with pauses: 16 kHz audio and phoneme spans."""
    rate = int(rng.integers(cfg.rate_wpm[0], cfg.rate_wpm[1] + 1))
    pitch = int(rng.integers(cfg.pitch[0], cfg.pitch[1] + 1))
    prange = int(rng.integers(cfg.pitch_range[0], cfg.pitch_range[1] + 1))
    pieces = [np.zeros(int(rng.uniform(*cfg.lead_s) * SR), np.float32)]
    spans: list[Timed] = []
    t = len(pieces[0]) / SR
    for k in range(int(rng.integers(cfg.sentences[0], cfg.sentences[1] + 1))):
        if k:
            pieces.append(np.zeros(int(rng.uniform(*cfg.pause_s) * SR), np.float32))
            t += len(pieces[-1]) / SR
        sp = synthesize(
            world_sentence(rng, world, split),
            voice=voice,
            rate=rate,
            pitch=pitch,
            pitch_range=prange,
            sample_rate=SR,
        )
        pieces.append(sp.audio)
        spans += [Timed(p.label, p.start + t, p.end + t) for p in sp.phonemes]
        t += len(sp.audio) / SR
    return np.concatenate(pieces), spans


def make_example(
    index: int,
    *,
    split: str = "train",
    seed: int = 0,
    cfg: VoiceDataConfig | None = None,
    world: WorldConfig | None = None,
    augment: bool = True,
    voices: tuple[str, ...] | None = None,
) -> VoiceExample:
    """Example ``index`` of ``split`` ("train" or "val"): all draws from ``[seed, index]``.

    Train examples use :data:`TRAIN_VOICES` and train sentences; val examples use
    :data:`HELDOUT_VOICES` (or ``voices``) and val/test sentences.
    """
    cfg, world = cfg or VoiceDataConfig(), world or WorldConfig()
    assert split in ("train", "val"), "split is 'train' or 'val'"
    rng = np.random.default_rng([seed, 1 if split == "train" else 2, index])
    pool = voices or (TRAIN_VOICES if split == "train" else HELDOUT_VOICES)
    voice = pool[int(rng.integers(len(pool)))]
    x, spans = _speak(rng, cfg, world, split, voice)
    active = np.abs(x) > 1e-4
    tags: list[str] = []
    if augment and rng.random() < cfg.p_speed:
        factor = float(rng.uniform(*cfg.speed))
        x, scale = _speed(x, factor)
        spans = [Timed(p.label, p.start * scale, p.end * scale) for p in spans]
        active = np.abs(x) > 1e-4
        tags.append(f"speed{factor:.2f}")
    if augment and rng.random() < cfg.p_formant:
        alpha = float(rng.uniform(*cfg.formant))
        x = _formant(x, alpha)
        tags.append(f"formant{alpha:.2f}")
    if augment and rng.random() < cfg.p_eq:
        x = _eq(x, rng)
        tags.append("eq")
    level = rng.uniform(*cfg.level_dbfs) if augment else -20.0
    rms = float(np.sqrt(np.mean(x[active] ** 2))) if active.any() else 1.0
    x = (x * 10 ** (level / 20) / max(rms, 1e-9)).astype(np.float32)
    if augment and rng.random() < cfg.p_reverb:
        x = _reverb(x, rng, float(rng.uniform(*cfg.rt60_s)))
        tags.append("reverb")
    if augment and rng.random() < cfg.p_noise:
        x, tag = _noise(x, rng, cfg, world, 10 ** (level / 20))
        tags.append(tag)
    rate = SR
    if augment and rng.random() < cfg.p_phone:
        x, rate = _telephone(x), 8000
        tags.append("phone")
    if augment and rng.random() < cfg.p_opus:
        kbps = int(rng.integers(cfg.opus_kbps[0], cfg.opus_kbps[1] + 1))
        x = opus_round_trip(x, rate, kbps)
        tags.append(f"opus{kbps}")
    if augment and rate == SR:
        target = int(cfg.input_rates[int(rng.integers(len(cfg.input_rates)))])
        r = Fraction(target, SR)
        x = resample_poly(x, r.numerator, r.denominator).astype(np.float32)
        rate = target
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 0.99:  # keep the take un-clipped: scale the whole example down
        x = x * (0.99 / peak)
    frames = int(np.ceil(len(x) / rate / cfg.hop_s))
    return VoiceExample(
        audio=x.astype(np.float32),
        sample_rate=rate,
        visemes=frame_visemes(spans, frames, cfg.hop_s),
        phonemes=spans,
        voice=voice,
        augments=tuple(tags),
    )
