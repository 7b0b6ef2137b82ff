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

The output queue is the stream's only buffer, and the stream decides when its next reply may
start playing (:mod:`~unison_stream.engine.readiness`): a media clock asks for the next chunk
at each chunk boundary (:meth:`Stream.next_media`) and gets one, a held reply, or nothing.
Chunks are placed on the timeline when *delivered*, so it stays contiguous when chunks made
ahead are dropped (an interrupt drops its utterance's chunks; a reply's first chunk drops the
idle ones that kept the picture moving meanwhile). Events carry that timeline's times:
``queued`` (its end then), ``started`` (the first sample), ``finished`` (the end of the
speech), ``interrupted`` (the end of what was delivered).
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from dataclasses import replace

import torch

from unison_stream.config import UnisonConfig
from unison_stream.engine.audio import Mixer
from unison_stream.engine.readiness import Readiness
from unison_stream.engine.replica import Decoded
from unison_stream.engine.types import EngineClosedError, Held, MediaChunk, UtteranceEvent
from unison_stream.engine.utterance import (
    Job,
    Pending,
    SessionLog,
    StreamStats,
    Utterance,
    with_identity,
)
from unison_stream.model.conditioning import Conditioning, TimedTrack
from unison_stream.model.generator import PlanSlice
from unison_stream.vocab import SILENCE_ID

__all__ = ["Stream"]

