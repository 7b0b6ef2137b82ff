"""A say on its way through a stream: the utterance, its plan, its streamed speech, a job.

:class:`Utterance` is one ``say`` (text: planned off the caller's thread into :class:`Planned`;
audio: the caller's speech and its latents; streamed audio: a :class:`SpeechInput` that grows
as it arrives); :class:`Job` is what the engine's worker makes next for a stream. They hold
data only; the :class:`~unison_stream.engine.stream.Stream` that owns them changes them under
its lock.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import MutableMapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from unison_stream.engine.audio import StreamResampler
from unison_stream.engine.planner import UtterancePlan
from unison_stream.engine.speech_frontend import FrontEndStream
from unison_stream.engine.types import MediaChunk
from unison_stream.model.conditioning import Conditioning, TimedTrack

__all__ = [
    "Job",
    "Pending",
    "Planned",
    "SessionLog",
    "SpeechInput",
    "StreamStats",
    "Utterance",
    "with_identity",
]


class SessionLog(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every record with the session id (STYLE.md §10)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return f"[session {self.extra['session'] if self.extra else '?'}] {msg}", kwargs


@dataclass(frozen=True)
class Planned:
    """A planned text utterance: its timing plan and its text embeddings."""

    plan: UtterancePlan
    transcript_pooled: torch.Tensor  # (1, text_dim): c_s of the SCG gates
    caption: Conditioning | None = None  # a per-utterance caption (no identity), else None
    at: float = field(default_factory=time.monotonic)  # when planning finished


class SpeechInput:
    """The speech of a streamed audio-driven utterance as it arrives (under the stream lock).

    ``pcm`` grows at the media rate (:class:`StreamResampler`: bit-exact with resampling the
    whole), ``latents`` one chunk at a time as each chunk's audio is complete. Chunk ``k`` may
    be made once its samples are here and one more (so the last chunk is known to be last) or
    the input has ended. ``anchor`` paces the input: chunk ``k`` is due ``k`` chunks after
    chunk 0 was complete, plus the grace; a chunk that is later is replaced by a listening
    chunk and the pace slips by one chunk.
    """

    def __init__(
        self,
        sample_rate: int,
        media_rate: int,
        per_chunk: int,
        frontend: FrontEndStream | None = None,
    ) -> None:
        self.resampler = StreamResampler(sample_rate, media_rate)
        self.per_chunk = per_chunk  # media samples per chunk
        self.chunk_s = per_chunk / media_rate
        # the speech's timed track as the front end reads it (None: no front end weights);
        # ``track`` / ``known_s`` are its snapshot after each write, final up to ``known_s``
        self.frontend = frontend
        self.track = TimedTrack()
        self.known_s = 0.0
        self.pcm = np.zeros(0, np.float32)  # (S,) at the media rate (padded once ended)
        self.latents: np.ndarray | None = None  # (N, Ca) for the complete chunks
        self.lock = threading.Lock()  # one writer at a time (the resampler carries state)
        self.ended = False
        self.samples = 0  # media samples of the speech itself (no end padding)
        self.anchor: float | None = None  # monotonic time chunk 0 became makeable
        self.slips = 0  # listening chunks put in for late input

    @property
    def encoded(self) -> int:
        """Chunks whose latents exist: every whole chunk of ``pcm`` is encoded with it."""
        return self.pcm.size // self.per_chunk

    def makeable(self, k: int) -> bool:
        """Chunk ``k``'s speech and latents are here (and whether it is the last is known), and
        its track is final to the chunk's end (the front end looks ~50 ms ahead)."""
        here = self.ended or self.samples > (k + 1) * self.per_chunk
        read = self.ended or self.frontend is None or self.known_s >= (k + 1) * self.chunk_s
        return self.encoded > k and here and read

    def last(self, k: int) -> bool:
        return self.ended and (k + 1) * self.per_chunk >= self.samples

    def due(self, k: int, grace_s: float, chunk_s: float) -> float:
        """Monotonic time after which chunk ``k`` counts as late (inf before chunk 0 is here)."""
        if self.anchor is None:
            return float("inf")
        return self.anchor + (k + self.slips) * chunk_s + grace_s


