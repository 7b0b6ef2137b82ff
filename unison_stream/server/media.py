"""One media clock per session and the aiortc tracks it paces.

Video at 25 fps on a 90 kHz clock (pts step 3600), audio as 48 kHz ``s16`` mono frames of 960
samples (pts = sample index); ``docs/server.md``, "Media timing". Both tracks read one
timeline of *slots* (one video frame + the audio of the same 1/fps span), so an underrun never
moves audio against video: when no decoded media is buffered, the clock materialises an idle
slot (last frame repeated, silence) and counts it. ``recv()`` only sleeps until its pts is due
and reads the timeline; it never waits on the model. The clock reads the engine session's
output queue directly and without waiting (``take_chunk``): one buffer, one timeline, no
thread between them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TypeVar

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame

from unison_stream.server.engine_api import ChunkSource, QueuedLike

__all__ = [
    "AUDIO_FRAME_SAMPLES",
    "AUDIO_RATE",
    "HOPS",
    "VIDEO_CLOCK_RATE",
    "ClockAudioTrack",
    "ClockVideoTrack",
    "MediaClock",
    "Playout",
    "Slot",
    "Upsampler",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

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


# hops of an utterance's first chunk, in order (time.monotonic instants; docs/server.md)
HOPS: tuple[str, ...] = ("queued", "planned", "generated", "decoded", "in_clock", "played")
KEEP_TRACES = 32  # utterances whose first-slot hops are kept for the started event
RATE_WINDOW = 12  # chunks the production rate and its jitter are measured over
MAX_BACKOFF_S = 2.0  # the longest pause in reading a source that raised
CUT_FADE = 240  # 48 kHz samples (5 ms) of fade-out where an interrupt cuts into a slot


class MediaClock:
    """A session's output timeline, on the event loop only.

    It reads the engine session's output queue directly — the stream's one buffer — taking a
    chunk (``take_chunk``, non-blocking) when the chunk in playout is used up, and placing it at
    the media time of the slot it starts on; it tells the engine how far ahead to make chunks
    (``set_ahead``: ``buffer_s`` of media, more while an utterance prebuffers). A source that
    raises is reported through ``on_error`` and read again after a backoff; idle slots keep
    the stream going meanwhile.
    """

    def __init__(
        self,
        source: ChunkSource,
        *,
        fps: float,
        width: int,
        height: int,
        sample_rate: int,
        buffer_s: float,
        max_prebuffer_s: float = 4.0,
        label: str = "",
        on_error: Callable[[BaseException], None] | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        spf = AUDIO_RATE / fps
        assert spf == int(spf), f"48 kHz / fps must be a whole number of samples, got {spf}"
        self.fps, self.width, self.height, self.label = fps, width, height, label
        self.samples_per_slot = int(spf)
        self._source, self._on_error = source, on_error
        self.base_slots = max(1, round(buffer_s * fps))  # media the engine makes ahead
        self.max_prebuffer_s = max_prebuffer_s
        self._frames = 0  # frames per chunk (known from the first chunk)
        self._ahead = 0  # chunks the source was last asked to make ahead (0: not yet)
        # taken chunks: (seconds the engine took for the chunk, media seconds it holds)
        self._rates: deque[tuple[float, float]] = deque(maxlen=RATE_WINDOW)
        self._now = now  # the clock prebuffer waits are measured on (tests inject one)
        self._retry_at, self._backoff = 0.0, 0.0  # after a source fault
        self.errors = 0  # source faults
        self.prebuffer_slots = 0  # idle slots served while an utterance filled its prebuffer
        self.idle_dropped = 0  # idle slots of the chunk in playout skipped for speech
        self.wait_s = 0.0  # how long an utterance's first chunk waits (buffer policy)
        self._planned: str | None = None  # the utterance the prebuffer was planned for
        self._waiting = False  # the slot being materialised stands in for a prebuffer
        self._upsample = Upsampler(sample_rate)
        self._current: deque[Slot] = deque()  # the rest of the chunk in playout
        self._timeline: dict[int, Slot] = {}
        self._next = 0  # next slot index to materialise
        self._last_frame = np.full((height, width, 3), IDLE_GREY, np.uint8)
        self._closed = False
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
        self.played_media_s = 0.0  # media time reached by playout (end of the last slot)
        self.traces: dict[str, dict[str, float]] = {}  # utterance id → hops of its first slot
        # utterance id → (index, time.time()) of its first slot: where a client finds it
        self.first_slots: dict[str, tuple[int, float]] = {}

    # ---- reading the source -----------------------------------------------------------------
    def _call(self, fn: Callable[[], _T], default: _T) -> _T:
        """``fn()`` on the source; ``default`` while backing off after a fault."""
        if self._closed or time.monotonic() < self._retry_at:
            return default
        try:
            out = fn()
        except Exception as e:  # a model/decoder fault: report, back off, keep serving idle
            self.errors += 1
            self._backoff = min(MAX_BACKOFF_S, max(0.05, self._backoff * 2))
            self._retry_at = time.monotonic() + self._backoff
            if self._on_error is not None:
                self._on_error(e)
            return default
        self._backoff = 0.0
        return out

    def _queued(self) -> Sequence[QueuedLike]:
        empty: Sequence[QueuedLike] = ()
        return self._call(self._source.queued, empty)

    def _set_ahead(self, slots: int) -> None:
        if not self._frames:
            return
        chunks = -(-slots // self._frames)
        if chunks != self._ahead:
            self._ahead = chunks
            self._call(lambda: self._source.set_ahead(chunks), None)

    def _take(self) -> bool:
        """Take the next chunk into playout at the current slot's media time."""
        chunk = self._call(lambda: self._source.take_chunk(self._next / self.fps), None)
        if chunk is None:
            return False
        video = np.asarray(chunk.video)
        f = video.shape[0]  # (F, H, W, 3)
        audio = self._upsample(np.asarray(chunk.audio, np.float32))  # (S·48k/rate,)
        need = f * self.samples_per_slot
        if len(audio) < need:
            audio = np.pad(audio, (0, need - len(audio)))
        times = {**chunk.times, "in_clock": time.monotonic()}
        self._current.extend(
            Slot(
                frame=video[i],
                audio=audio[i * self.samples_per_slot : (i + 1) * self.samples_per_slot],
                media_s=chunk.start_s + i / self.fps,
                utterance_id=chunk.utterance_id,
                state=chunk.state,
                times=times if i == 0 else None,
                utterance_s=chunk.utterance_s,
            )
            for i in range(f)
        )
        if "wanted" in chunk.times and "decoded" in chunk.times:
            self._rates.append((chunk.times["decoded"] - chunk.times["wanted"], f / self.fps))
        self.chunks_in += 1
        self.started = True
        if not self._frames:
            self._frames = f
            self._set_ahead(self.base_slots)
        if chunk.utterance_id is None:
            self._planned = None
            self._set_ahead(self.base_slots)
        return True

    def production(self) -> tuple[float, float]:
        """(rate, jitter_s) of the engine's output for this session: media seconds made per
        second of making them (time from the moment the engine could start on a chunk to the
        moment it was decoded), and how much longer than it lasts the slowest chunk of the
        window took beyond the mean (0 for an engine that keeps an even pace)."""
        if not self._rates:
            return 1.0, 0.0
        took = sum(w for w, _ in self._rates)
        made = sum(d for _, d in self._rates)
        rate = made / took if took > 1e-6 else float("inf")
        late = [w - d for w, d in self._rates]  # > 0: took longer than it lasts
        jitter = max(0.0, max(late) - max(0.0, sum(late) / len(late)))
        return rate, jitter

    def _plan_buffer(self, utterance_s: float) -> None:
        """The wait before an utterance of ``utterance_s`` starts: long enough that the
        measured production rate and jitter play it through without a gap, at most
        ``max_prebuffer_s``; the engine is let make ahead what arrives meanwhile."""
        rate, jitter = self.production()
        frames = self._frames or 1
        chunk_s = frames / self.fps
        # chunk k (of length d) comes k·d/rate after the first and plays k·d after the start:
        # the start waits (D − d)(1/rate − 1) after the first chunk came, plus the jitter
        slow = max(0.0, utterance_s - chunk_s) * max(0.0, 1.0 / max(rate, 1e-3) - 1.0)
        self.wait_s = min(self.max_prebuffer_s, slow + jitter)
        log.info(
            "%sbuffer policy: production %.2f× real time, jitter %.0f ms → wait %.0f ms (%s)",
            f"[{self.label}] " if self.label else "",
            rate,
            1000 * jitter,
            1000 * self.wait_s,
            " ".join(f"{1000 * (w - d):+.0f}" for w, d in self._rates),  # ms late per chunk
        )
        hold_s = chunk_s + self.wait_s * min(rate, 1e3)  # media that arrives meanwhile
        need_slots = int(np.ceil(hold_s * self.fps)) + frames
        self._set_ahead(max(self.base_slots, min(need_slots, 60 * round(self.fps))))

    def _may_start(self, queued: Sequence[QueuedLike]) -> bool:
        """Whether the utterance whose first chunk heads ``queued`` may start playing: that
        chunk has waited long enough, the whole utterance is made, or no more may be made."""
        head = queued[0]
        if head.utterance_id != self._planned:
            self._planned = head.utterance_id
            self._plan_buffer(head.utterance_s)
        n = 0
        for q in queued:
            if q.utterance_id != head.utterance_id:
                break
            n += 1
        frames = self._frames or 1
        return (
            self._now() - head.made_at >= self.wait_s - 1e-9
            or n * frames / self.fps >= head.utterance_s - 0.5 / self.fps
            or len(queued) >= max(1, self._ahead)
        )

    def _materialise(self) -> Slot | None:
        """The next slot's media, or None when an idle slot must stand in (``wait``: the
        utterance ahead is prebuffering)."""
        queued = self._queued()
        head = queued[0] if queued else None
        speech_next = head is not None and head.utterance_id not in (None, self.utterance_id)
        in_speech = bool(self._current) and self._current[0].utterance_id is not None
        if self._current and (in_speech or not speech_next):
            return self._current.popleft()
        if speech_next and not self._may_start(queued):
            if self._current:  # the idle motion goes on while the words prebuffer
                return self._current.popleft()
            self.prebuffer_slots += 1
            self._waiting = True
            return None
        if head is None:
            return None
        self.idle_dropped += len(self._current)  # speech need not wait behind idle frames
        self._current.clear()
        return self._current.popleft() if self._take() else None

    # ---- the timeline -----------------------------------------------------------------------
    @property
    def next_slot(self) -> int:
        return self._next

    @property
    def buffer_ms(self) -> float:
        """Media made and not yet played: the chunk in playout and the engine's queue."""
        queued = len(self._queued()) * self._frames
        return 1000.0 * (len(self._current) + queued) / self.fps

    def slot(self, n: int) -> Slot:
        """The slot at index ``n``, materialising the timeline up to it (never blocks)."""
        while self._next <= n:
            self._waiting = False
            s = self._materialise()
            if s is None:  # the idle motion stretches; the words are not cut later
                s = Slot(self._last_frame, np.zeros(self.samples_per_slot, np.float32), None)
                s.state = self.state
                if not self._waiting:
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
            self._timeline[self._next] = s
            self._timeline.pop(self._next - KEEP_SLOTS, None)
            self._next += 1
            self.played_media_s = self._next / self.fps
            self.slots_served += 1
        return self._timeline.get(n) or Slot(
            self._last_frame, np.zeros(self.samples_per_slot, np.float32), None
        )

    def flush(self) -> int:
        """Drop the speech left in the chunk in playout (an interrupt: the engine drops the
        queued rest); return the slots dropped."""
        if not self._current or self._current[0].utterance_id is None:
            return 0
        n = len(self._current)
        self._current.clear()
        self.flushed_slots += n
        return n

    def silence_from(self, sample: int) -> bool:
        """Cut the speech of the slot in playout at clock sample ``sample`` (48 kHz from slot
        0): a ``CUT_FADE`` ramp down, then silence to the slot's end; the samples before it
        were already handed to a track. True when a slot was cut: ``sample`` lies inside the
        last materialised slot, which holds speech."""
        n, off = divmod(sample, self.samples_per_slot)
        s = self._timeline.get(n)
        if n != self._next - 1 or off == 0 or s is None or s.utterance_id is None:
            return False
        audio = s.audio.copy()  # (spf,) the slot's array may be shared with its chunk
        fade = min(CUT_FADE, audio.size - off)
        audio[off : off + fade] *= np.linspace(1.0, 0.0, fade, endpoint=False, dtype=np.float32)
        audio[off + fade :] = 0.0
        s.audio = audio
        return True

    def close(self) -> None:
        """Stop reading the source; idempotent."""
        self._closed = True
        self._current.clear()

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
        self._audio_end = 0  # this playout's samples handed to its audio track so far

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

    def audio_pts(self, sample: int) -> int | None:
        """This playout's audio sample index (track pts) of clock sample ``sample``; None
        before the tracks started or for a sample before their start."""
        first = self._base * self.clock.samples_per_slot
        if self._t0 is None or sample < first:
            return None
        return sample - first

    def audio_sent(self) -> int | None:
        """The clock sample after the last one handed to this playout's audio track; None
        before it started."""
        if self._t0 is None:
            return None
        return self._base * self.clock.samples_per_slot + self._audio_end

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
        self._audio_end = max(self._audio_end, start + count)
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
