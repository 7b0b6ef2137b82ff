"""The engine's public data types: decoded media chunks, utterance events, errors.

These are what a server or SDK sees of the engine (``docs/engine.md``): typed frames in the
pipecat style, numpy only, no torch.

Exception tree::

    EngineError                  anything the engine refuses or cannot do
    ├── EngineClosedError        the engine (or the session) was closed
    └── EngineFullError          all ``max_sessions`` batch slots are taken

A bad ``say`` raises the built-in ``ValueError`` (unknown tag, too long, empty), as the
interface contract says.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from unison_stream.errors import EngineClosedError, EngineError, EngineFullError

__all__ = [
    "EVENTS",
    "STATES",
    "EngineClosedError",
    "EngineError",
    "EngineFullError",
    "Held",
    "MediaChunk",
    "UtteranceEvent",
]

STATES: tuple[str, ...] = ("speaking", "idle", "listening")
# "failed" extends the contract: an utterance dropped because its chunk could not be made
EVENTS: tuple[str, ...] = ("queued", "started", "finished", "interrupted", "failed")


@dataclass
class MediaChunk:
    """One decoded chunk on the session's media clock."""

    index: int  # chunk counter of the session, from 0, contiguous
    start_s: float  # media time of the first sample/frame (index * chunk_seconds)
    video: np.ndarray  # (F, H, W, 3) uint8 frames at cfg.media.fps
    audio: np.ndarray  # (S,) float32 mono mix at cfg.media.sample_rate, in [-1, 1]
    speech: np.ndarray | None = None  # stems, same length
    sfx: np.ndarray | None = None
    utterance_id: str | None = None  # utterance this chunk belongs to (None = idle/listening)
    state: str = "idle"  # "speaking" | "idle" | "listening"
    # the chunk's way through the engine as ``time.monotonic()`` instants (one clock for every
    # process of the host), for latency budgets: "queued" (say accepted) and "planned" (text
    # timed and embedded) of its utterance, then "generated" and "decoded"
    times: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Held:
    """The next chunk is an utterance's first, made and held back until the stream's buffer
    policy says it plays through (``EngineSession.next_media``)."""

    utterance_id: str
    wait_s: float  # how long the policy waits after that chunk was made


@dataclass
class UtteranceEvent:
    """A change in an utterance's life, stamped with the session's media time."""

    utterance_id: str
    event: str  # "queued" | "started" | "finished" | "interrupted" (| "failed")
    media_time_s: float
    # ``started`` of a text say: (effect, seconds after the start its sound begins), as planned
    effects: tuple[tuple[str, float], ...] = ()