@dataclass
class Utterance:
    """A say request on its way through the session."""

    utterance_id: str
    plan: Future[Planned] | None = None  # text mode: planned off the caller's thread
    speech_latents: np.ndarray | None = None  # audio mode: (N, Ca) clean speech latents
    speech_pcm: np.ndarray | None = None  # audio mode: the caller's waveform at the media rate
    speech_input: SpeechInput | None = None  # streamed audio mode: speech as it arrives
    track: TimedTrack | None = None  # whole audio mode: the speech's track (front end)
    dropped: bool = False  # interrupted or its session closed
    caption: str | None = None
    chunks: int = 0  # chunks made so far
    started: bool = False
    queued_at: float = field(default_factory=time.monotonic)  # say accepted (time.monotonic)
    encoded_at: float = 0.0  # audio mode: speech latents ready (text mode: ``Planned.at``)

    def planned_at(self) -> float:
        return self.plan.result().at if self.plan is not None else self.encoded_at

    def ready(self) -> bool:
        if self.speech_input is not None:  # streamed: once its first chunk can be made
            return self.speech_input.makeable(0) or self.speech_input.ended
        return self.plan is None or self.plan.done()

    def num_chunks(self, chunk_s: float, per_chunk: int) -> int:
        """Its chunks of ``chunk_s`` (``per_chunk`` media samples each)."""
        if self.speech_pcm is not None:
            return round(self.speech_pcm.size / per_chunk)
        assert self.plan is not None
        return self.plan.result().plan.num_chunks(chunk_s)

    def seconds(self, rate: int) -> float:
        """Its length in media seconds (streamed: the speech written, not its padding)."""
        if self.speech_input is not None:
            return self.speech_input.samples / rate
        if self.speech_pcm is not None:
            return self.speech_pcm.size / rate
        assert self.plan is not None
        return self.plan.result().plan.duration_s


@dataclass
class Job:
    """What the worker makes next for a session (read under the lock)."""

    kind: str  # "sink" | "utterance" | "idle"
    state: str
    epoch: int  # session epoch when planned: an interrupt bumps it
    say_epoch: int  # say count when planned: idle chunks planned before a say are stale
    utterance: Utterance | None = None
    k: int = 0  # chunk of the utterance
    last: bool = False
    track: TimedTrack = field(default_factory=TimedTrack)  # the window its chunk sees


@dataclass
class Pending:
    """A made chunk in a stream's output queue."""

    chunk: MediaChunk
    first: bool
    last: bool
    duration_s: float = 0.0  # its utterance's planned length (0 for idle chunks)
    k: int = 0  # chunk of its utterance
    made_at: float = 0.0  # time.monotonic() it was decoded
    took_s: float = 0.0  # from when the worker could start on it to ``made_at``
    effects: tuple[tuple[str, float], ...] = ()  # first chunk of a text say: its planned effects


@dataclass
class StreamStats:
    """A stream's counters (``EngineSession.stats``)."""

    generated: int = 0
    delivered: int = 0
    dropped: int = 0
    underflows: int = 0
    errors: int = 0
    compute_s: float = 0.0  # worker time spent on this session's chunks (batch share)
    chunk_ms: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=200)
    )

    def figures(self, chunk_s: float, queued: int, ahead: int, uptime_s: float) -> dict[str, float]:
        """``EngineSession.stats``: these counters with ``queued`` chunks of ``chunk_s``
        waiting, ``ahead`` allowed."""
        ms = sorted(self.chunk_ms)
        return {
            "rtf": self.generated * chunk_s / self.compute_s if self.compute_s > 0 else 0.0,
            "buffer_ms": queued * chunk_s * 1000,
            "ahead": float(ahead),
            "chunks": float(self.delivered),
            "generated": float(self.generated),
            "dropped": float(self.dropped),
            "underflows": float(self.underflows),
            "errors": float(self.errors),
            "chunk_ms_p50": ms[len(ms) // 2] if ms else 0.0,
            "media_s": self.delivered * chunk_s,
            "uptime_s": uptime_s,
        }


def with_identity(c: Conditioning, identity: torch.Tensor) -> Conditioning:
    """``c`` with its identity tokens replaced."""
    return Conditioning(**{**vars(c), "identity": identity})
