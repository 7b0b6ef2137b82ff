"""A deterministic stand-in engine that honours the engine contract (``engine_api.py``).

Speech is a 440 Hz tone (audible, easy to detect), silence is zeros; video is a grey frame
with a moving marker, a bright "mouth" bar while speaking and a blue tint while listening. A
virtual worker makes chunks at ``speed`` × real time, at most ``ahead`` ahead of the consumer,
and a chunk's content is drawn when it is taken (no thread). Faults can be injected:
``fail_next`` makes the next ``take_chunk`` calls raise, ``delay_s`` slows each chunk.
Used by the server tests, ``bench serve --engine fake`` and ``serve --engine fake`` (UI work
without a model).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from unison_stream.config import StreamConfig
from unison_stream.errors import EngineFullError

__all__ = ["FakeChunk", "FakeEngine", "FakeEngineSession", "FakeEvent", "FakeQueued"]

TONE_HZ = 440.0
SECONDS_PER_CHAR = 0.05  # speech duration of one character of text
MIN_UTTERANCE_S = 0.3


@dataclass
class FakeChunk:
    index: int
    start_s: float
    video: np.ndarray  # (F, H, W, 3) uint8
    audio: np.ndarray  # (S,) float32
    speech: np.ndarray | None = None
    sfx: np.ndarray | None = None
    utterance_id: str | None = None
    state: str = "idle"
    times: dict[str, float] = field(default_factory=dict)
    utterance_s: float = 0.0


@dataclass(frozen=True)
class FakeQueued:
    utterance_id: str | None
    made_at: float
    utterance_s: float


@dataclass
class FakeEvent:
    utterance_id: str
    event: str
    media_time_s: float


@dataclass
class _Utterance:
    uid: str
    samples: int  # speech length at the model rate
    done: int = 0
    queued_at: float = field(default_factory=time.monotonic)
    open: bool = False  # a streamed utterance still being written: speaks what has arrived
    dropped: bool = False


GRACE = StreamConfig.input_grace_s  # as the engine waits for streamed speech


class FakeSpeechWriter:
    """The fake's streamed audio input: samples arrive, the tone speaks as many."""

    def __init__(self, session: FakeEngineSession, u: _Utterance, rate: int) -> None:
        self._session, self._u, self._rate = session, u, rate

    @property
    def dropped(self) -> bool:
        return self._u.dropped

    def write(self, pcm: np.ndarray) -> None:
        with self._session._lock:
            if self._u.open:
                self._u.samples += round(len(pcm) * self._session._engine.sample_rate / self._rate)

    def end(self) -> None:
        with self._session._lock:
            self._u.open = False
            self._u.samples = max(self._u.samples, 1)


