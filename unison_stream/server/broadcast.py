"""Encode-once fan-out for broadcast channels.

aiortc encodes each peer connection's tracks separately, so CPU grows with viewers
(``docs/server.md``, "Media timing"). A channel instead encodes its playout once — VP8 video
and Opus audio — and hands the same ``av.Packet`` objects to every viewer's
:class:`PacketTrack`; aiortc's sender only packetizes a track's packets (``Encoder.pack``).
Encoding runs in an executor, never on the event loop. Viewers must negotiate VP8 + Opus (the
session sets codec preferences); a keyframe is forced when a viewer joins and every ``gop_s``,
since a shared encoder cannot answer one viewer's PLI.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from fractions import Fraction

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from unison_sdk._tasks import TaskManager

from unison_stream.server.media import (
    AUDIO_FRAME_SAMPLES,
    AUDIO_RATE,
    VIDEO_CLOCK_RATE,
    MediaClock,
    Playout,
)

__all__ = ["PacketTrack", "SharedEncoder"]

log = logging.getLogger(__name__)

QUEUE_PACKETS = 16  # per viewer and kind; a slow viewer loses its oldest packets beyond this


class PacketTrack(MediaStreamTrack):
    """A viewer's track that returns already-encoded packets from a :class:`SharedEncoder`."""

    def __init__(self, kind: str, encoder: SharedEncoder) -> None:
        super().__init__()
        self.kind = kind
        self._encoder = encoder
        self._queue: deque[av.Packet] = deque(maxlen=QUEUE_PACKETS)
        self._ready = asyncio.Event()

    def offer(self, packet: av.Packet) -> None:
        self._queue.append(packet)
        self._ready.set()

    async def recv(self) -> av.Packet:  # aiortc accepts an encoded Packet as well as a Frame
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    def stop(self) -> None:
        if self.readyState == "live":
            self._encoder.remove(self)
        super().stop()
        self._ready.set()


class SharedEncoder:
    """One VP8 + one Opus encoder per broadcast channel, fanning packets out to viewers."""

    def __init__(
        self,
        clock: MediaClock,
        tasks: TaskManager,
        *,
        gop_s: float,
        bitrate: int,
        label: str = "",
    ) -> None:
        self.clock, self._tasks, self.label = clock, tasks, label
        self._playout = Playout(clock)
        self._gop = max(1, round(gop_s * clock.fps))
        self._bitrate = bitrate
        self._video: set[PacketTrack] = set()
        self._audio: set[PacketTrack] = set()
        self._force_keyframe = False
        self._vp8: av.video.codeccontext.VideoCodecContext | None = None
        self._opus = av.CodecContext.create("libopus", "w")
        self._opus.sample_rate = AUDIO_RATE
        self._opus.layout = "mono"
        self._opus.format = "s16"
        self._opus.bit_rate = 64000
        self._opus.time_base = Fraction(1, AUDIO_RATE)
        self._started = False
        self.video_frames_encoded = 0
        self.audio_frames_encoded = 0

    @property
    def viewers(self) -> int:
        return len(self._video)

    def add_viewer(self) -> tuple[PacketTrack, PacketTrack]:
        v, a = PacketTrack("video", self), PacketTrack("audio", self)
        self._video.add(v)
        self._audio.add(a)
        self._force_keyframe = True
        if not self._started:
            self._started = True
            self._tasks.create(self._video_loop(), name="broadcast-video")
            self._tasks.create(self._audio_loop(), name="broadcast-audio")
        return v, a

    def remove(self, track: PacketTrack) -> None:
        self._video.discard(track)
        self._audio.discard(track)

    # ---- encoding (executor) ----------------------------------------------------------------
    def _encode_video(self, img: np.ndarray, n: int, keyframe: bool) -> list[av.Packet]:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        if self._vp8 is None:
            c = av.CodecContext.create("libvpx", "w")
            c.width, c.height = frame.width, frame.height
            c.pix_fmt = "yuv420p"
            c.bit_rate = self._bitrate
            c.gop_size = self._gop
            c.options = {"deadline": "realtime", "cpu-used": "-6", "lag-in-frames": "0"}
            self._vp8 = c
        if keyframe:
            frame.pict_type = av.video.frame.PictureType.I
        frame.pts = n
        frame.time_base = Fraction(1, round(self.clock.fps))
        data = b"".join(bytes(p) for p in self._vp8.encode(frame))
        if not data:
            return []
        packet = av.Packet(data)
        packet.pts = n * round(VIDEO_CLOCK_RATE / self.clock.fps)
        packet.time_base = Fraction(1, VIDEO_CLOCK_RATE)
        return [packet]

    def _encode_audio(self, pcm: np.ndarray) -> list[av.Packet]:
        s16 = (np.clip(pcm, -1.0, 1.0) * 32767.0).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(s16[None, :], format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = self.audio_frames_encoded * AUDIO_FRAME_SAMPLES
        frame.time_base = Fraction(1, AUDIO_RATE)
        out = []
        for p in self._opus.encode(frame):
            p.pts = self.audio_frames_encoded * AUDIO_FRAME_SAMPLES  # counter, not encoder delay
            p.time_base = Fraction(1, AUDIO_RATE)
            out.append(p)
        self.audio_frames_encoded += 1
        return out

    # ---- paced loops ------------------------------------------------------------------------
    async def _video_loop(self) -> None:
        loop = asyncio.get_running_loop()
        n = 0
        while True:
            await self._playout.wait(n / self.clock.fps)
            img = self._playout.video(n)
            key = self._force_keyframe or n % self._gop == 0
            self._force_keyframe = False
            packets = await loop.run_in_executor(None, self._encode_video, img, n, key)
            self.video_frames_encoded += 1
            for p in packets:
                for t in list(self._video):
                    t.offer(p)
            n += 1

    async def _audio_loop(self) -> None:
        loop = asyncio.get_running_loop()
        m = 0
        while True:
            start = m * AUDIO_FRAME_SAMPLES
            await self._playout.wait(start / AUDIO_RATE)
            pcm = self._playout.audio(start, AUDIO_FRAME_SAMPLES)
            packets = await loop.run_in_executor(None, self._encode_audio, pcm)
            for p in packets:
                for t in list(self._audio):
                    t.offer(p)
            m += 1
