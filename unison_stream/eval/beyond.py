"""Sync beyond the training grammar and voices (``docs/eval.md``, "Harmony and beyond
the grammar").

The world's sentences come from eleven templates and small word lists, spoken by espeak-ng
voices; the test split only holds sentences out. This set goes further:

* :data:`OUT_OF_GRAMMAR`: sentences written outside the grammar (names from other languages,
  numbers, times and money, dashes, ellipses and semicolons, long words, effect tags between
  any words).
* **other synthesisers**: CMU Flite (Debian package ``flite``) and Festival's ``kal_diphone``
  (``festival``, ``festvox-kallpc16k``), whose voices and prosody espeak-ng never made and which
  no training run touches, drive the audio-driven mode, for the in-grammar test sentences and
  the out-of-grammar ones. Their output is scaled to the world's speech RMS, so the figure
  measures the voice, not the level.
* ``noisy``: the test clips' own speech under babble (other espeak talkers) at 15 dB SNR, then
  an Opus round trip at 24 kb/s — what a voice agent's TTS looks like after a phone line.

Per set the report gives lip-sync offset, correlation and its ratio to the world's own
correlation on the test clips (the in-grammar denominator), ``mouth_spread_ratio`` (the spread
of the mouth opening measured in the generated frames ÷ the same in the test clips' ground
truth: a mouth that barely moves reads low), and, for the text mode, closed-set sentence
identification over the test sentences *and* these (a larger candidate list).
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import tempfile
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from unison_stream.codecs.sentence_id import SentenceIdentifier
from unison_stream.data.loader import Sample
from unison_stream.data.synth.measure import mouth_opening
from unison_stream.engine import Engine
from unison_stream.engine.audio import resample
from unison_stream.eval.generate import drive_one, say_one
from unison_stream.eval.harmony import rms
from unison_stream.eval.intelligibility import sentence_accuracy
from unison_stream.eval.lipsync import LipSync, lip_sync, summarise_lip_sync

__all__ = [
    "OUT_OF_GRAMMAR",
    "SynthesiserUnavailableError",
    "beyond_grammar",
    "festival",
    "festival_available",
    "flite",
    "flite_available",
    "mouth_spread",
    "noisy",
    "spoken",
]

log = logging.getLogger(__name__)

# Written for this set; none uses a template or word list of unison_stream.data.synth.text.
OUT_OF_GRAMMAR: tuple[str, ...] = (
    "Doctor Okonkwo's flight, number 4417, lands at 6:45 tomorrow.",
    "Unbelievably, the <knock> photosynthesis experiment worked on the third attempt!",
    "Call Marguerite at extension 209; she handles the reimbursements.",
    "Is it twenty-three or thirty-two? I honestly <snap> can't remember.",
    "The Wolverhampton <bell> quartet performed Tchaikovsky's symphony in 1998.",
    "Xavier, Zhang Wei and Ngozi bought 12 kilograms of <clap> strawberries.",
    "Internationalisation requires extraordinary patience, trust me.",
    "Wait... did the <whoosh> helicopter really cost 3.5 million dollars?",
    "Our quarterly revenue grew by 17 percent, according to Henrietta.",
    "Please <clap> don't refrigerate the croissants, Bartholomew!",
    "At 7:30 the Copenhagen ferry departs from pier number nine.",
    "Counterintuitively, smaller <knock> models sometimes generalise better.",
)
FLITE_VOICES = ("slt", "rms", "awb", "kal16")  # rotated over the sentences
_TAG = re.compile(r"<[^>]*>")


class SynthesiserUnavailableError(RuntimeError):
    """A speech synthesiser the set needs is not installed (Debian packages ``flite``,
    ``festival`` and ``festvox-kallpc16k``)."""


FESTIVAL_VOICES = ("kal_diphone",)
NOISY_SNR_DB = 15.0
NOISY_OPUS_KBPS = 24
_FESTIVAL_SCRIPT = """(voice_{voice})
(utt.save.wave (utt.synth (Utterance Text "{text}")) "{wav}" 'riff)
"""


def flite_available() -> bool:
    return shutil.which("flite") is not None


def festival_available() -> bool:
    return shutil.which("festival") is not None


def flite(text: str, sample_rate: int, *, voice: str = "slt") -> np.ndarray:
    """``text`` spoken by Flite's ``voice``: (S,) float32 at ``sample_rate``."""

    def args(_: Path, wav: Path) -> list[str]:
        return ["-voice", voice, "-t", text, "-o", str(wav)]

    return _synthesise("flite", args, sample_rate)


def festival(text: str, sample_rate: int, *, voice: str = "kal_diphone") -> np.ndarray:
    """``text`` spoken by Festival's ``voice``: (S,) float32 at ``sample_rate``."""

    def script(tmp: Path, wav: Path) -> list[str]:
        path = tmp / "say.scm"
        clean = text.replace("\\", " ").replace('"', " ")
        path.write_text(_FESTIVAL_SCRIPT.format(voice=voice, text=clean, wav=wav))
        return ["-b", str(path)]

    return _synthesise("festival", script, sample_rate)


def _synthesise(
    program: str, args: Callable[[Path, Path], list[str]], sample_rate: int
) -> np.ndarray:
    """Run ``program`` with ``args(temporary folder, wav path)``; the wav it wrote, resampled."""
    exe = shutil.which(program)
    if exe is None:
        raise SynthesiserUnavailableError(f"{program} is not installed (apt-get install {program})")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run([exe, *args(Path(tmp), wav)], check=True, capture_output=True)
        return _read_wav(wav, sample_rate)


def _read_wav(path: Path, sample_rate: int) -> np.ndarray:
    with wave.open(str(path)) as w:
        rate, n = w.getframerate(), w.getnframes()
        pcm = np.frombuffer(w.readframes(n), np.int16).astype(np.float32) / 32768.0
    return resample(pcm, rate, sample_rate).astype(np.float32)


def noisy(speech: np.ndarray, sample_rate: int, *, seed: int) -> np.ndarray:
    """``speech`` under babble at :data:`NOISY_SNR_DB`, then an Opus round trip at
    :data:`NOISY_OPUS_KBPS` kb/s (same length and rate)."""
    from unison_stream.data.synth.config import WorldConfig
    from unison_stream.data.synth.voices import SR, babble, opus_round_trip

    x = resample(speech, sample_rate, SR)
    noise = babble(len(x), np.random.default_rng(seed), WorldConfig())
    noise *= rms(x) / 10 ** (NOISY_SNR_DB / 20) / max(rms(noise), 1e-9)
    y = opus_round_trip(np.clip(x + noise, -1, 1).astype(np.float32), SR, NOISY_OPUS_KBPS)
    return resample(y, SR, sample_rate)[: len(speech)].astype(np.float32)


def mouth_spread(frames: np.ndarray) -> float:
    """Standard deviation of the mouth opening measured per frame (interior area)."""
    return float(np.std(mouth_opening(frames)))


def spoken(text: str) -> str:
    """A transcript's spoken words (tags removed)."""
    return " ".join(_TAG.sub(" ", text).split())


def _summary(
    sync: list[LipSync], gt_corr: float | None, spread: list[float], gt_spread: float
) -> dict[str, float | int | None]:
    s = summarise_lip_sync(sync)
    ratio = None if s["corr"] is None or not gt_corr else float(s["corr"]) / gt_corr
    return {
        "offset_ms": s["offset_ms"],
        "offset_signed_ms": s["offset_signed_ms"],
        "corr": s["corr"],
        "corr_ratio": ratio,
        "mouth_spread_ratio": float(np.mean(spread)) / gt_spread if gt_spread > 0 else None,
        "clips": len(sync),
        "unmeasured": s["unmeasured"],
    }


def beyond_grammar(
    engine: Engine,
    clips: list[Sample],
    *,
    in_grammar: list[str],
    in_grammar_speech: list[np.ndarray],
    gt_corr: float | None,
    limit: int = 0,
    progress: bool = True,
    keep: Callable[[str, int, np.ndarray], None] | None = None,
) -> dict[str, Any]:
    """The ``beyond_grammar`` report: lip sync of the text mode on :data:`OUT_OF_GRAMMAR`
    (``text``), of the audio-driven mode on them spoken by espeak-ng, the training synthesiser
    (``espeak``), and by Flite (``flite``), and of the audio-driven mode on the in-grammar test
    sentences: the clips' own speech (``espeak_in``) and Flite's (``flite_in``); sentence
    identification of the text mode's speech over the test sentences plus these.

    ``clips``: the first test clips, driven again with their own and Flite's speech; their
    first frame and caption give each utterance's person (cycled); ``in_grammar``: the test
    sentences (of ``clips`` first), ``in_grammar_speech`` the text mode's speech for them (both
    identified again over the larger list); ``gt_corr``: the world's lip correlation on them;
    ``keep(set, clip, frames)`` is given each audio-driven utterance's frames (clip: the index
    in ``clips`` whose person it shows).
    """
    from unison_stream.data.synth.speech import synthesize

    cfg = engine.cfg
    sr, fps = cfg.media.sample_rate, cfg.media.fps
    ood = list(OUT_OF_GRAMMAR[:limit] if limit > 0 else OUT_OF_GRAMMAR)
    level = float(np.mean([rms(c.stems.get("speech", c.audio)) for c in clips]))
    names = ("text", "espeak", "flite", "festival", "espeak_in", "flite_in", "festival_in", "noisy")
    sets: dict[str, list[LipSync]] = {k: [] for k in names}
    spreads: dict[str, list[float]] = {k: [] for k in names}
    gt_spread = float(np.mean([mouth_spread(c.frames) for c in clips]))
    text_speech: list[np.ndarray] = []
    use_flite, use_festival = flite_available(), festival_available()
    if not use_flite:
        log.warning("flite not installed (apt-get install flite): no Flite figures")
    if not use_festival:
        log.warning("festival not installed (apt-get install festival): no Festival figures")
    jobs = [("ood", i, t) for i, t in enumerate(ood)]
    jobs += [("in", i, in_grammar[i]) for i in range(min(len(ood), len(clips)))]
    for kind, i, text in tqdm(
        jobs, desc="eval beyond grammar", unit="sentence", disable=not progress, file=sys.stderr
    ):
        c = clips[i % len(clips)]
        person = {"reference_frame": c.frames[0], "caption": c.caption, "seed": 1000 + i}
        drivers: list[tuple[str, np.ndarray]] = []
        if kind == "ood":
            u = say_one(engine, text=text, **person)
            text_speech.append(u.speech)
            sets["text"].append(lip_sync(u.frames, u.speech, sr, fps))
            spreads["text"].append(mouth_spread(u.frames))
            drivers.append(("espeak", synthesize(spoken(text), sample_rate=sr).audio))
        else:  # the clip's own speech: the training synthesiser on a test sentence
            own = c.stems.get("speech", c.audio)
            drivers.append(("espeak_in", own))
            drivers.append(("noisy", noisy(own, sr, seed=i)))
        suffix = "" if kind == "ood" else "_in"
        if use_flite:
            voiced = flite(spoken(text), sr, voice=FLITE_VOICES[i % len(FLITE_VOICES)])
            voiced *= level / max(rms(voiced), 1e-6)
            drivers.append((f"flite{suffix}", np.clip(voiced, -1, 1)))
        if use_festival:
            voiced = festival(spoken(text), sr, voice=FESTIVAL_VOICES[i % len(FESTIVAL_VOICES)])
            voiced *= level / max(rms(voiced), 1e-6)
            drivers.append((f"festival{suffix}", np.clip(voiced, -1, 1)))
        for name, speech in drivers:
            d = drive_one(engine, speech=speech, **person)
            sets[name].append(lip_sync(d.frames, d.speech, sr, fps))  # (noisy: what it heard)
            spreads[name].append(mouth_spread(d.frames))
            if keep is not None:
                keep(name, i % len(clips), d.frames)
    candidates = sorted({*in_grammar, *(spoken(t) for t in ood)})
    ident = SentenceIdentifier(candidates, sample_rate=sr)
    report: dict[str, Any] = {
        name: _summary(sync, gt_corr, spreads[name], gt_spread) if sync else None
        for name, sync in sets.items()
    }
    report["sentences"] = len(ood)
    report["sentence_candidates"] = len(candidates)
    report["sentence_id_accuracy"] = sentence_accuracy(ident, text_speech, [spoken(t) for t in ood])
    report["sentence_id_accuracy_in_grammar"] = sentence_accuracy(
        ident, in_grammar_speech, in_grammar
    )
    return report
