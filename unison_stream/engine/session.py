"""A session's handle and its state: utterance queue, output queue, media clock, events.

``EngineSession`` is the thread-safe handle a server holds (``docs/engine.md``). All state lives
under the engine's one lock; the engine's worker reads the session's next job
(:meth:`EngineSession._next_job`) and hands decoded chunks back (:meth:`EngineSession._push`).

The output queue is the stream's only buffer: a consumer takes chunks from it — blocking with
:meth:`next_chunk`, or without waiting with :meth:`~EngineSession.take_chunk` (the server's
media clock, on its event loop, which also reads :meth:`~EngineSession.queued` and sets how far
ahead the worker may make chunks with :meth:`~EngineSession.set_ahead`). Chunks are numbered and
placed on the media timeline when they are *delivered*, so the timeline stays contiguous even
when chunks made ahead are dropped (an interrupt drops the interrupted utterance's queued
chunks; a ``say`` drops queued idle chunks so the new utterance starts as soon as it is made).
A consumer that plays idle frames between chunks passes the media time a chunk starts at, and
the events then carry that timeline's times: ``queued`` (the timeline's end when it was
queued), ``started`` (its first sample), ``finished`` (the end of its speech),
``interrupted`` (the end of what was delivered when the interrupt came).
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
from unison_stream.engine.audio import StreamResampler
from unison_stream.engine.planner import Planner, UtterancePlan
from unison_stream.engine.types import EngineClosedError, MediaChunk, QueuedChunk, UtteranceEvent
from unison_stream.model.conditioning import Conditioning

__all__ = [
    "EngineSession",
    "Planned",
    "Scheduler",
    "SessionLog",
    "SpeechInput",
    "SpeechWriter",
    "Utterance",
]

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


class SpeechInput:
    """The speech of a streamed audio-driven utterance as it arrives (under the engine lock).

    ``pcm`` grows at the media rate (:class:`StreamResampler`: bit-exact with resampling the
    whole), ``latents`` one chunk at a time as each chunk's audio is complete. Chunk ``k`` may
    be made once its samples are here and one more (so the last chunk is known to be last) or
    the input has ended. ``anchor`` paces the input: chunk ``k`` is due ``k`` chunks after
    chunk 0 was complete, plus the grace; a chunk that is later is replaced by a listening
    chunk and the pace slips by one chunk.
    """

    def __init__(self, sample_rate: int, media_rate: int, per_chunk: int) -> None:
        self.resampler = StreamResampler(sample_rate, media_rate)
        self.per_chunk = per_chunk  # media samples per chunk
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
        """Chunk ``k``'s speech and latents are here (and whether it is the last is known)."""
        return self.encoded > k and (self.ended or self.samples > (k + 1) * self.per_chunk)

    def last(self, k: int) -> bool:
        return self.ended and (k + 1) * self.per_chunk >= self.samples

    def due(self, k: int, grace_s: float, chunk_s: float) -> float:
        """Monotonic time after which chunk ``k`` counts as late (inf before chunk 0 is here)."""
        if self.anchor is None:
            return float("inf")
        return self.anchor + (k + self.slips) * chunk_s + grace_s


class SpeechWriter:
    """Writes a streamed audio-driven utterance (:meth:`EngineSession.say_audio_stream`):
    :meth:`write` PCM pieces as they come (a TTS's frames), then :meth:`end`. Thread-safe;
    writes after an interrupt dropped the utterance are ignored (:attr:`dropped`)."""

    def __init__(self, session: EngineSession, utt: Utterance) -> None:
        self._session, self._utt = session, utt

    @property
    def utterance_id(self) -> str:
        return self._utt.utterance_id

    @property
    def dropped(self) -> bool:
        """The utterance was interrupted (or the session closed): writes go nowhere."""
        return self._utt.dropped

    def chunks_ready(self) -> int:
        """Chunks whose speech has arrived whole (and can be made)."""
        inp = self._utt.speech_input
        assert inp is not None
        with self._session._lock:
            return next(k for k in itertools.count() if not inp.makeable(k))

    def write(self, pcm: np.ndarray) -> None:
        """Append (S,) float speech in [-1, 1] at the stream's sample rate."""
        self._session._stream_audio(self._utt, pcm, end=False)

    def end(self) -> None:
        """No more speech: the utterance finishes with what was written (idempotent)."""
        self._session._stream_audio(self._utt, np.zeros(0, np.float32), end=True)


