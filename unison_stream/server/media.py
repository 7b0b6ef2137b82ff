"""One media clock per session and the aiortc tracks it paces.

Video at 25 fps on a 90 kHz clock (pts step 3600), audio as 48 kHz ``s16`` mono frames of 960
samples (pts = sample index); ``docs/server.md``, "Media timing". Both tracks read one
timeline of *slots* (one video frame + the audio of the same 1/fps span), so an underrun never
moves audio against video: when no decoded media is buffered, the clock materialises an idle
slot (last frame repeated, silence) and counts it. ``recv()`` only sleeps until its pts is due
and reads the timeline; it never waits on the model. At each chunk boundary (and on every slot
while an idle chunk plays, which a reply may cut short) the clock asks the engine session for
the next chunk with its one verb, ``next_media(start_s)``, without waiting: the stream owns its
queue and decides when a reply is ready to play through (its buffer policy); the clock owns
the timeline. One buffer, one timeline, no thread between them.

Stems (``docs/stems.md``): each slot also keeps the mix's two stems, speech and sound effects,
at the mix's level (the engine mixer's :func:`~unison_stream.engine.audio.split_mix`), each
through its own copy of the mix's resampler and cut by the same interrupt fades, so
``speech + sfx == audio`` sample for sample up to float rounding. :class:`StemAudioTrack` plays
one of them with the mix track's timing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame

from unison_stream.server.engine_api import ChunkLike, ChunkSource, HeldLike

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
    "Stem",
    "StemAudioTrack",
    "Upsampler",
]

log = logging.getLogger(__name__)

VIDEO_CLOCK_RATE = 90_000  # RTP video clock (Hz)
AUDIO_RATE = 48_000  # Opus clock (Hz)
AUDIO_FRAME_SAMPLES = 960  # 20 ms at 48 kHz
IDLE_GREY = 96  # value of the placeholder frame shown before the first decoded frame
KEEP_SLOTS = 64  # materialised slots kept behind the newest one (late reads of the other track)

Stem = Literal["speech", "sfx"]
AudioSource = Literal["mix", "speech", "sfx"]  # what an audio track of a playout reads


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
    audio: np.ndarray  # (48000 / fps,) float32 mix
    media_s: float | None  # engine media time of the frame; None for an idle (underrun) slot
    utterance_id: str | None = None
    state: str = "idle"
    times: dict[str, float] | None = None  # first slot of a chunk: its hops (ChunkLike.times)
    # the mix's stems, (48000 / fps,) float32 each, speech + sfx == audio; None: silence
    speech: np.ndarray | None = None
    sfx: np.ndarray | None = None

    def samples(self, source: AudioSource) -> np.ndarray:
        """The slot's mix or one of its stems (zeros for a stem it does not keep)."""
        if source == "mix":
            return self.audio
        stem = self.speech if source == "speech" else self.sfx
        return np.zeros_like(self.audio) if stem is None else stem


# hops of an utterance's first chunk, in order (time.monotonic instants; docs/server.md)
HOPS: tuple[str, ...] = ("queued", "planned", "generated", "decoded", "in_clock", "played")
KEEP_TRACES = 32  # utterances whose first-slot hops are kept for the started event
CUT_FADE = 240  # 48 kHz samples (5 ms) of fade-out where an interrupt cuts into a slot


