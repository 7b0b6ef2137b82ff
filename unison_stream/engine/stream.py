"""One stream's home: its utterances, plan slicing, output queue and events on one timeline.

A :class:`Stream` is everything of one session that is not model state (the replica holds the
session's cache row and streaming decoders where the model runs): the utterance queue and the
current utterance, the conditioning its chunks are planned from (caption, listening caption,
identity reference), the mixer, the output queue of made chunks and the events, all under the
stream's own lock. It holds no reference to the engine: the engine's worker asks it for its
next job (:meth:`Stream.next_job`) and the batch-1 plan slice of it (:meth:`Stream.plan_slice`),
and hands decoded media back (:meth:`Stream.media`, :meth:`Stream.push`); the session handle
(:class:`~unison_stream.engine.session.EngineSession`) queues utterances and takes chunks.
Callers wake the worker themselves after changing a stream (lock order: engine, then stream).

The output queue is the stream's only buffer: a consumer takes chunks from it — blocking, or
without waiting (the server's media clock, on its event loop, which also reads the queue and
sets how far ahead the worker may make chunks). Chunks are numbered and placed on the media
timeline when they are *delivered*, so the timeline stays contiguous even when chunks made
ahead are dropped (an interrupt drops the interrupted utterance's queued chunks; an
utterance's first chunk drops the queued idle chunks, which kept the picture moving while it
was planned and made, so its words play next). A consumer that
plays idle frames between chunks passes the media time a chunk starts at, and the events then
carry that timeline's times: ``queued`` (the timeline's end when it was queued), ``started``
(its first sample), ``finished`` (the end of its speech), ``interrupted`` (the end of what was
delivered when the interrupt came).
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
from typing import Any

import numpy as np
import torch

from unison_stream.config import UnisonConfig
from unison_stream.engine.audio import Mixer, StreamResampler
from unison_stream.engine.planner import UtterancePlan
from unison_stream.engine.replica import Decoded
from unison_stream.engine.speech_frontend import FrontEndStream
from unison_stream.engine.types import EngineClosedError, MediaChunk, QueuedChunk, UtteranceEvent
from unison_stream.model.conditioning import Conditioning, TimedTrack
from unison_stream.model.generator import PlanSlice
from unison_stream.vocab import SILENCE_ID

__all__ = ["Job", "Planned", "SessionLog", "SpeechInput", "Stream", "Utterance"]

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


class Stream:
    """One session's stream (module docstring); thread-safe, every method non-blocking but
    :meth:`wait_chunk`."""

    def __init__(
        self,
        cfg: UnisonConfig,
        *,
        idle: Conditioning,
        listening: Conditioning,
        ref: torch.Tensor,
        silence: torch.Tensor,
        lead_policy: str,
        max_ahead: int,
        identity: int,
        caption: str,
        seed: int,
    ) -> None:
        self.session_id = f"s{next(_IDS)}"
        self.identity, self.caption, self.seed = identity, caption, seed
        self.log = SessionLog(log, {"session": self.session_id})
        self.cfg = cfg
        # what its chunks are planned from: (1, …) conditionings carrying the identity tokens
        self.idle, self.listening = idle, listening
        self.ref = ref  # (1, 1, C, h, w) identity reference latent frame (the sink)
        self.silence = silence  # (Ca,) the latent of silence (the sink's audio)
        self.lead_policy = lead_policy
        self.mixer = Mixer()  # worker only
        self.index = 0  # worker only: the row's next model chunk index (0 = its sink)
        self.lock = threading.Condition(threading.RLock())  # wait_chunk waits here
        self.chunk_s = cfg.chunk_seconds()  # media seconds of one chunk
        self._per_chunk = round(self.chunk_s * cfg.media.sample_rate)  # media samples
        self._queue: collections.deque[_Pending] = collections.deque()
        self._events: list[UtteranceEvent] = []
        self._utterances: collections.deque[Utterance] = collections.deque()
        self._current: Utterance | None = None
        self._state = "idle"
        self._epoch = 0
        self._say_epoch = 0
        self.needs_sink = True
        self.closed = False
        self._opened = time.perf_counter()
        self._stats = _Stats()
        self._ahead = max_ahead  # chunks the worker may make ahead of the consumer
        # what a chunk with nothing to say sees of the track: one silence token over it and
        # its margins — the world labels every pause "_" (an empty track is what only the
        # identity sink saw in training; idle chunks given one drifted into a faded, doubled
        # face)
        margin = cfg.model.track_window_s
        self._rest = TimedTrack((SILENCE_ID,), (-margin,), (self.chunk_s + margin,))
        self._room_at = time.monotonic()  # when the output queue last got room (rate figures)
        self._end_s = 0.0  # media time where the delivered timeline ends

    # ---- the session's side -------------------------------------------------------------
    def enqueue(self, utt: Utterance, *, interrupt: bool) -> None:
        with self.lock:
            if self.closed:
                raise EngineClosedError(f"session {self.session_id} is closed")
            if interrupt:
                self._interrupt_locked()
            full = self._full()
            self._say_epoch += 1
            self._utterances.append(utt)  # queued idle chunks play until its first chunk comes
            self._note_room(full)
            self._event(utt.utterance_id, "queued", self._end_s)

    def interrupt(self) -> None:
        """Stop the current utterance at the next chunk boundary and drop the queued ones."""
        with self.lock:
            self._interrupt_locked()

    def set_state(self, state: str) -> None:
        if state not in ("idle", "listening"):
            raise ValueError(f"state must be idle or listening, not {state!r}")
        with self.lock:
            self._state = state

    def set_ahead(self, chunks: int) -> None:
        with self.lock:
            full = self._full()
            self._ahead = max(1, chunks)
            self._note_room(full)

    def _full(self) -> bool:
        """The worker may make no more chunks ahead: ``_ahead`` are queued. Once a waiting
        utterance can be made, up to ``_ahead`` queued idle chunks do not count: they keep the
        picture moving until its first chunk is made (which drops them), and must not hold
        that chunk up. While it is still planned the rule is the usual one (no idle chunk
        beyond ``_ahead`` is made for a plan about to replace it)."""
        n = len(self._queue)
        if self._current is not None or (self._utterances and self._utterances[0].ready()):
            idle = sum(p.chunk.utterance_id is None for p in self._queue)
            n -= min(idle, self._ahead)
        return n >= self._ahead

    def _note_room(self, was_full: bool) -> None:
        """A full queue that has room now (the consumer took a chunk, chunks were dropped, or
        it may hold more): the worker may start from this moment, so a chunk's ``wanted``
        must not predate it (the buffer policy reads ``decoded − wanted`` as the engine's pace;
        a stale instant reads as a slow chunk and makes it prebuffer for nothing)."""
        if was_full and not self._full():
            self._room_at = time.monotonic()

    def _drop_idle(self) -> None:
        """Drop the queued idle chunks (counted as dropped): speech is next."""
        kept = [p for p in self._queue if p.chunk.utterance_id is not None]
        self._stats.dropped += len(self._queue) - len(kept)
        self._set_queue(kept)

    def _set_queue(self, kept: list[_Pending]) -> None:
        full = self._full()
        self._queue = collections.deque(kept)
        self._note_room(full)

    def wait_chunk(self, timeout: float | None) -> MediaChunk | None:
        """The next chunk, right after the previous one; None on timeout or once closed."""
        with self.lock:
            if not self.lock.wait_for(lambda: bool(self._queue) or self.closed, timeout):
                self._stats.underflows += 1
                return None
            return self._deliver(None) if self._queue else None

    def take_chunk(self, start_s: float | None) -> MediaChunk | None:
        with self.lock:
            return self._deliver(start_s) if self._queue else None

    def queued(self) -> list[QueuedChunk]:
        with self.lock:
            return [
                QueuedChunk(
                    p.chunk.utterance_id, p.chunk.times.get("decoded", 0.0), p.chunk.utterance_s
                )
                for p in self._queue
            ]

    def poll_events(self) -> list[UtteranceEvent]:
        with self.lock:
            out, self._events = self._events, []
            return out

    def stats(self) -> dict[str, float]:
        with self.lock:
            s = self._stats
            media = s.generated * self.chunk_s
            ms = sorted(s.chunk_ms)
            return {
                "rtf": media / s.compute_s if s.compute_s > 0 else 0.0,
                "buffer_ms": len(self._queue) * self.chunk_s * 1000,
                "ahead": float(self._ahead),
                "chunks": float(s.delivered),
                "generated": float(s.generated),
                "dropped": float(s.dropped),
                "underflows": float(s.underflows),
                "errors": float(s.errors),
                "chunk_ms_p50": ms[len(ms) // 2] if ms else 0.0,
                "media_s": s.delivered * self.chunk_s,
                "uptime_s": time.perf_counter() - self._opened,
            }

    def close(self) -> bool:
        """Mark closed (False when it already was); wakes :meth:`wait_chunk`."""
        with self.lock:
            if self.closed:
                return False
            self.closed = True
            self._queue.clear()
            for u in [self._current, *self._utterances]:
                if u is not None:
                    u.dropped = True
            self.lock.notify_all()
            return True

    def _deliver(self, start_s: float | None) -> MediaChunk:
        """Pop the oldest chunk onto the timeline at ``start_s`` (under the lock)."""
        full = self._full()
        p = self._queue.popleft()
        self._note_room(full)
        n = self._stats.delivered
        self._stats.delivered += 1
        start = self._end_s if start_s is None else start_s
        chunk = replace(p.chunk, index=n, start_s=start)
        self._end_s = start + self.chunk_s
        uid = chunk.utterance_id
        if uid is not None and p.first:
            self._event(uid, "started", start)
        if uid is not None and p.last:  # where its speech ends inside this chunk
            spoken = min(self.chunk_s, max(0.0, p.duration_s - p.k * self.chunk_s))
            self._event(uid, "finished", start + spoken)
        return chunk

    def _interrupt_locked(self) -> None:
        t = self._end_s
        dropped = [u for u in [self._current, *self._utterances] if u is not None]
        self._current = None
        self._utterances.clear()
        self._epoch += 1
        kept = [p for p in self._queue if p.chunk.utterance_id is None]
        self._stats.dropped += len(self._queue) - len(kept)
        self._set_queue(kept)
        for u in dropped:
            u.dropped = True
            self._event(u.utterance_id, "interrupted", t)
        if dropped:
            self.log.info("interrupted %s", ", ".join(u.utterance_id for u in dropped))

    def _event(self, uid: str, event: str, t: float) -> None:
        self._events.append(UtteranceEvent(uid, event, round(t, 6)))

    # ---- the worker's side --------------------------------------------------------------
    def wants_chunk(self) -> bool:
        with self.lock:
            return not self.closed and not self._full() and self.input_wait() is None

    def input_wait(self) -> float | None:
        """Seconds the current streamed utterance's next chunk may still be waited for (its
        audio is not here and not late yet); None when nothing waits."""
        with self.lock:
            u = self._current
            if u is None or u.speech_input is None or u.speech_input.makeable(u.chunks):
                return None
            grace = self.cfg.stream.input_grace_s
            left = u.speech_input.due(u.chunks, grace, self.chunk_s) - time.monotonic()
            return left if left > 0 else None

    def next_job(self) -> Job:
        """What to make next."""
        with self.lock:
            if self.needs_sink:
                return Job("sink", self._state, self._epoch, self._say_epoch)
            if self._current is None and self._utterances and self._utterances[0].ready():
                utt = self._utterances.popleft()
                if utt.plan is not None and utt.plan.exception() is not None:
                    self.log.error("planning %s failed: %s", utt.utterance_id, utt.plan.exception())
                    self._event(utt.utterance_id, "failed", self._end_s)
                    return self.next_job()
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
                job.last = utt.chunks + 1 >= self._utterance_chunks(utt)
            utt.chunks += 1
            if job.last:
                self._current = None
            return job

    def plan_slice(self, job: Job) -> PlanSlice:
        """Batch-1 plan slice of ``job`` (track times relative to the chunk)."""
        cfg = self.cfg
        fc = cfg.stream.chunk_latent_frames
        nc = cfg.audio_frames_per_chunk()
        base = self.listening if job.state == "listening" else self.idle
        margin = cfg.model.track_window_s
        if job.kind == "sink":  # identity held clean, silence: costs one commit pass
            silence = self.silence.expand(1, cfg.audio_streams(), nc, -1)
            return PlanSlice(
                base.with_tracks([TimedTrack()]),
                clean_video=self.ref.expand(1, fc, -1, -1, -1),
                clean_audio=silence,
            )
        u = job.utterance
        if u is None:  # idle or listening: a rest, as the world labels its rests
            return PlanSlice(base.with_tracks([self._rest]), lead="none", lead_steps=0)
        if u.speech_latents is not None:  # audio-driven: speech held clean, SFX + motion made
            a = torch.zeros(1, cfg.audio_streams(), nc, cfg.latent.audio_channels)
            a[0, 0] = torch.from_numpy(u.speech_latents[job.k * nc : (job.k + 1) * nc])
            mask = (True, False) if cfg.audio_streams() == 2 else (True,)
            track = u.speech_input.track if u.speech_input is not None else u.track
            window = self._rest
            if track:  # the front end's reading of the speech, as text mode's plan
                window = track.window(job.k * self.chunk_s, (job.k + 1) * self.chunk_s, margin)
            return PlanSlice(base.with_tracks([window]), clean_audio=a, clean_audio_mask=mask)
        assert u.plan is not None
        planned = u.plan.result()
        p = planned.plan
        if planned.caption is not None:  # this utterance's own caption
            base = with_identity(planned.caption, self.idle.identity)
        base = replace(base, transcript_pooled=planned.transcript_pooled)
        window = p.window(job.k, self.chunk_s, margin)
        lead, steps = p.lead(job.k, self.chunk_s, self.lead_policy, cfg.sampler.lead_steps)
        return PlanSlice(base.with_tracks([window]), lead=lead, lead_steps=steps)

    def media(self, job: Job, d: Decoded) -> MediaChunk:
        """The replica's decoded chunk, mixed (audio-driven: the caller's speech, untouched)."""
        u = job.utterance
        speech = d.speech
        if u is not None and u.speech_pcm is not None:
            n = self._per_chunk
            speech = u.speech_pcm[job.k * n : (job.k + 1) * n].copy()
        return MediaChunk(
            index=-1,  # numbered on delivery
            start_s=0.0,
            video=d.video,
            audio=self.mixer.mix(speech, d.sfx),
            speech=speech,
            sfx=d.sfx,
            utterance_id=u.utterance_id if u is not None else None,
            state=job.state,
            times={
                **({"queued": u.queued_at, "planned": u.planned_at()} if u is not None else {}),
                "generated": d.generated_at,
                "decoded": d.decoded_at,
            },
            utterance_s=self._utterance_seconds(u) if u is not None else 0.0,
        )

    def push(self, job: Job, chunk: MediaChunk, compute_s: float) -> None:
        """Hand a made chunk over; stale chunks are dropped."""
        with self.lock:
            self.index += 1
            s = self._stats
            s.generated += 1
            s.compute_s += compute_s
            s.chunk_ms.append(compute_s * 1000)
            if self.closed or self.stale(job):
                s.dropped += 1
                return
            first = job.kind == "utterance" and job.k == 0
            if first:  # idle chunks made while it was planned would play before its words
                self._drop_idle()
            dur = 0.0
            if job.utterance is not None and job.last:
                dur = self._utterance_seconds(job.utterance)
            chunk.times["wanted"] = self._wanted(job)
            self._queue.append(_Pending(chunk, first, job.last, dur, job.k))
            if not self._full():
                self._room_at = time.monotonic()
            self.lock.notify_all()

    def _wanted(self, job: Job) -> float:
        """Since when the worker could have made ``job``'s chunk: the queue had room, and its
        utterance was planned (or its streamed speech for it had come at real-time pace) — so
        ``decoded − wanted`` is what making it took, not the wait for a plan or for input."""
        t = self._room_at
        u = job.utterance
        if u is None:
            return t
        inp = u.speech_input
        if inp is not None:
            anchor = inp.anchor if inp.anchor is not None else t
            return max(t, anchor + (job.k + inp.slips) * self.chunk_s)
        return max(t, u.planned_at())

    def sunk(self) -> None:
        """The sink chunk was committed: the row holds the identity."""
        with self.lock:
            self.index += 1
            self.needs_sink = False

    def resink(self) -> None:
        """The row is empty (a failed step, a restarted replica): start again from identity."""
        with self.lock:
            self.needs_sink = True
            self.index = 0
            self.mixer.reset()

    def has_pending(self) -> bool:
        """An utterance is being made or waits to be."""
        with self.lock:
            return self._current is not None or bool(self._utterances)

    def stale(self, job: Job, *, cancel: bool = False) -> bool:
        """A chunk of ``job`` would be dropped on delivery: its utterance was interrupted. With
        ``cancel``, also an idle job begun before a ``say`` whose utterance is now planned: the
        chunk being made is then worth abandoning (the next one can be the utterance). Made
        anyway, such an idle chunk is kept: it plays until the utterance's first chunk comes."""
        with self.lock:
            if self.closed:
                return True
            if job.kind == "utterance":
                return job.epoch != self._epoch
            if job.kind != "idle" or job.say_epoch == self._say_epoch or not cancel:
                return False
            return self._current is not None or bool(
                self._utterances and self._utterances[0].ready()
            )

    def fail(self, job: Job, error: BaseException) -> None:
        """A chunk could not be made: drop its utterance, go idle, re-sink."""
        with self.lock:
            self._stats.errors += 1
            self.resink()  # the cache may hold half a chunk: start again from identity
            if job.utterance is not None and job.epoch == self._epoch:
                uid = job.utterance.utterance_id
                if self._current is job.utterance:
                    self._current = None
                self._event(uid, "failed", self._end_s)
            self.log.error("chunk failed (%s: %s); back to idle", type(error).__name__, error)

    def _utterance_chunks(self, u: Utterance) -> int:
        if u.speech_pcm is not None:
            return round(u.speech_pcm.size / self._per_chunk)
        assert u.plan is not None
        return u.plan.result().plan.num_chunks(self.chunk_s)

    def _utterance_seconds(self, u: Utterance) -> float:
        rate = self.cfg.media.sample_rate
        if u.speech_input is not None:  # streamed: the speech written, not its padding
            return u.speech_input.samples / rate
        if u.speech_pcm is not None:
            return u.speech_pcm.size / rate
        assert u.plan is not None
        return u.plan.result().plan.duration_s


def with_identity(c: Conditioning, identity: torch.Tensor) -> Conditioning:
    """``c`` with its identity tokens replaced."""
    return Conditioning(**{**vars(c), "identity": identity})
