"""Intelligibility: closed-set sentence identification (``docs/eval.md``).

The generated speech of each clip and the ground-truth speech stem are recognised against the
same closed set — every sentence of the evaluated split — with pocketsphinx
(:class:`~unison_stream.codecs.sentence_id.SentenceIdentifier`, a JSGF grammar of the
candidates). ``sentence_id_ratio`` is the model's accuracy divided by the ground truth's.
"""

from __future__ import annotations

import numpy as np

from unison_stream.codecs.sentence_id import SentenceIdentifier

__all__ = ["sentence_accuracy"]


def sentence_accuracy(
    identifier: SentenceIdentifier, clips: list[np.ndarray], sentences: list[str]
) -> float:
    """Fraction of ``clips`` (16 kHz speech) identified as their own entry of ``sentences``."""
    return identifier.accuracy(clips, [identifier.position(s) for s in sentences])