@dataclass
class Utterance:
    """A say request on its way through the session."""

    utterance_id: str
    plan: Future[Planned] | None = None  # text mode: planned off the caller's thread
    speech_latents: np.ndarray | None = None  # audio mode: (N, Ca) clean speech latents
    speech_pcm: np.ndarray | None = None  # audio mode: the caller's waveform at the media rate
    speech_input: SpeechInput | None = None  # streamed audio mode: speech as it arrives
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
    k: int = 0  # chunk of its utterance


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
    def _encode_chunk(self, pcm: np.ndarray, k: int) -> np.ndarray: ...
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
        self._opened = time.perf_counter()
        self._stats = _Stats()
        self._ahead = engine.max_ahead  # chunks the worker may make ahead of the consumer
        self._room_at = time.monotonic()  # when the output queue last got room (rate figures)
        self._end_s = 0.0  # media time where the delivered timeline ends

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

    def say_audio_stream(
        self, sample_rate: int, *, utterance_id: str, interrupt: bool = False
    ) -> SpeechWriter:
        """Start a streamed audio-driven utterance: speech arrives in pieces through the
        returned writer while the avatar already speaks it. Each chunk is made once its audio
        is here (its speech held clean, motion and effects generated around it); input later
        than its real-time pace by ``stream.input_grace_s`` gets a listening chunk instead."""
        if not 8000 <= sample_rate <= 48000:
            raise ValueError(f"sample_rate must be 8000–48000, not {sample_rate}")
        cfg = self._engine.cfg
        per_chunk = round(cfg.chunk_seconds() * cfg.media.sample_rate)
        inp = SpeechInput(sample_rate, cfg.media.sample_rate, per_chunk)
        utt = Utterance(utterance_id, speech_input=inp)
        self._enqueue(utt, interrupt=interrupt)
        return SpeechWriter(self, utt)

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
        """The next chunk, right after the previous one on the media timeline; None on timeout
        or once closed."""
        with self._lock:
            if not self._ready.wait_for(lambda: bool(self._queue) or self._closed, timeout):
                self._stats.underflows += 1
                return None
            return self._deliver(None) if self._queue else None

    def take_chunk(self, start_s: float | None = None) -> MediaChunk | None:
        """The next chunk if one is made, else None, without waiting. ``start_s`` places it on
        the consumer's media timeline (default: right after the previous chunk)."""
        with self._lock:
            return self._deliver(start_s) if self._queue else None

    def queued(self) -> list[QueuedChunk]:
        """The chunks made and not yet taken, oldest first."""
        with self._lock:
            return [
                QueuedChunk(
                    p.chunk.utterance_id, p.chunk.times.get("decoded", 0.0), p.chunk.utterance_s
                )
                for p in self._queue
            ]

    def set_ahead(self, chunks: int) -> None:
        """How many chunks the worker may make ahead of the consumer (at least 1)."""
        with self._lock:
            self._ahead = max(1, chunks)
            self._engine._wake()

    def _deliver(self, start_s: float | None) -> MediaChunk:
        """Pop the oldest chunk onto the timeline at ``start_s`` (under the lock)."""
        if len(self._queue) >= self._ahead:
            self._room_at = time.monotonic()
        p = self._queue.popleft()
        self._engine._wake()  # room in the queue: the worker may make the next chunk
        n = self._stats.delivered
        self._stats.delivered += 1
        start = self._end_s if start_s is None else start_s
        chunk = replace(p.chunk, index=n, start_s=start)
        self._end_s = start + self._chunk_s
        uid = chunk.utterance_id
        if uid is not None and p.first:
            self._event(uid, "started", start)
        if uid is not None and p.last:  # where its speech ends inside this chunk
            spoken = min(self._chunk_s, max(0.0, p.duration_s - p.k * self._chunk_s))
            self._event(uid, "finished", start + spoken)
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
                "ahead": float(self._ahead),
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

    def _stream_audio(self, utt: Utterance, pcm: np.ndarray, *, end: bool) -> None:
        """A :class:`SpeechWriter` piece: resample, encode the chunks it completes, wake."""
        inp = utt.speech_input
        assert inp is not None
        with inp.lock:
            if inp.ended:
                if end:
                    return
                raise ValueError(f"utterance {utt.utterance_id}: write after end")
            if utt.dropped:
                return
            x = inp.resampler.end() if end else inp.resampler.push(pcm)
            speech = np.concatenate([inp.pcm, np.clip(x, -1.0, 1.0)])
            samples = speech.size
            if end:  # pad to whole chunks (at least one: an empty stream is one silent chunk)
                n = max(1, -(-samples // inp.per_chunk)) * inp.per_chunk
                speech = np.pad(speech, (0, n - samples))
            whole = speech.size // inp.per_chunk
            new = [self._engine._encode_chunk(speech, k) for k in range(inp.encoded, whole)]
            with self._lock:
                if new:
                    old = [] if inp.latents is None else [inp.latents]
                    inp.latents = np.concatenate([*old, *new])
                inp.pcm, inp.samples, inp.ended = speech, samples, end
                utt.speech_pcm, utt.speech_latents = inp.pcm, inp.latents
                if inp.anchor is None and (inp.makeable(0) or end):
                    inp.anchor = time.monotonic()
                self._engine._wake()
                self._engine._maybe_cancel()

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
        t = self._clock_end()
        dropped = [u for u in [self._current, *self._utterances] if u is not None]
        self._current = None
        self._utterances.clear()
        self._epoch += 1
        kept = [p for p in self._queue if p.chunk.utterance_id is None]
        self._stats.dropped += len(self._queue) - len(kept)
        self._queue = collections.deque(kept)
        for u in dropped:
            u.dropped = True
            self._event(u.utterance_id, "interrupted", t)
        if dropped:
            self.log.info("interrupted %s", ", ".join(u.utterance_id for u in dropped))

    def _clock_end(self) -> float:
        return self._end_s

    def _event(self, uid: str, event: str, t: float) -> None:
        self._events.append(UtteranceEvent(uid, event, round(t, 6)))

    def _wants_chunk(self) -> bool:
        return not self._closed and len(self._queue) < self._ahead and self._input_wait() is None

    def _input_wait(self) -> float | None:
        """Seconds the current streamed utterance's next chunk may still be waited for (its
        audio is not here and not late yet); None when nothing waits."""
        u = self._current
        if u is None or u.speech_input is None or u.speech_input.makeable(u.chunks):
            return None
        grace = self._engine.cfg.stream.input_grace_s
        left = u.speech_input.due(u.chunks, grace, self._chunk_s) - time.monotonic()
        return left if left > 0 else None

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
        inp = utt.speech_input
        if inp is not None and not inp.makeable(utt.chunks):  # late input: listen meanwhile
            inp.slips += 1
            self.log.info("%s: speech input late, listening chunk", utt.utterance_id)
            return Job("idle", "listening", self._epoch, self._say_epoch)
        job = Job("utterance", "speaking", self._epoch, self._say_epoch, utt, utt.chunks)
        if inp is not None:
            job.last = inp.last(utt.chunks)
        else:
            job.last = utt.chunks + 1 >= self._engine._utterance_chunks(utt)
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
        chunk.times["wanted"] = self._room_at  # since when this chunk was waited for
        self._queue.append(_Pending(chunk, first, job.last, dur, job.k))
        if len(self._queue) < self._ahead:
            self._room_at = time.monotonic()
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
            self._event(uid, "failed", self._clock_end())
        self.log.error("chunk failed (%s: %s); back to idle", type(error).__name__, error)
