"""What the engine encodes on the caller's side of the replica besides the person's picture
(``reference.py``): the trained speech encoder of the audio-driven mode (``docs/engine.md``,
Audio-driven mode).
"""

from __future__ import annotations

import logging

from unison_stream.codecs import AudioEncoder, CodecUnavailableError, load_encoders
from unison_stream.config import UnisonConfig

__all__ = ["trained_speech_encoder"]

log = logging.getLogger(__name__)


def trained_speech_encoder(cfg: UnisonConfig) -> AudioEncoder | None:
    """The trained audio codec's encoder when its weights fit ``cfg``, else None (fallback)."""
    try:
        _, audio = load_encoders(cfg)
    except CodecUnavailableError as e:
        log.info("audio-driven mode uses the band-energy fallback encoder: %s", e)
        return None
    return audio
