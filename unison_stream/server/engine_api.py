"""What the server needs from an engine, as Protocols (the engine: ``unison_stream.engine``).

The server is written against these shapes only, so the real engine and the deterministic
:mod:`~unison_stream.server.fake_engine` (tests, fault injection, UI work without a model) are
interchangeable. Every method except ``next_chunk`` is non-blocking and thread-safe. The
server's media clock takes chunks with ``take_chunk`` on its event loop: the engine session's
output queue is the stream's only buffer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

__all__ = [
    "ChunkLike",
    "ChunkSource",
    "EngineLike",
    "EngineSessionLike",
    "EventLike",
    "QueuedLike",
    "SpeechWriterLike",
]


class ChunkLike(Protocol):
    index: int
    start_s: float
    video: np.ndarray  # (F, H, W, 3) uint8 at media.fps
    audio: np.ndarray  # (S,) float32 mono at media.sample_rate, in [-1, 1]
    utterance_id: str | None
    state: str  # "speaking" | "idle" | "listening"
    # time.monotonic() per hop: "queued", "planned", "wanted" (the engine could start on it),
    # "generated", "decoded"
    times: dict[str, float]
    utterance_s: float  # planned length of the chunk's utterance (0 for idle chunks)


class QueuedLike(Protocol):
    """A chunk made and not yet taken."""

    @property
    def utterance_id(self) -> str | None: ...
    @property
    def made_at(self) -> float: ...  # time.monotonic() it was decoded
    @property
    def utterance_s(self) -> float: ...


class EventLike(Protocol):
    utterance_id: str
    event: str  # "queued" | "started" | "finished" | "interrupted"
    media_time_s: float


class SpeechWriterLike(Protocol):
    """A streamed audio-driven utterance (:class:`unison_stream.engine.SpeechWriter`)."""

    @property
    def dropped(self) -> bool: ...

    def write(self, pcm: np.ndarray) -> None: ...

    def end(self) -> None: ...


class ChunkSource(Protocol):
    """The output side of an engine session, read by the media clock (non-blocking)."""

    def take_chunk(self, start_s: float | None = None) -> ChunkLike | None: ...

    def queued(self) -> Sequence[QueuedLike]: ...

    def set_ahead(self, chunks: int) -> None: ...


class EngineSessionLike(ChunkSource, Protocol):
    session_id: str

    def say(
        self, text: str, *, utterance_id: str, caption: str | None = None, interrupt: bool = False
    ) -> None: ...

    def say_audio(self, pcm: np.ndarray, sample_rate: int, *, utterance_id: str) -> None: ...

    def say_audio_stream(
        self, sample_rate: int, *, utterance_id: str, interrupt: bool = False
    ) -> SpeechWriterLike: ...

    def interrupt(self) -> None: ...

    def set_state(self, state: str) -> None: ...

    def next_chunk(self, timeout: float | None = None) -> ChunkLike | None: ...

    def poll_events(self) -> Sequence[EventLike]: ...

    def stats(self) -> dict[str, float]: ...

    def close(self) -> None: ...


class EngineLike(Protocol):
    def open_session(
        self, *, identity: int = 0, caption: str = "", seed: int = 0
    ) -> EngineSessionLike: ...

    def close(self) -> None: ...

    @property
    def sessions(self) -> int: ...