log = logging.getLogger(__name__)
_IDS = itertools.count(1)


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
        hold: bool = False,
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
        self._queue: collections.deque[Pending] = collections.deque()
        self._events: list[UtteranceEvent] = []
        self._utterances: collections.deque[Utterance] = collections.deque()
        self._current: Utterance | None = None
        self._state = "idle"
        self._epoch = 0
        self._say_epoch = 0
        self.needs_sink = True
        # nothing past the sink until the first utterance can be made (or a state is set):
        # an offline caller gets the same chunks on every run, not as many idle chunks before
        # the utterance as the planner's speed let the worker make
        self._hold = hold
        self.closed = False
        self._opened = time.perf_counter()
        self._stats = StreamStats()
        # when the next utterance may start, and how far ahead the worker may make chunks
        self.readiness = Readiness(self.chunk_s, 1.0 / cfg.media.fps, ahead=max_ahead)
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
            self._state, self._hold = state, False

    def set_buffer(self, *, ahead_s: float, max_prebuffer_s: float) -> None:
        with self.lock:
            full = self._full()
            self.readiness.configure(ahead_s=ahead_s, max_prebuffer_s=max_prebuffer_s)
            self._note_room(full)

    def _full(self) -> bool:
        """The worker may make no more chunks ahead: ``ahead`` are queued. Once a waiting
        utterance can be made, up to ``ahead`` queued idle chunks do not count: they keep the
        picture moving until its first chunk is made (which drops them), and must not hold
        that chunk up. While it is still planned the rule is the usual one (no idle chunk
        beyond ``ahead`` is made for a plan about to replace it)."""
        ahead = self.readiness.ahead
        n = len(self._queue)
        if self._speech_next():
            idle = sum(p.chunk.utterance_id is None for p in self._queue)
            n -= min(idle, ahead)
        return n >= ahead

    def _speech_next(self) -> bool:
        """An utterance is being made, or the next one can be."""
        return self._current is not None or bool(self._utterances and self._utterances[0].ready())

    def _note_room(self, was_full: bool) -> None:
        """A full queue has room now: the worker may start from this moment, so the chunk it
        makes is measured from here (a stale instant reads as a slow chunk, and the buffer
        policy would make a reply wait for nothing)."""
        if was_full and not self._full():
            self._room_at = time.monotonic()

    def _drop_idle(self) -> None:
        """Drop the queued idle chunks (counted as dropped): speech is next."""
        kept = [p for p in self._queue if p.chunk.utterance_id is not None]
        self._stats.dropped += len(self._queue) - len(kept)
        self._set_queue(kept)

    def _set_queue(self, kept: list[Pending]) -> None:
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

    def next_media(
        self, start_s: float, *, over_idle: bool
    ) -> tuple[MediaChunk | Held | None, bool]:
        """The chunk to play from ``start_s`` if one is ready (``over_idle``: an idle chunk
        plays, only a reply's chunk may cut it); :class:`Held`: a reply's first chunk waits to
        play through; None: nothing to play. The flag: wake the worker (room was made)."""
        with self.lock:
            if not self._queue:
                return None, False
            head = self._queue[0]
            uid = head.chunk.utterance_id
            if uid is None and over_idle:
                return None, False
            if uid is None or not head.first:
                return self._deliver(start_s), True
            made = next(
                (i for i, p in enumerate(self._queue) if p.chunk.utterance_id != uid),
                len(self._queue),
            )
            full, ahead = self._full(), self.readiness.ahead
            held = self.readiness.may_start(
                uid,
                utterance_s=head.duration_s,
                made_at=head.made_at,
                made=made,
                queued=len(self._queue),
                now=time.monotonic(),
            )
            self._note_room(full)
            if held is not None:
                return held, self.readiness.ahead != ahead
            return self._deliver(start_s), True

    def queued(self) -> list[str | None]:
        """The utterance ids of the chunks made and not yet taken (None: idle), oldest first."""
        with self.lock:
            return [p.chunk.utterance_id for p in self._queue]

    def describe(self) -> str:
        """One line of the stream's state, for an error that says why no chunk came."""
        with self.lock:
            cur = self._current
            return (
                f"session {self.session_id}: queue {self.queued()}, ahead {self.readiness.ahead}, "
                f"current {cur and (cur.utterance_id, cur.chunks)}, pending "
                f"{[(u.utterance_id, u.ready()) for u in self._utterances]}, made "
                f"{self._stats.generated}, taken {self._stats.delivered}, sink {self.needs_sink}, "
                f"wants a chunk {self.wants_chunk()}, closed {self.closed}"
            )

    def poll_events(self) -> list[UtteranceEvent]:
        with self.lock:
            out, self._events = self._events, []
            return out

    def stats(self) -> dict[str, float]:
        with self.lock:
            up = time.perf_counter() - self._opened
            return self._stats.figures(self.chunk_s, len(self._queue), self.readiness.ahead, up)

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
        self.readiness.taken(p.took_s, idle=p.chunk.utterance_id is None)
        self._note_room(full)
        n = self._stats.delivered
        self._stats.delivered += 1
        start = self._end_s if start_s is None else start_s
        chunk = replace(p.chunk, index=n, start_s=start)
        self._end_s = start + self.chunk_s
        uid = chunk.utterance_id
        if uid is not None and p.first:
            self._event(uid, "started", start, p.effects)
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

    def _event(
        self, uid: str, event: str, t: float, effects: tuple[tuple[str, float], ...] = ()
    ) -> None:
        self._events.append(UtteranceEvent(uid, event, round(t, 6), effects))

    # ---- the worker's side --------------------------------------------------------------
    def wants_chunk(self) -> bool:
        with self.lock:
            held = self._hold and not self.needs_sink and not self._speech_next()
            return not self.closed and not held and not self._full() and self.input_wait() is None

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
                utt, self._hold = self._utterances.popleft(), False  # a held stream goes on
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
                job.last = utt.chunks + 1 >= utt.num_chunks(self.chunk_s, self._per_chunk)
            utt.chunks += 1
            if job.last:
                self._current = None
            return job

    def plan_slice(self, job: Job) -> PlanSlice:
        """Batch-1 plan slice of ``job`` (track times relative to the chunk); the window of
        the track it sees is kept as ``job.track`` (the batch is built from it)."""
        cfg = self.cfg
        fc = cfg.stream.chunk_latent_frames
        nc = cfg.audio_frames_per_chunk()
        base = self.listening if job.state == "listening" else self.idle
        margin = cfg.model.track_window_s
        if job.kind == "sink":  # identity held clean, silence: costs one commit pass
            silence = self.silence.expand(1, cfg.audio_streams(), nc, -1)
            return PlanSlice(
                base.with_tracks([job.track]),
                clean_video=self.ref.expand(1, fc, -1, -1, -1),
                clean_audio=silence,
            )
        u = job.utterance
        if u is None:  # idle or listening: a rest, as the world labels its rests
            job.track = self._rest
            return PlanSlice(base.with_tracks([job.track]), lead="none", lead_steps=0)
        if u.speech_latents is not None:  # audio-driven: speech held clean, SFX + motion made
            a = torch.zeros(1, cfg.audio_streams(), nc, cfg.latent.audio_channels)
            a[0, 0] = torch.from_numpy(u.speech_latents[job.k * nc : (job.k + 1) * nc])
            mask = (True, False) if cfg.audio_streams() == 2 else (True,)
            track = u.speech_input.track if u.speech_input is not None else u.track
            window = self._rest
            if track:  # the front end's reading of the speech, as text mode's plan
                window = track.window(job.k * self.chunk_s, (job.k + 1) * self.chunk_s, margin)
            job.track = window
            return PlanSlice(base.with_tracks([window]), clean_audio=a, clean_audio_mask=mask)
        assert u.plan is not None
        planned = u.plan.result()
        p = planned.plan
        if planned.caption is not None:  # this utterance's own caption
            base = with_identity(planned.caption, self.idle.identity)
        base = replace(base, transcript_pooled=planned.transcript_pooled)
        window = p.window(job.k, self.chunk_s, margin)
        lead, steps = p.lead(job.k, self.chunk_s, self.lead_policy, cfg.sampler.lead_steps)
        job.track = window
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
            u = job.utterance
            dur = u.seconds(self.cfg.media.sample_rate) if u is not None else 0.0
            made = chunk.times["decoded"]
            took = made - self._wanted(job)
            effects = u.plan.result().plan.contacts if first and u and u.plan else ()
            self._queue.append(Pending(chunk, first, job.last, dur, job.k, made, took, effects))
            if not self._full():
                self._room_at = time.monotonic()
            self.lock.notify_all()

    def _wanted(self, job: Job) -> float:
        """Since when the worker could have made ``job``'s chunk: the queue had room, and its
        utterance was planned (or its streamed speech for it had come at real-time pace) — so
        ``decoded − wanted`` is what making it took (the buffer policy's measure of the
        stream's production), not the wait for a plan or for input."""
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
            return self._speech_next()

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