class FakeEngineSession:
    """Thread-safe, non-blocking but ``next_chunk``. A virtual worker makes one chunk per
    ``chunk_s / speed`` (+ ``delay_s``) while fewer than ``ahead`` are waiting; a chunk's
    content is drawn when it is taken."""

    _ids = itertools.count()

    def __init__(self, engine: FakeEngine, *, identity: int) -> None:
        self.session_id = f"fake-{next(self._ids)}"
        self._engine = engine
        self._lock = threading.Lock()
        self._queue: deque[_Utterance] = deque()
        self._events: list[FakeEvent] = []
        self._state = "idle"
        self._index = 0
        self._end_s = 0.0  # media time where the delivered timeline ends
        self._closed = False
        self._identity = identity
        self._ahead = 2
        self._made: deque[float] = deque()  # when each chunk made and not taken was done
        self._free_at = self._room_at = time.monotonic()  # the virtual worker's clock
        self.fail_next = 0  # fault injection: this many take_chunk calls raise RuntimeError
        self.delay_s = 0.0  # fault injection: extra compute time per chunk
        self.chunks_made = 0

    # -- control (non-blocking) --
    def say(
        self, text: str, *, utterance_id: str, caption: str | None = None, interrupt: bool = False
    ) -> None:
        if not text.strip():
            raise ValueError("text is empty")
        if interrupt:
            self.interrupt()
        rate = self._engine.sample_rate
        n = int(max(MIN_UTTERANCE_S, SECONDS_PER_CHAR * len(text)) * rate)
        with self._lock:
            self._queue.append(_Utterance(utterance_id, n))
            self._events.append(FakeEvent(utterance_id, "queued", self._end_s))

    def say_audio(self, pcm: np.ndarray, sample_rate: int, *, utterance_id: str) -> None:
        n = int(len(pcm) / sample_rate * self._engine.sample_rate)
        with self._lock:
            self._queue.append(_Utterance(utterance_id, max(n, 1)))
            self._events.append(FakeEvent(utterance_id, "queued", self._end_s))

    def say_audio_stream(
        self, sample_rate: int, *, utterance_id: str, interrupt: bool = False
    ) -> FakeSpeechWriter:
        if interrupt:
            self.interrupt()
        u = _Utterance(utterance_id, 0, open=True)
        with self._lock:
            self._queue.append(u)
            self._events.append(FakeEvent(utterance_id, "queued", self._end_s))
        return FakeSpeechWriter(self, u, sample_rate)

    def interrupt(self) -> None:
        with self._lock:
            for u in self._queue:
                u.dropped, u.open = True, False
                self._events.append(FakeEvent(u.uid, "interrupted", self._end_s))
            self._queue.clear()

    def set_state(self, state: str) -> None:
        if state not in ("idle", "listening"):
            raise ValueError(f"state must be idle or listening, got {state!r}")
        with self._lock:
            self._state = state

    def set_ahead(self, chunks: int) -> None:
        with self._lock:
            self._produce(time.monotonic())
            self._ahead = max(1, chunks)

    def poll_events(self) -> list[FakeEvent]:
        with self._lock:
            out, self._events = self._events, []
        return out

    def stats(self) -> dict[str, float]:
        return {"rtf": 1.0 / self._engine.speed, "chunks": float(self.chunks_made)}

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._engine._release(self)

    # -- output --
    def _produce(self, now: float) -> None:
        """Advance the virtual worker to ``now`` (under the lock); a compute-bound engine's
        worker thread makes the chunks instead."""
        e = self._engine
        while e.cpu_s == 0 and len(self._made) < self._ahead:
            done = max(self._free_at, self._room_at) + e.chunk_s / e.speed + self.delay_s
            if done > now:
                return
            self._made.append(done)
            self._free_at = done

    def queued(self) -> list[FakeQueued]:
        """The chunks made and not taken (each drawn from the utterance at the queue's head)."""
        with self._lock:
            self._produce(time.monotonic())
            u = self._queue[0] if self._queue else None
            uid = u.uid if u is not None else None
            dur = u.samples / self._engine.sample_rate if u is not None else 0.0
            return [FakeQueued(uid, t, dur) for t in self._made]

    def next_chunk(self, timeout: float | None = None) -> FakeChunk | None:
        """Wait up to ``timeout`` for :meth:`take_chunk`."""
        end = time.monotonic() + (timeout if timeout is not None else 1e9)
        while not self._closed:
            if (c := self.take_chunk()) is not None or time.monotonic() >= end:
                return c
            time.sleep(0.005)
        return None

    def take_chunk(self, start_s: float | None = None) -> FakeChunk | None:
        e = self._engine
        with self._lock:
            if self._closed:
                return None
            if self.fail_next > 0:
                self.fail_next -= 1
                raise RuntimeError("injected model failure")
            now = time.monotonic()
            self._produce(now)
            if not self._made:
                return None
            u = self._queue[0] if self._queue else None
            if u is not None and u.open and u.done >= u.samples and now < self._made[0] + GRACE:
                return None  # like the engine: a streamed chunk waits for its speech
            if len(self._made) >= self._ahead:
                self._room_at = now
            made = self._made.popleft()
            start = self._end_s if start_s is None else start_s
            chunk = self._draw(start, made)
            self._end_s = start + e.chunk_s
        return chunk

    def _draw(self, start: float, made: float) -> FakeChunk:
        """The content of a chunk taken now, at media time ``start`` (under the lock)."""
        e = self._engine
        f, s = e.frames_per_chunk, e.samples_per_chunk
        audio = np.zeros(s, np.float32)
        speaking = np.zeros(f, bool)
        uid: str | None = None
        utterance_s = 0.0
        wanted = made - (e.cpu_s or e.chunk_s / e.speed + self.delay_s)
        times = {"wanted": wanted, "generated": made, "decoded": made}
        pos = 0
        while pos < s and self._queue:
            u = self._queue[0]
            if u.open and u.done >= u.samples:
                break  # a streamed utterance waiting for its next samples
            if uid is None:  # the chunk's first utterance: its hops (no planning here)
                times.update(queued=u.queued_at, planned=u.queued_at)
                utterance_s = u.samples / e.sample_rate
            if u.done == 0:
                self._events.append(FakeEvent(u.uid, "started", start + pos / e.sample_rate))
            take = min(s - pos, u.samples - u.done)
            t = (u.done + np.arange(take)) / e.sample_rate
            audio[pos : pos + take] = 0.5 * np.sin(2 * np.pi * TONE_HZ * t)
            speaking[pos * f // s : (pos + take + s // f - 1) * f // s] = True
            u.done += take
            pos += take
            uid = u.uid
            if u.done >= u.samples and not u.open:
                self._events.append(FakeEvent(u.uid, "finished", start + pos / e.sample_rate))
                self._queue.popleft()
        state = "speaking" if uid is not None else self._state
        index = self._index
        self._index += 1
        self.chunks_made += 1
        video = np.full((f, e.height, e.width, 3), 96 + 8 * (self._identity % 8), np.uint8)
        if state == "listening":
            video[..., 2] = 200
        for i in range(f):  # a marker that moves one column per frame: motion is visible
            col = (index * f + i) % e.width
            video[i, :, col] = 255
            if speaking[i]:
                h, w = e.height, e.width
                video[i, 2 * h // 3 : 2 * h // 3 + max(2, h // 16), w // 4 : 3 * w // 4] = 250
        return FakeChunk(
            index, start, video, audio, audio.copy(), None, uid, state, times, utterance_s
        )


class FakeEngine:
    """Engine contract with no model; ``speed`` is how many times faster than real time."""

    def __init__(
        self,
        *,
        fps: float = 25.0,
        width: int = 128,
        height: int = 128,
        sample_rate: int = 16000,
        chunk_s: float = 0.32,
        max_sessions: int = 4,
        speed: float = 4.0,
        cpu_s: float = 0.0,
    ) -> None:
        self.fps, self.width, self.height, self.sample_rate = fps, width, height, sample_rate
        self.chunk_s, self.speed, self.max_sessions = chunk_s, speed, max_sessions
        # compute-bound mode (cpu_s > 0): one worker thread spends cpu_s of its own CPU time
        # on each chunk, round robin over the sessions with room (bench cluster's throughput)
        self.cpu_s = cpu_s
        self.chunks_made = 0
        self.frames_per_chunk = round(chunk_s * fps)
        self.samples_per_chunk = round(chunk_s * sample_rate)
        self._open: set[FakeEngineSession] = set()
        self._lock = threading.Lock()
        self.opened: list[FakeEngineSession] = []  # every session ever opened (tests inspect)
        self._stop = threading.Event()
        if cpu_s > 0:
            threading.Thread(target=self._work, name="fake-engine-worker", daemon=True).start()

    def _work(self) -> None:
        turn = 0
        while not self._stop.is_set():
            with self._lock:
                ready = [s for s in self.opened if not s._closed and len(s._made) < s._ahead]
            if not ready:
                time.sleep(0.005)
                continue
            s = ready[turn % len(ready)]
            turn += 1
            end = time.thread_time() + self.cpu_s
            while time.thread_time() < end:  # pure Python: holds the GIL, one core
                pass
            with s._lock:
                s._made.append(time.monotonic())
            self.chunks_made += 1

    @property
    def sessions(self) -> int:
        return len(self._open)

    def open_session(
        self, *, identity: int = 0, caption: str = "", seed: int = 0
    ) -> FakeEngineSession:
        with self._lock:
            if len(self._open) >= self.max_sessions:
                raise EngineFullError(f"engine at capacity ({self.max_sessions} sessions)")
            s = FakeEngineSession(self, identity=identity)
            self._open.add(s)
            self.opened.append(s)
        return s

    def _release(self, s: FakeEngineSession) -> None:
        with self._lock:
            self._open.discard(s)

    def close(self) -> None:
        self._stop.set()
        for s in list(self._open):
            s.close()
