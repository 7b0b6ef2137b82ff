"""Closed-set sentence identification with pocketsphinx (intelligibility; ``docs/eval.md``).

A JSGF grammar whose only alternatives are the candidate sentences constrains the recogniser;
the hypothesis is mapped to the candidate with the smallest word edit distance (the grammar
normally returns one exactly). pocketsphinx's bundled en-US model is used, nothing is
downloaded. Scores compare a codec's reconstructions with the originals on the same clips.
"""

from __future__ import annotations

import logging
import re

import numpy as np

from unison_stream.extras import require

__all__ = ["SentenceIdentifier", "normalise"]

log = logging.getLogger(__name__)

_NOISE_FLOOR = 3e-4  # ≈ −70 dBFS (see recognise)


def normalise(sentence: str) -> list[str]:
    """Lower-case words without punctuation (the form used in the grammar)."""
    return re.sub(r"[^a-z' ]", " ", sentence.lower()).split()


def _edit(a: list[str], b: list[str]) -> int:
    d = list(range(len(b) + 1))
    for i, wa in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, wb in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (wa != wb))
    return d[-1]


class SentenceIdentifier:
    """Recognise 16 kHz speech against a closed set of sentences."""

    def __init__(self, sentences: list[str], sample_rate: int = 16000) -> None:
        ps = require("pocketsphinx", "eval")

        assert sample_rate == 16000, "pocketsphinx's en-US model expects 16 kHz"
        cfg = ps.Config(loglevel="FATAL", lm=None)
        self.decoder = ps.Decoder(cfg)
        words = [normalise(s) for s in sentences]
        unknown = {w for s in words for w in s if self.decoder.lookup_word(w) is None}
        if unknown:  # names such as "okonkwo": the grammar (and the match) goes without them
            log.warning("words missing from the pocketsphinx dictionary: %s", sorted(unknown))
        self.sentences = [[w for w in s if w not in unknown] for s in words]
        self._index = {" ".join(s): i for i, s in enumerate(words)}
        alts = " | ".join(sorted({" ".join(s) for s in self.sentences}))
        grammar = f"#JSGF V1.0;\ngrammar s;\npublic <s> = {alts};\n"
        self.decoder.add_jsgf_string("sentences", grammar)
        self.decoder.activate_search("sentences")

    def position(self, sentence: str) -> int:
        """Index of ``sentence`` (as given to the constructor, in any case and punctuation)."""
        return self._index[" ".join(normalise(sentence))]

    def recognise(self, audio: np.ndarray) -> str:
        """float waveform in [-1, 1] → hypothesis text ('' when nothing was decoded).

        A fixed −70 dBFS noise floor is added first: on stems with digital silence (exact
        zeros) pocketsphinx's cepstral normalisation fails and it decodes nothing (measured on
        the synthetic test split: 75 % → 100 % identified with the floor).
        """
        floor = np.random.default_rng(0).standard_normal(len(audio)).astype(np.float32)
        x = audio + _NOISE_FLOOR * floor
        pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp is not None else ""

    def identify(self, audio: np.ndarray) -> int:
        """Index of the closest candidate sentence."""
        words = normalise(self.recognise(audio))
        return int(np.argmin([_edit(words, s) for s in self.sentences]))

    def accuracy(self, clips: list[np.ndarray], truth: list[int]) -> float:
        """Fraction of clips whose identified sentence index equals ``truth``."""
        hits = [self.identify(a) == t for a, t in zip(clips, truth, strict=True)]
        return float(np.mean(hits)) if hits else 0.0