class MediaClock:
    """A session's output timeline, on the event loop only.

    It asks the engine session for the next chunk (``next_media``, non-blocking) when the
    chunk in playout is used up — or, while an idle chunk plays, on every slot, so a reply cuts
    it short — and places it at the media time of the slot it starts on. The session's stream
    owns the buffer and its policy: it is told once how much to make ahead (``buffer_s``) and
    how long a reply may wait to play through (``max_prebuffer_s``), and answers with a chunk,
    with a held reply (``HeldLike``: it waits to play through; idle slots stand in), or
    with nothing (an underrun). Engine faults come as the stream's own ``failed`` events;
    ``on_error`` is kept for callers and never called.
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
    ) -> None:
        spf = AUDIO_RATE / fps
        assert spf == int(spf), f"48 kHz / fps must be a whole number of samples, got {spf}"
        self.fps, self.width, self.height, self.label = fps, width, height, label
        self.samples_per_slot = int(spf)
        self._source = source
        source.set_buffer(ahead_s=buffer_s, max_prebuffer_s=max_prebuffer_s)
        self.prebuffer_slots = 0  # idle slots served while an utterance filled its prebuffer
        self.idle_dropped = 0  # idle slots of the chunk in playout skipped for speech
        self.wait_s = 0.0  # how long the last held utterance's first chunk waited (policy)
        self._waiting = False  # the slot being materialised stands in for a prebuffer
        self._upsample = Upsampler(sample_rate)
        # the stems' own resamplers: the same filter and state as the mix's, as it is linear
        self._upsample_speech = Upsampler(sample_rate)
        self._upsample_sfx = Upsampler(sample_rate)
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
    def _load(self, chunk: ChunkLike) -> None:
        """Cut a chunk into the slots of the chunk in playout (audio and its stems upsampled
        to 48 kHz)."""
        video = np.asarray(chunk.video)
        f = video.shape[0]  # (F, H, W, 3)
        # imported here, not at the top: the engine package loads torch, which a process that
        # only routes sessions (the cluster's front door imports the app) should not pay for
        from unison_stream.engine.audio import split_mix

        mix = np.asarray(chunk.audio, np.float32)
        # the engine's MediaChunk carries its raw stems; a bare ChunkLike is all speech
        speech, sfx = split_mix(mix, getattr(chunk, "speech", None), getattr(chunk, "sfx", None))
        need = f * self.samples_per_slot
        audio, speech48, sfx48 = (  # (S·48k/rate,) each, padded to the chunk's slots
            np.pad(a, (0, max(0, need - len(a))))
            for a in (self._upsample(mix), self._upsample_speech(speech), self._upsample_sfx(sfx))
        )
        times = {**chunk.times, "in_clock": time.monotonic()}
        spf = self.samples_per_slot
        self._current.extend(
            Slot(
                frame=video[i],
                audio=audio[i * spf : (i + 1) * spf],
                media_s=chunk.start_s + i / self.fps,
                utterance_id=chunk.utterance_id,
                state=chunk.state,
                times=times if i == 0 else None,
                speech=speech48[i * spf : (i + 1) * spf],
                sfx=sfx48[i * spf : (i + 1) * spf],
            )
            for i in range(f)
        )
        self.chunks_in += 1
        self.started = True

    def _materialise(self) -> Slot | None:
        """The next slot's media, or None when an idle slot must stand in (``_waiting``: the
        utterance ahead is prebuffering)."""
        if self._current and self._current[0].utterance_id is not None:
            return self._current.popleft()  # speech plays to its chunk's end
        if self._closed:
            return self._current.popleft() if self._current else None
        over_idle = bool(self._current)
        got = self._source.next_media(self._next / self.fps, over_idle=over_idle)
        if got is None or isinstance(got, HeldLike):
            if isinstance(got, HeldLike):
                self.wait_s = got.wait_s
            if self._current:  # the idle motion goes on while the words prebuffer
                return self._current.popleft()
            if isinstance(got, HeldLike):
                self.prebuffer_slots += 1
                self._waiting = True
            return None
        self.idle_dropped += len(self._current)  # speech need not wait behind idle frames
        self._current.clear()
        self._load(got)
        return self._current.popleft()

    # ---- the timeline -----------------------------------------------------------------------
    @property
    def next_slot(self) -> int:
        return self._next

    @property
    def buffer_ms(self) -> float:
        """Media made and not yet played: the chunk in playout and the stream's queue."""
        queued = 0.0 if self._closed else self._source.stats().get("buffer_ms", 0.0)
        return 1000.0 * len(self._current) / self.fps + queued

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
        0): a ``CUT_FADE`` ramp down, then silence to the slot's end, in the mix and both
        stems alike; the samples before it were already handed to a track. True when a slot
        was cut: ``sample`` lies inside the last materialised slot, which holds speech."""
        n, off = divmod(sample, self.samples_per_slot)
        s = self._timeline.get(n)
        if n != self._next - 1 or off == 0 or s is None or s.utterance_id is None:
            return False
        fade = min(CUT_FADE, s.audio.size - off)
        ramp = np.linspace(1.0, 0.0, fade, endpoint=False, dtype=np.float32)

        def cut(a: np.ndarray) -> np.ndarray:
            a = a.copy()  # (spf,) the slot's array may be shared with its chunk
            a[off : off + fade] *= ramp
            a[off + fade :] = 0.0
            return a

        s.audio = cut(s.audio)
        s.speech = None if s.speech is None else cut(s.speech)
        s.sfx = None if s.sfx is None else cut(s.sfx)
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
        self._audio_end = 0  # this playout's samples handed to its audio tracks so far

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
        """The clock sample after the last one handed to any of this playout's audio tracks
        (the mix's or a stem's: an interrupt cuts all of them there); None before they
        started."""
        if self._t0 is None:
            return None
        return self._base * self.clock.samples_per_slot + self._audio_end

    def audio(self, start: int, count: int, *, source: AudioSource = "mix") -> np.ndarray:
        """``count`` samples at 48 kHz from sample ``start`` of this playout, spanning slots:
        the mix, or one of its stems."""
        spf = self.clock.samples_per_slot
        out = np.empty(count, np.float32)
        done = 0
        while done < count:
            pos = start + done
            k, off = divmod(pos, spf)
            take = min(count - done, spf - off)
            slot = self.clock.slot(self._base + k)
            out[done : done + take] = slot.samples(source)[off : off + take]
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
    """48 kHz s16 mono frames of 960 samples from a :class:`Playout`; pts = sample index.
    ``named``: the track's id is its source (``mix``), as in a session with stems."""

    kind = "audio"
    source: AudioSource = "mix"

    def __init__(self, playout: Playout, *, named: bool = False) -> None:
        super().__init__()
        self._named = named
        self._playout = playout
        self._m = 0
        self._time_base = Fraction(1, AUDIO_RATE)

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        start = self._m * AUDIO_FRAME_SAMPLES
        self._m += 1
        await self._playout.wait(start / AUDIO_RATE)
        pcm = self._playout.audio(start, AUDIO_FRAME_SAMPLES, source=self.source)
        s16 = (np.clip(pcm, -1.0, 1.0) * 32767.0).astype(np.int16)
        frame = AudioFrame.from_ndarray(s16[None, :], format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        frame.time_base = self._time_base
        return frame

    @property
    def id(self) -> str:
        """aiortc's random id, or (``named``) the source: the msid track id a client tells a
        stems session's audio tracks apart by (``unison_sdk.protocol.AUDIO_TRACKS``)."""
        return self.source if self._named else super().id


class StemAudioTrack(ClockAudioTrack):
    """One stem of the mix (``"speech"`` or ``"sfx"``) from a :class:`Playout`, framed and
    timed as :class:`ClockAudioTrack`: a client that plays both stems hears the mix. Its id
    is the stem's name."""

    def __init__(self, playout: Playout, stem: Stem) -> None:
        assert stem in ("speech", "sfx"), f"a stem is 'speech' or 'sfx', got {stem!r}"
        super().__init__(playout, named=True)
        self.source = stem
