"""What the server needs from an engine, as Protocols (the engine: ``unison_stream.engine``).

The server is written against these shapes only (the engine is not imported here: no torch on
this side). Every method except ``next_chunk`` is non-blocking and thread-safe. The seam between
a stream and the server's media clock is one verb, ``next_media(start_s)``, asked at each chunk
boundary on the event loop: the stream owns its queue (the only buffer) and when a reply is
ready to play through; the clock owns the timeline. The fake engine
(:mod:`~unison_stream.server.fake_engine`) is the real engine over a replica with no model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from unison_stream.avatars import Avatar

__all__ = [
    "ChunkLike",
    "ChunkSource",
    "EngineLike",
    "EngineSessionLike",
    "EventLike",
    "HeldLike",
    "SpeechWriterLike",
]


class ChunkLike(Protocol):
    index: int
    start_s: float
    video: np.ndarray  # (F, H, W, 3) uint8 at media.fps
    audio: np.ndarray  # (S,) float32 mono at media.sample_rate, in [-1, 1]
    utterance_id: str | None
    state: str  # "speaking" | "idle" | "listening"
    # time.monotonic() per hop of the latency trace: "queued", "planned" (its utterance),
    # "generated", "decoded"
    times: dict[str, float]


@runtime_checkable
class HeldLike(Protocol):
    """The next chunk is a reply's first, held until it plays through (``engine.Held``)."""

    @property
    def utterance_id(self) -> str: ...
    @property
    def wait_s(self) -> float: ...


class EventLike(Protocol):
    utterance_id: str
    event: str  # "queued" | "started" | "finished" | "interrupted"
    media_time_s: float
    effects: tuple[tuple[str, float], ...]  # ``started`` of a text say: (effect, offset s)


class SpeechWriterLike(Protocol):
    """A streamed audio-driven utterance (:class:`unison_stream.engine.SpeechWriter`)."""

    @property
    def dropped(self) -> bool: ...

    def write(self, pcm: np.ndarray) -> None: ...

    def end(self) -> None: ...


class ChunkSource(Protocol):
    """The output side of an engine session, read by the media clock (non-blocking)."""

    def next_media(
        self, start_s: float, *, over_idle: bool = False
    ) -> ChunkLike | HeldLike | None: ...

    def set_buffer(self, *, ahead_s: float, max_prebuffer_s: float) -> None: ...

    def stats(self) -> dict[str, float]: ...


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

    def close(self) -> None: ...


class EngineLike(Protocol):
    """``open_session(avatar=…)``: the person is an :class:`~unison_stream.avatars.Avatar`
    (``caption`` overrides its caption when given); ``reference`` is the encoded reference a
    store cached for its picture (made by ``encode_reference`` under ``reference_key``).
    Without an avatar, ``identity`` names a world portrait (the engine makes the avatar)."""

    def open_session(
        self,
        *,
        avatar: Avatar | None = None,
        identity: int = 0,
        caption: str = "",
        seed: int = 0,
        reference: np.ndarray | None = None,
    ) -> EngineSessionLike: ...

    def encode_reference(self, picture: np.ndarray) -> np.ndarray | None: ...

    @property
    def reference_key(self) -> str: ...

    def close(self) -> None: ...

    @property
    def sessions(self) -> int: ...
