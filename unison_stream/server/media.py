"""One media clock per session, the thread that feeds it, and the aiortc tracks it paces.

DESIGN.md §4: video at 25 fps on a 90 kHz clock (pts step 3600), audio as 48 kHz ``s16`` mono
frames of 960 samples (pts = sample index). Both tracks read one timeline of *slots* (one video
frame + the audio of the same 1/fps span), so an underrun never moves audio against video:
when no decoded media is buffered, the clock materialises an idle slot (last frame repeated,
silence) and counts it. ``recv()`` only sleeps until its pts is due and reads the timeline; it
never waits on the model. Generation stays off the event loop: :class:`ChunkPuller` blocks in
``EngineSession.next_chunk`` on its own thread and pushes into the clock's bounded buffer.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame

from unison_stream.server.engine_api import ChunkLike, EngineSessionLike

__all__ = [
    "AUDIO_FRAME_SAMPLES",
    "AUDIO_RATE",
    "HOPS",
    "VIDEO_CLOCK_RATE",
    "ChunkPuller",
    "ClockAudioTrack",
    "ClockVideoTrack",
    "MediaClock",
    "Playout",
    "Slot",
    "Upsampler",
]

log = logging.getLogger(__name__)

VIDEO_CLOCK_RATE = 90_000  # RTP video clock (Hz)
AUDIO_RATE = 48_000  # Opus clock (Hz)
AUDIO_FRAME_SAMPLES = 960  # 20 ms at 48 kHz
IDLE_GREY = 96  # value of the placeholder frame shown before the first decoded frame
KEEP_SLOTS = 64  # materialised slots kept behind the newest one (late reads of the other track)


class Upsampler:
    """Stateful resampler from the model rate to 48 kHz, continuous across chunk boundaries.

    Integer factors (16 kHz → ×3) use a windowed-sinc polyphase FIR (group delay ≈ 0.5 ms,
    not compensated); other ratios fall back to linear interpolation.
    """

    def __init__(self, in_rate: int, out_rate: int = AUDIO_RATE, *, taps_per_phase: int = 16):
        self.in_rate, self.out_rate = in_rate, out_rate
        self.factor = out_rate // in_rate if out_rate % in_rate == 0 else 0
        self._last = 0.0
        if self.factor:
            n = self.factor * taps_per_phase
            t = np.arange(-n, n + 1) / self.factor
            self._h = (np.sinc(t) * np.hamming(len(t))).astype(np.float32)  # cutoff in_rate/2
            self._hist = np.zeros(len(self._h) - 1, np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if self.factor == 1:
            return x.copy()
        if self.factor:
            up = np.zeros(len(x) * self.factor, np.float32)  # (S·L,) zero-stuffed
            up[:: self.factor] = x
            buf = np.concatenate([self._hist, up])
            y = np.convolve(buf, self._h, mode="valid").astype(np.float32)
            self._hist = buf[len(buf) - len(self._hist) :]
            return y
        n_out = round(len(x) * self.out_rate / self.in_rate)
        src = np.concatenate([[self._last], x])
        pos = np.arange(1, n_out + 1) * (len(x) / n_out)
        self._last = float(x[-1]) if len(x) else self._last
        return np.interp(pos, np.arange(len(src)), src).astype(np.float32)


@dataclass
class Slot:
    """One 1/fps span of output: a frame, its 48 kHz audio, and where it came from."""

    frame: np.ndarray  # (H, W, 3) uint8
    audio: np.ndarray  # (48000 / fps,) float32
    media_s: float | None  # engine media time of the frame; None for an idle (underrun) slot
    utterance_id: str | None = None
    state: str = "idle"
    times: dict[str, float] | None = None  # first slot of a chunk: its hops (ChunkLike.times)
    utterance_s: float = 0.0  # planned length of the slot's utterance
    arrived: float = 0.0  # when its chunk reached the clock (the clock's ``now``)


# hops of an utterance's first chunk, in order (time.monotonic instants; docs/server.md)
HOPS: tuple[str, ...] = ("queued", "planned", "generated", "decoded", "in_clock", "played")
KEEP_TRACES = 32  # utterances whose first-slot hops are kept for the started event
RATE_WINDOW = 12  # chunk arrivals the production rate and its jitter are measured over


class MediaClock:
    """A session's output timeline. Thread side: :meth:`push`. Loop side: everything else."""

    def __init__(
        self,
        *,
        fps: float,
        width: int,
        height: int,
        sample_rate: int,
        buffer_s: float,
        max_prebuffer_s: float = 4.0,
        label: str = "",
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        spf = AUDIO_RATE / fps
        assert spf == int(spf), f"48 kHz / fps must be a whole number of samples, got {spf}"
        self.fps, self.width, self.height, self.label = fps, width, height, label
        self.samples_per_slot = int(spf)
        self.base_pending = self.max_pending = max(1, round(buffer_s * fps))
        self.max_prebuffer_s = max_prebuffer_s
        # chunk arrivals: (seconds the puller waited for the chunk, media seconds it holds)
        self._arrivals: deque[tuple[float, float]] = deque(maxlen=RATE_WINDOW)
        self._now = now  # the clock the production rate is measured on (tests inject one)
        self._last_push = now()
        self.prebuffer_slots = 0  # idle slots served while an utterance filled its prebuffer
        self.idle_dropped = 0  # buffered idle slots skipped when speech arrived behind them
        self.wait_s = 0.0  # how long an utterance's first chunk waits (buffer policy)
        self._upsample = Upsampler(sample_rate)
        self._cond = threading.Condition()
        self._pending: deque[Slot] = deque()  # decoded, not yet on the timeline
        self._timeline: dict[int, Slot] = {}
        self._next = 0  # next slot index to materialise
        self._last_frame = np.full((height, width, 3), IDLE_GREY, np.uint8)
        self._closed = False
        self._flushes = 0  # flush() count: speech waiting in push() across one is dropped
        self.started = False  # a decoded chunk has arrived
        self.underruns = 0  # idle slots served after the first chunk because nothing was ready
        # idle slots inside an utterance (between two of its slots): silence cut into speech
        self.speech_underruns = 0
        self._gap = 0  # idle slots since the last real slot, while it belonged to an utterance
        self.slots_served = 0
        self.chunks_in = 0
        self.flushed_slots = 0
        self.state = "idle"
        self.utterance_id: str | None = None
        self.played_media_s = -1.0  # engine media time reached by playout (end of last slot)
        self.traces: dict[str, dict[str, float]] = {}  # utterance id → hops of its first slot
        # utterance id → (index, time.time()) of its first slot: where a client finds it
        self.first_slots: dict[str, tuple[int, float]] = {}

    # ---- thread side ------------------------------------------------------------------------
    def push(self, chunk: ChunkLike) -> bool:
        """Split a decoded chunk into slots and buffer them; block while the buffer is full.

        Returns False once the clock is closed. Called from the puller thread only.
        """
        video = np.asarray(chunk.video)
        f = video.shape[0]  # (F, H, W, 3)
        audio = self._upsample(np.asarray(chunk.audio, np.float32))  # (S·48k/rate,)
        need = f * self.samples_per_slot
        if len(audio) < need:
            audio = np.pad(audio, (0, need - len(audio)))
        arrived = self._now()
        times = {**chunk.times, "in_clock": time.monotonic()}
        slots = [
            Slot(
                frame=video[i],
                audio=audio[i * self.samples_per_slot : (i + 1) * self.samples_per_slot],
                media_s=chunk.start_s + i / self.fps,
                utterance_id=chunk.utterance_id,
                state=chunk.state,
                times=times if i == 0 else None,
                utterance_s=chunk.utterance_s,
                arrived=arrived,
            )
            for i in range(f)
        ]
        with self._cond:
            if self.chunks_in:  # the first chunk has no previous one to be timed from
                self._arrivals.append((arrived - self._last_push, f / self.fps))
            self._plan_buffer(chunk.utterance_s, f)
            if chunk.utterance_id is not None:  # idle made while the speech was on its way
                self.idle_dropped += self._drop_idle_locked()  # (planned, or streamed in): unseen
            epoch = self._flushes
            while len(self._pending) >= self.max_pending and not self._closed:
                self._cond.wait(0.5)
            if self._closed:
                return False
            if self._flushes != epoch and chunk.utterance_id is not None:
                return True  # speech made before an interrupt that flushed while we waited
            self._pending.extend(slots)
            self.chunks_in += 1
            self.started = True
        self._last_push = self._now()
        return True

    def production(self) -> tuple[float, float]:
        """(rate, jitter_s) of the engine's output for this session: media seconds made per
        second the puller waited, and how much later than the steady pace the slowest chunk of
        the window came (0 for an engine that keeps ahead or runs at an even pace)."""
        if not self._arrivals:
            return 1.0, 0.0
        waited = sum(w for w, _ in self._arrivals)
        made = sum(d for _, d in self._arrivals)
        rate = made / waited if waited > 1e-6 else float("inf")
        late = [w - d for w, d in self._arrivals]  # > 0: came later than it lasts
        jitter = max(0.0, max(late) - max(0.0, sum(late) / len(late)))
        return rate, jitter

    def _plan_buffer(self, utterance_s: float, frames: int) -> None:
        """The wait before an utterance of ``utterance_s`` starts (under the lock): long
        enough that the measured production rate and jitter play it through without a gap, at
        most ``max_prebuffer_s``; the pending limit grows to hold what arrives meanwhile."""
        rate, jitter = self.production()
        chunk_s = frames / self.fps
        # chunk k (of length d) comes k·d/rate after the first and plays k·d after the start:
        # the start waits (D − d)(1/rate − 1) after the first chunk came, plus the jitter
        slow = max(0.0, utterance_s - chunk_s) * max(0.0, 1.0 / max(rate, 1e-3) - 1.0)
        self.wait_s = min(self.max_prebuffer_s, slow + jitter)
        hold_s = chunk_s + self.wait_s * min(rate, 1e3)  # media that arrives meanwhile
        need_slots = int(np.ceil(hold_s * self.fps)) + frames
        self.max_pending = max(self.base_pending, min(need_slots, 60 * round(self.fps)))

    def _may_start(self, head: Slot) -> bool:
        """Whether the utterance whose first slot is ``head`` may start playing (under the
        lock): its first chunk has waited long enough, the whole utterance is there, or nothing
        more fits."""
        n = 0
        for s in self._pending:
            if s.utterance_id != head.utterance_id:
                break
            n += 1
        return (
            self._now() - head.arrived >= self.wait_s - 1e-9
            or n / self.fps >= head.utterance_s - 0.5 / self.fps
            or len(self._pending) >= self.max_pending
        )

    # ---- loop side --------------------------------------------------------------------------
    @property
    def next_slot(self) -> int:
        return self._next

    @property
    def buffer_ms(self) -> float:
        return 1000.0 * len(self._pending) / self.fps

    def slot(self, n: int) -> Slot:
        """The slot at index ``n``, materialising the timeline up to it (never blocks)."""
        while self._next <= n:
            wait = False
            with self._cond:
                s = self._pending[0] if self._pending else None
                if s is not None and s.utterance_id not in (None, self.utterance_id):
                    wait = not self._may_start(s)  # a new utterance: its prebuffer first
                if s is not None and not wait:
                    self._pending.popleft()
                else:
                    s = None
                self._cond.notify()
            if wait:  # the idle motion stretches; the words are not cut later
                self.prebuffer_slots += 1
                s = Slot(self._last_frame, np.zeros(self.samples_per_slot, np.float32), None)
                s.state = self.state
            elif s is None:
                s = Slot(self._last_frame, np.zeros(self.samples_per_slot, np.float32), None)
                s.state = "speaking" if self.state == "speaking" else self.state
                if self.started:
                    self.underruns += 1
                if self.utterance_id is not None:
                    self._gap += 1
            else:
                self._last_frame = s.frame
                uid = s.utterance_id
                if uid is not None and uid == self.utterance_id:
                    self.speech_underruns += self._gap
                self._gap = 0
                if uid is not None and uid != self.utterance_id and s.times is not None:
                    self.traces[uid] = {**s.times, "played": time.monotonic()}
                    self.first_slots[uid] = (self._next, time.time())
                    if len(self.traces) > KEEP_TRACES:
                        self.first_slots.pop(next(iter(self.traces)), None)
                        self.traces.pop(next(iter(self.traces)))
                self.state, self.utterance_id = s.state, uid
                assert s.media_s is not None
                self.played_media_s = s.media_s + 1.0 / self.fps
            self._timeline[self._next] = s
            self._timeline.pop(self._next - KEEP_SLOTS, None)
            self._next += 1
            self.slots_served += 1
        return self._timeline.get(n) or Slot(
            self._last_frame, np.zeros(self.samples_per_slot, np.float32), None
        )

    def flush(self) -> int:
        """Drop buffered (not yet played) media, e.g. on interrupt; return slots dropped."""
        with self._cond:
            n = len(self._pending)
            self._pending.clear()
            self._flushes += 1
            self._cond.notify_all()
        self.flushed_slots += n
        return n

    def drop_idle(self) -> int:
        """Drop buffered media when none of it is speech (a new ``say`` need not wait behind
        idle frames); return slots dropped."""
        with self._cond:
            return self._drop_idle_locked()

    def _drop_idle_locked(self) -> int:
        if any(s.utterance_id is not None for s in self._pending):
            return 0
        n = len(self._pending)
        self._pending.clear()
        self._cond.notify_all()
        return n

    def close(self) -> None:
        """Release a puller blocked in :meth:`push`; idempotent."""
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._cond.notify_all()

    def stats(self) -> dict[str, float]:
        return {
            "buffer_ms": self.buffer_ms,
            "underruns": float(self.underruns),
            "speech_underruns": float(self.speech_underruns),
            "prebuffer_slots": float(self.prebuffer_slots),
            "prebuffer_wait_ms": 1000.0 * self.wait_s,
            "slots": float(self.slots_served),
            "chunks": float(self.chunks_in),
        }


class Playout:
    """A pair of tracks' view of the clock: wall-clock start and the first slot they play."""

    def __init__(self, clock: MediaClock) -> None:
        self.clock = clock
        self._t0: float | None = None
        self._base = 0

    def _start(self) -> float:
        if self._t0 is None:
            self._t0 = asyncio.get_running_loop().time()
            self._base = self.clock.next_slot
        return self._t0

    async def wait(self, t_s: float) -> None:
        """Sleep until media time ``t_s`` of this playout is due (cancel-safe)."""
        t0 = self._start()
        delay = t0 + t_s - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)

    def video(self, n: int) -> np.ndarray:
        return self.clock.slot(self._base + n).frame

    def audio_sample(self, slot: int) -> int | None:
        """This playout's audio sample index (track pts) of clock slot ``slot``; None before
        the tracks started or for a slot before their start."""
        if self._t0 is None or slot < self._base:
            return None
        return (slot - self._base) * self.clock.samples_per_slot

    def audio(self, start: int, count: int) -> np.ndarray:
        """``count`` samples at 48 kHz from sample ``start`` of this playout, spanning slots."""
        spf = self.clock.samples_per_slot
        out = np.empty(count, np.float32)
        done = 0
        while done < count:
            pos = start + done
            k, off = divmod(pos, spf)
            take = min(count - done, spf - off)
            out[done : done + take] = self.clock.slot(self._base + k).audio[off : off + take]
            done += take
        return out


