"""A session's handle and its state: utterance queue, output queue, media clock, events.

``EngineSession`` is the thread-safe handle a server holds (``docs/engine.md``). All state lives
under the engine's one lock; the engine's worker reads the session's next job
(:meth:`EngineSession._next_job`) and hands decoded chunks back (:meth:`EngineSession._push`).

The media clock: chunks are numbered when they are *delivered* by :meth:`next_chunk`, so the
clock stays contiguous and gap-free even when chunks made ahead are dropped (an interrupt drops
the interrupted utterance's queued chunks; a ``say`` drops queued idle chunks so the new
utterance starts as soon as it is made). Utterance events carry media times of that clock:
``queued`` (the clock's current end), ``started`` (its first chunk), ``finished`` (the end of
its plan), ``interrupted`` (the boundary where the interrupt takes effect).
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import MutableMapping
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import torch

from unison_stream.config import UnisonConfig
from unison_stream.engine.planner import Planner, UtterancePlan
from unison_stream.engine.types import EngineClosedError, MediaChunk, UtteranceEvent
from unison_stream.model.conditioning import Conditioning

__all__ = ["EngineSession", "Planned", "Scheduler", "SessionLog", "Utterance"]

log = logging.getLogger(__name__)
_IDS = itertools.count(1)


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


@dataclass
class Utterance:
    """A say request on its way through the session."""

    utterance_id: str
    plan: Future[Planned] | None = None  # text mode: planned off the caller's thread
    speech_latents: np.ndarray | None = None  # audio mode: (N, Ca) clean speech latents
    speech_pcm: np.ndarray | None = None  # audio mode: the caller's waveform at the media rate
    caption: str | None = None
    chunks: int = 0  # chunks made so far
    started: bool = False
    queued_at: float = field(default_factory=time.monotonic)  # say accepted (time.monotonic)
    encoded_at: float = 0.0  # audio mode: speech latents ready (text mode: ``Planned.at``)

    def planned_at(self) -> float:
        return self.plan.result().at if self.plan is not None else self.encoded_at

    def ready(self) -> bool:
        return self.plan is None or self.plan.done()


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


@dataclass
class _Pending:
    chunk: MediaChunk
    first: bool
    last: bool
    duration_s: float = 0.0  # utterance plan length (for the finished event's media time)


@dataclass
class _Stats:
    generated: int = 0
    delivered: int = 0
    dropped: int = 0
    underflows: int = 0
    errors: int = 0
    compute_s: float = 0.0  # worker time spent on this session's chunks (batch share)
    chunk_ms: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=200)
    )


class Scheduler(Protocol):
    """What a stream needs of the engine that schedules it (:class:`~unison_stream.engine.
    Engine`): its lock, planning, the speech encoder, and being woken. Written as a protocol
    so this file does not import ``engine.py``, which imports it."""

    cfg: UnisonConfig
    planner: Planner
    max_ahead: int
    _lock: threading.RLock

    def _plan_async(self, text: str, caption: str | None = None) -> Future[Planned]: ...
    def _encode_speech(
        self, pcm: np.ndarray, sample_rate: int
    ) -> tuple[np.ndarray, np.ndarray]: ...
    def _wake(self) -> None: ...
    def _maybe_cancel(self) -> None: ...
    def _release(self, s: EngineSession) -> None: ...
    def _utterance_chunks(self, u: Utterance) -> int: ...
    def _utterance_seconds(self, u: Utterance) -> float: ...


class EngineSession:
    """Thread-safe handle on one stream; every method is non-blocking but ``next_chunk``."""

    def __init__(self, engine: Scheduler, *, identity: int, caption: str, seed: int) -> None:
        self.session_id = f"s{next(_IDS)}"
        self.identity, self.caption, self.seed = identity, caption, seed
        self.log = SessionLog(log, {"session": self.session_id})
        self._engine = engine
        self._lock = engine._lock
        self._ready = threading.Condition(self._lock)  # next_chunk waits here
        self._chunk_s = engine.cfg.chunk_seconds()
        self._queue: collections.deque[_Pending] = collections.deque()
        self._events: list[UtteranceEvent] = []
        self._utterances: collections.deque[Utterance] = collections.deque()
        self._current: Utterance | None = None
        self._state = "idle"
        self._epoch = 0
        self._say_epoch = 0
        self._needs_sink = True
        self._closed = False
        self._utt_start: dict[str, float] = {}
        self._opened = time.perf_counter()
        self._stats = _Stats()

    # ---- public API ---------------------------------------------------------------------
    def say(
        self, text: str, *, utterance_id: str, caption: str | None = None, interrupt: bool = False
    ) -> None:
        """Queue ``text`` (inline ``<tags>``); ValueError on an unknown tag or too long text."""
        self._engine.planner.validate(text)  # raises ValueError in the caller's thread
        plan = self._engine._plan_async(text, caption)
        self._enqueue(Utterance(utterance_id, plan=plan, caption=caption), interrupt)
        # once planned, an idle chunk still being made is not worth waiting for
        plan.add_done_callback(lambda _: self._engine._maybe_cancel())

    def say_audio(self, pcm: np.ndarray, sample_rate: int, *, utterance_id: str) -> None:
        """Queue a speech waveform (audio-driven mode): held clean, returned as the speech stem."""
        queued_at = time.monotonic()
        speech, latents = self._engine._encode_speech(pcm, sample_rate)
        utt = Utterance(utterance_id, speech_latents=latents, speech_pcm=speech)
        utt.queued_at, utt.encoded_at = queued_at, time.monotonic()
        self._enqueue(utt, interrupt=False)

    def interrupt(self) -> None:
        """Stop the current utterance at the next chunk boundary and drop the queued ones."""
        with self._lock:
            self._interrupt_locked()
            self._engine._wake()
            self._engine._maybe_cancel()  # the chunk being made belongs to what was dropped

    def set_state(self, state: str) -> None:
        """``"idle"`` or ``"listening"``: what the avatar does when nothing is said."""
        if state not in ("idle", "listening"):
            raise ValueError(f"state must be idle or listening, not {state!r}")
        with self._lock:
            self._state = state

    def next_chunk(self, timeout: float | None = None) -> MediaChunk | None:
        """The next chunk on the media clock; None on timeout or once closed."""
        with self._lock:
            if not self._ready.wait_for(lambda: bool(self._queue) or self._closed, timeout):
                self._stats.underflows += 1
                return None
            if not self._queue:
                return None
            p = self._queue.popleft()
            self._engine._wake()  # room in the queue: the worker may make the next chunk
            n = self._stats.delivered
            self._stats.delivered += 1
            chunk = replace(p.chunk, index=n, start_s=n * self._chunk_s)
            uid = chunk.utterance_id
            if uid is not None and p.first:
                self._utt_start[uid] = chunk.start_s
                self._event(uid, "started", chunk.start_s)
            if uid is not None and p.last:
                start = self._utt_start.pop(uid, chunk.start_s)
                end = min(start + p.duration_s, chunk.start_s + self._chunk_s)
                self._event(uid, "finished", end)
            return chunk

    def poll_events(self) -> list[UtteranceEvent]:
        """Utterance events since the last call, in order."""
        with self._lock:
            out, self._events = self._events, []
            return out

    def stats(self) -> dict[str, float]:
        """rtf (media s per compute s), buffer_ms, chunks, generated, dropped, underflows…"""
        with self._lock:
            s = self._stats
            media = s.generated * self._chunk_s
            ms = sorted(s.chunk_ms)
            return {
                "rtf": media / s.compute_s if s.compute_s > 0 else 0.0,
                "buffer_ms": len(self._queue) * self._chunk_s * 1000,
                "chunks": float(s.delivered),
                "generated": float(s.generated),
                "dropped": float(s.dropped),
                "underflows": float(s.underflows),
                "errors": float(s.errors),
                "chunk_ms_p50": ms[len(ms) // 2] if ms else 0.0,
                "media_s": s.delivered * self._chunk_s,
                "uptime_s": time.perf_counter() - self._opened,
            }

    def close(self) -> None:
        """Free the batch slot and the cache; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.clear()
            self._ready.notify_all()
        self._engine._release(self)
        self.log.info("closed")

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- worker side (called by the engine under or around the lock) --------------------
    def _enqueue(self, utt: Utterance, interrupt: bool) -> None:
        with self._lock:
            if self._closed:
                raise EngineClosedError(f"session {self.session_id} is closed")
            if interrupt:
                self._interrupt_locked()
            self._say_epoch += 1
            kept = [p for p in self._queue if p.chunk.utterance_id is not None]
            self._stats.dropped += len(self._queue) - len(kept)
            self._queue = collections.deque(kept)  # idle chunks made ahead would delay it
            self._utterances.append(utt)
            self._event(utt.utterance_id, "queued", self._clock_end())
            self._engine._wake()
            self._engine._maybe_cancel()

    def _interrupt_locked(self) -> None:
        t = self._clock_end_delivered()
        dropped = [u for u in [self._current, *self._utterances] if u is not None]
        self._current = None
        self._utterances.clear()
        self._epoch += 1
        kept = [p for p in self._queue if p.chunk.utterance_id is None]
        self._stats.dropped += len(self._queue) - len(kept)
        self._queue = collections.deque(kept)
        for u in dropped:
            self._utt_start.pop(u.utterance_id, None)
            self._event(u.utterance_id, "interrupted", t)
        if dropped:
            self.log.info("interrupted %s", ", ".join(u.utterance_id for u in dropped))

    def _clock_end_delivered(self) -> float:
        return self._stats.delivered * self._chunk_s

    def _clock_end(self) -> float:
        return self._clock_end_delivered()

    def _event(self, uid: str, event: str, t: float) -> None:
        self._events.append(UtteranceEvent(uid, event, round(t, 6)))

    def _wants_chunk(self) -> bool:
        return not self._closed and len(self._queue) < self._engine.max_ahead

    def _next_job(self) -> Job:
        """What to make next (under the lock)."""
        if self._needs_sink:
            return Job("sink", self._state, self._epoch, self._say_epoch)
        if self._current is None and self._utterances and self._utterances[0].ready():
            utt = self._utterances.popleft()
            if utt.plan is not None and utt.plan.exception() is not None:
                self.log.error("planning %s failed: %s", utt.utterance_id, utt.plan.exception())
                self._event(utt.utterance_id, "failed", self._clock_end())
                return self._next_job()
            self._current = utt
        if self._current is None:
            return Job("idle", self._state, self._epoch, self._say_epoch)
        utt = self._current
        total = self._engine._utterance_chunks(utt)
        job = Job("utterance", "speaking", self._epoch, self._say_epoch, utt, utt.chunks)
        job.last = utt.chunks + 1 >= total
        utt.chunks += 1
        if job.last:
            self._current = None
        return job

    def _push(self, job: Job, chunk: MediaChunk, compute_s: float) -> None:
        """Hand a made chunk over (under the lock); stale chunks are dropped."""
        s = self._stats
        s.generated += 1
        s.compute_s += compute_s
        s.chunk_ms.append(compute_s * 1000)
        if self._closed or self._stale(job):
            s.dropped += 1
            return
        first = job.kind == "utterance" and job.k == 0
        dur = 0.0
        if job.utterance is not None and job.last:
            dur = self._engine._utterance_seconds(job.utterance)
        self._queue.append(_Pending(chunk, first, job.last, dur))
        self._ready.notify_all()

    def _has_pending(self) -> bool:
        return self._current is not None or bool(self._utterances)

    def _stale(self, job: Job, *, cancel: bool = False) -> bool:
        """A chunk of ``job`` would be dropped on delivery (under the lock): its utterance was
        interrupted, or it is an idle chunk made before a ``say`` that is now pending. With
        ``cancel`` an idle job counts as stale only once the pending utterance is planned (the
        chunk being made is then worth abandoning: the next one can be the utterance)."""
        if self._closed:
            return True
        if job.kind == "utterance":
            return job.epoch != self._epoch
        if job.kind != "idle" or job.say_epoch == self._say_epoch:
            return False
        if not cancel:
            return self._has_pending()
        return self._current is not None or bool(self._utterances and self._utterances[0].ready())

    def _fail(self, job: Job, error: BaseException) -> None:
        """A chunk could not be made (under the lock): drop its utterance, go idle, re-sink."""
        self._stats.errors += 1
        self._needs_sink = True  # the cache may hold half a chunk: start again from identity
        if job.utterance is not None and job.epoch == self._epoch:
            uid = job.utterance.utterance_id
            if self._current is job.utterance:
                self._current = None
            self._utt_start.pop(uid, None)
            self._event(uid, "failed", self._clock_end())
        self.log.error("chunk failed (%s: %s); back to idle", type(error).__name__, error)
