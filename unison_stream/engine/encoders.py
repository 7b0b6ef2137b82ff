"""What the engine encodes on the caller's side of the replica: the portrait a session's
identity sink is drawn from (the synthetic world's face of that seed) and the trained speech
encoder of the audio-driven mode (``docs/engine.md``, How a chunk is made; Audio-driven mode).
"""

from __future__ import annotations

import logging

import numpy as np

from unison_stream.codecs import AudioEncoder, CodecUnavailableError, load_encoders
from unison_stream.config import UnisonConfig

__all__ = ["portrait", "trained_speech_encoder"]

log = logging.getLogger(__name__)


def portrait(seed: int, width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8 neutral frame of the synthetic world's identity drawn with ``seed``."""
    from unison_stream.data.synth.config import WorldConfig
    from unison_stream.data.synth.face import FaceRenderer, FaceState
    from unison_stream.data.synth.identity import sample_identity

    ident = sample_identity(np.random.default_rng(seed))
    r = FaceRenderer(
        ident, width=width, height=height, supersample=WorldConfig().supersample, props=[]
    )
    return r.render(FaceState(), draw_hands=False)


def trained_speech_encoder(cfg: UnisonConfig) -> AudioEncoder | None:
    """The trained audio codec's encoder when its weights fit ``cfg``, else None (fallback)."""
    try:
        _, audio = load_encoders(cfg)
    except CodecUnavailableError as e:
        log.info("audio-driven mode uses the band-energy fallback encoder: %s", e)
        return None
    return audio