class ClockVideoTrack(MediaStreamTrack):
    """Video frames from a :class:`Playout`: pts n·90000/fps, released when due."""

    kind = "video"

    def __init__(self, playout: Playout) -> None:
        super().__init__()
        self._playout = playout
        self._n = 0
        self._step = round(VIDEO_CLOCK_RATE / playout.clock.fps)
        self._time_base = Fraction(1, VIDEO_CLOCK_RATE)

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n = self._n
        self._n += 1
        await self._playout.wait(n / self._playout.clock.fps)
        img = np.ascontiguousarray(self._playout.video(n))  # (H, W, 3) uint8
        frame = VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = n * self._step
        frame.time_base = self._time_base
        return frame


class ClockAudioTrack(MediaStreamTrack):
    """48 kHz s16 mono frames of 960 samples from a :class:`Playout`; pts = sample index."""

    kind = "audio"

    def __init__(self, playout: Playout) -> None:
        super().__init__()
        self._playout = playout
        self._m = 0
        self._time_base = Fraction(1, AUDIO_RATE)

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        start = self._m * AUDIO_FRAME_SAMPLES
        self._m += 1
        await self._playout.wait(start / AUDIO_RATE)
        pcm = self._playout.audio(start, AUDIO_FRAME_SAMPLES)
        s16 = (np.clip(pcm, -1.0, 1.0) * 32767.0).astype(np.int16)
        frame = AudioFrame.from_ndarray(s16[None, :], format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        frame.time_base = self._time_base
        return frame


class ChunkPuller:
    """One thread per engine session: ``next_chunk`` → :meth:`MediaClock.push`.

    ``on_error`` is called (from this thread) with each exception ``next_chunk`` raises; the
    caller hands it to the event loop. After an error the puller backs off and keeps pulling,
    so an engine that recovers streams again; the clock serves idle slots meanwhile.
    """

    def __init__(
        self,
        session: EngineSessionLike,
        clock: MediaClock,
        *,
        on_error: Callable[[BaseException], None],
        label: str = "",
        poll_s: float = 0.2,
    ) -> None:
        self._session, self._clock, self._on_error = session, clock, on_error
        self._stop = threading.Event()
        self._poll_s = poll_s
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name=f"puller-{label}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            try:
                chunk = self._session.next_chunk(timeout=self._poll_s)
            except Exception as e:  # a model/decoder fault: report, back off, keep serving idle
                self.errors += 1
                self._on_error(e)
                backoff = min(2.0, max(0.05, backoff * 2))
                self._stop.wait(backoff)
                continue
            backoff = 0.0
            if chunk is not None and not self._clock.push(chunk):
                break

    def close(self, timeout: float = 2.0) -> None:
        """Stop and join the thread; idempotent (``next_chunk`` returns within poll_s)."""
        self._stop.set()
        self._clock.close()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("[%s] puller did not stop in %.1f s", self._thread.name, timeout)
