"""The speech front end's training data and its config (``unison-stream train frontend``,
``docs/frontend.md``): augmented espeak-ng speech in many voices with exact viseme labels
(:mod:`unison_stream.data.synth.voices`), held-out espeak voices, and the unseen synthesisers
Flite and Festival, which only ever measure; each set cached as a :class:`FrameSet`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from tqdm import tqdm

from unison_stream.data.synth.config import WorldConfig
from unison_stream.data.synth.speech import Timed
from unison_stream.data.synth.visemes import VISEMES
from unison_stream.data.synth.voices import (
    VoiceDataConfig,
    make_example,
    viseme_of,
    world_sentence,
)
from unison_stream.engine.audio import resample
from unison_stream.engine.speech_frontend import (
    FrontEndConfig,
    RunningNorm,
    SpeechFrontEnd,
    log_mel,
)
from unison_stream.vocab import PHONEMES

__all__ = [
    "FESTIVAL_VOICES",
    "FLITE_VOICES",
    "IGNORE",
    "FrameSet",
    "FrontEndTrainConfig",
    "build_set",
    "load_train_config",
    "representative_phonemes",
    "sources",
]


IGNORE = 255  # label of frames without truth (padding, unseen-voice sets)
FLITE_VOICES = ("slt", "rms", "awb", "kal16")  # measurement only, never a training signal
FESTIVAL_VOICES = ("kal_diphone",)


@dataclass
class FrontEndTrainConfig:
    """Training run of the front end; every field is a ``key=value`` override."""

    steps: int = 5000
    batch: int = 32
    seq_frames: int = 300  # 3 s crops: several pauses and sentence starts per crop
    lr: float = 3e-3
    min_lr: float = 1e-4  # cosine decay floor
    warmup: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    label_smoothing: float = 0.05
    freq_mask: int = 12  # SpecAugment: up to this many mel bins zeroed per crop
    start_prob: float = 0.3  # crops that begin at the stream start (prior-only normaliser)
    train_examples: int = 3000  # ~4 h of speech, ~8 min to synthesise on one core
    val_examples: int = 64  # held-out voices, augmented like training
    clean_examples: int = 32  # held-out voices, no augmentation
    unseen_sentences: int = 12  # per Flite/Festival voice
    log_every: int = 25
    val_every: int = 1000
    ckpt_every: int = 250
    seed: int = 0
    threads: int = 1  # the other core belongs to other work
    out_dir: str = "runs/frontend"
    model: FrontEndConfig = field(default_factory=FrontEndConfig)
    data: VoiceDataConfig = field(default_factory=VoiceDataConfig)


def load_train_config(
    overrides: list[str], base: dict[str, Any] | None = None
) -> FrontEndTrainConfig:
    """Defaults, then ``base`` (a run's saved config), then ``key=value`` overrides."""
    merged = OmegaConf.merge(
        OmegaConf.structured(FrontEndTrainConfig),
        OmegaConf.create(base or {}),
        OmegaConf.from_dotlist(list(overrides)),
    )
    cfg = OmegaConf.to_object(merged)
    assert isinstance(cfg, FrontEndTrainConfig), "structured merge gives the dataclass"
    assert cfg.seq_frames > cfg.model.lookahead, "a crop must be longer than the look-ahead"
    return cfg


# ---- data ----------------------------------------------------------------------------------


@dataclass
class FrameSet:
    """Utterances laid end to end: features, window RMS (dBFS), labels; ``offsets`` (U+1,)."""

    feats: np.ndarray  # (N, M) float16: raw log-mel, normalised in place by `normalise`
    rms_db: np.ndarray  # (N,) float32
    labels: np.ndarray  # (N,) uint8, IGNORE where there is no truth
    offsets: np.ndarray  # (U+1,) int64
    meta: dict[str, Any]

    def utterances(self) -> range:
        return range(len(self.offsets) - 1)

    def span(self, u: int) -> slice:
        return slice(int(self.offsets[u]), int(self.offsets[u + 1]))

    def save(self, path: Path) -> None:
        np.savez(
            path, feats=self.feats, rms_db=self.rms_db, labels=self.labels,
            offsets=self.offsets, meta=np.array(json.dumps(self.meta)),
        )  # fmt: skip

    @classmethod
    def load(cls, path: Path) -> FrameSet:
        z = np.load(path)
        return cls(z["feats"], z["rms_db"], z["labels"], z["offsets"], json.loads(str(z["meta"])))

    def normalise(self, mcfg: FrontEndConfig, mean: np.ndarray, var: np.ndarray) -> None:
        """Apply the running normaliser to each utterance from its start, as a stream would."""
        for u in self.utterances():
            s = self.span(u)
            self.feats[s] = RunningNorm(mean, var, mcfg)(self.feats[s], self.rms_db[s])


def _frames(
    pcm: np.ndarray, rate: int, mcfg: FrontEndConfig, fbank: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Raw log-mel and RMS of a whole waveform, framed as a stream frames it."""
    x = resample(pcm, rate, mcfg.sample_rate)
    n = -(-len(x) // mcfg.hop)
    x = np.concatenate(
        [np.zeros(mcfg.win - mcfg.hop, np.float32), x, np.zeros(n * mcfg.hop - len(x))]
    )
    return log_mel(x, mcfg, fbank)


# CMU/radio phones (Flite, Festival) → visemes, through the espeak phoneme of the same sound
CMU_VISEMES: dict[str, str] = {
    "pau": "sil", "h#": "sil", "brth": "sil",
    "p": "PP", "b": "PP", "m": "PP", "f": "FF", "v": "FF", "th": "TH", "dh": "TH",
    "t": "DD", "d": "DD", "dx": "DD", "k": "kk", "g": "kk", "ng": "kk", "hh": "kk",
    "ch": "CH", "jh": "CH", "sh": "CH", "zh": "CH", "y": "CH", "s": "SS", "z": "SS",
    "n": "nn", "l": "nn", "el": "nn", "en": "nn", "r": "RR", "w": "RR",
    "aa": "aa", "ae": "aa", "ah": "aa", "aw": "aa", "ay": "aa",
    "ax": "E", "axr": "E", "er": "E", "eh": "E", "ey": "E", "ih": "I", "iy": "I",
    "ao": "O", "ow": "O", "oy": "O", "uh": "U", "uw": "U",
}  # fmt: skip

_FESTIVAL_SCRIPT = """(voice_{voice})
(set! utt (Utterance Text "{text}"))
(utt.synth utt)
(utt.save.wave utt "{wav}" 'riff)
(mapcar (lambda (s) (format t "%s:%f " (item.name s) (item.feat s "end")))
        (utt.relation.items utt 'Segment))
"""


def _unseen(tool: str, voice: str, text: str) -> tuple[np.ndarray, int, list[Timed]]:
    """Speech of Flite or Festival (measurement only): float32 PCM, its rate and the phone
    spans the synthesiser reports (``-psdur`` / the Segment relation), as CMU phones."""
    from scipy.io import wavfile

    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "u.wav"
        if tool == "flite":
            cmd = ["flite", "-voice", voice, "-psdur", "-t", text, "-o", str(wav)]
        else:
            script = Path(d) / "u.scm"
            clean = text.replace("\\", " ").replace('"', " ")
            script.write_text(_FESTIVAL_SCRIPT.format(voice=voice, text=clean, wav=wav))
            cmd = ["festival", "-b", str(script)]
        printed = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rate, pcm = wavfile.read(wav)
    spans, t = [], 0.0
    for tok in printed.split():
        name, _, end = tok.rpartition(":")
        spans.append(Timed(name, t, float(end)))
        t = float(end)
    x = pcm.astype(np.float32) / 32768.0
    active = np.abs(x) > 1e-4
    rms = float(np.sqrt(np.mean(x[active] ** 2))) if active.any() else 1.0
    return x * (0.1 / rms), int(rate), spans  # −20 dBFS, like the clean espeak set


Source = tuple[np.ndarray, int, np.ndarray | None, list[Timed]]


def sources(name: str, cfg: FrontEndTrainConfig) -> Iterator[Source]:
    """(pcm, rate, labels | None, phoneme spans) of each utterance of a named set."""
    if name in ("train", "heldout", "heldout_clean"):
        n = {"train": cfg.train_examples, "heldout": cfg.val_examples}.get(name, cfg.clean_examples)
        for i in range(n):
            e = make_example(
                i,
                split="train" if name == "train" else "val",
                seed=cfg.seed,
                cfg=cfg.data,
                augment=name != "heldout_clean",
            )
            yield e.audio, e.sample_rate, e.visemes, e.phonemes
        return
    tool, voices = ("flite", FLITE_VOICES) if name == "flite" else ("festival", FESTIVAL_VOICES)
    rng = np.random.default_rng([cfg.seed, 3])
    for voice in voices:
        for _ in range(cfg.unseen_sentences):
            pcm, rate, phones = _unseen(tool, voice, world_sentence(rng, WorldConfig(), "val"))
            hop_s = cfg.data.hop_s
            frames = int(np.ceil(len(pcm) / rate / hop_s))
            labels = np.zeros(frames, np.uint8)
            centres = (np.arange(frames) + 0.5) * hop_s
            for p in phones:
                v = VISEMES.index(CMU_VISEMES.get(p.label, "sil"))
                labels[(centres >= p.start) & (centres < p.end)] = v
            yield pcm, rate, labels, []


def build_set(name: str, cfg: FrontEndTrainConfig, path: Path) -> FrameSet:
    """Synthesise a set's utterances and frame them (cached at ``path``)."""
    if path.is_file():
        return FrameSet.load(path)
    mcfg = cfg.model
    fbank = SpeechFrontEnd(mcfg).fbank
    feats, rms, labels, offsets = [], [], [], [0]
    counts: Counter[tuple[str, str]] = Counter()
    for pcm, rate, vis, spans in tqdm(sources(name, cfg), desc=f"data {name}", file=sys.stderr):
        f, r = _frames(pcm, rate, mcfg, fbank)
        lab = np.full(len(f), IGNORE, np.uint8)
        if vis is not None:
            k = min(len(f), len(vis))
            lab[:k] = vis[:k]
        feats.append(f.astype(np.float16))
        rms.append(r)
        labels.append(lab)
        offsets.append(offsets[-1] + len(f))
        for p in spans:
            if p.label.strip("',%=") in PHONEMES:
                counts[(viseme_of(p.label), p.label.strip("',%="))] += 1
    meta = {"name": name, "phoneme_counts": [[v, p, c] for (v, p), c in counts.items()]}
    out = FrameSet(
        np.concatenate(feats), np.concatenate(rms), np.concatenate(labels),
        np.array(offsets, np.int64), meta,
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path)
    return out


def representative_phonemes(counts: list[list[Any]]) -> tuple[str, ...]:
    """The most frequent training phoneme of each viseme (``sil`` → ``_``)."""
    best: dict[str, tuple[int, str]] = {}
    for v, p, c in counts:
        if c > best.get(v, (0, ""))[0]:
            best[v] = (int(c), str(p))
    default = FrontEndConfig().viseme_phonemes
    return tuple(
        "_" if v == "sil" else best.get(v, (0, default[i]))[1] for i, v in enumerate(VISEMES)
    )
