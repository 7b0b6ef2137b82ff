"""Received media as numpy frames, fan-out to any number of readers, loopback WebRTC set-up.

A :class:`Subscription` is one reader's bounded queue: when a reader falls behind, the oldest
items are dropped (and counted) so a slow consumer never stalls the connection. Frame times are
media times: seconds since the first frame of that track, from the RTP timestamps (video 90 kHz,
audio 48 kHz), never wall time.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import numpy as np

__all__ = [
    "AudioFrame",
    "Fanout",
    "Subscription",
    "VideoFrame",
    "is_loopback_url",
    "load_pcm",
]

T = TypeVar("T")


@dataclass(frozen=True)
class VideoFrame:
    """One decoded video frame: ``image`` (H, W, 3) uint8 RGB at media time ``time_s``."""

    image: np.ndarray
    time_s: float
    pts: int


@dataclass(frozen=True)
class AudioFrame:
    """Decoded audio: ``samples`` (N,) float32 mono in [-1, 1] at ``sample_rate`` (48 kHz)."""

    samples: np.ndarray
    sample_rate: int
    time_s: float
    pts: int = 0  # the RTP media pts (samples): what utterance events' ``audio_pts`` name


def pcm16(audio: np.ndarray) -> np.ndarray:
    """Mono speech as int16: an int16 array as it is, floats in [-1, 1] clipped and scaled."""
    a = np.asarray(audio)
    if a.ndim != 1:
        raise ValueError(f"audio must be mono (N,), got shape {a.shape}")
    if a.dtype == np.int16:
        return a
    return (np.clip(a.astype(np.float32), -1.0, 1.0) * 32767).astype(np.int16)


_END = object()


class Subscription(Generic[T]):
    """An async iterator over one reader's queue; ends when the source closes or on ``close()``."""

    def __init__(self, fanout: Fanout[T], maxsize: int) -> None:
        self._fanout = fanout
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        self.dropped = 0

    def put(self, item: Any) -> None:
        while True:
            try:
                self._queue.put_nowait(item)
                return
            except asyncio.QueueFull:
                self._queue.get_nowait()  # drop the oldest; the newest matters most
                self.dropped += 1

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # stay ended
            raise StopAsyncIteration
        return item

    def close(self) -> None:
        """Stop reading: unsubscribe and end the iteration (idempotent)."""
        self._fanout.remove(self)
        self.put(_END)


class Fanout(Generic[T]):
    """Hands each published item to every current subscription."""

    def __init__(self, maxsize: int = 256) -> None:
        self.maxsize = maxsize
        self._subs: list[Subscription[T]] = []
        self.closed = False

    def __bool__(self) -> bool:
        return bool(self._subs)

    def subscribe(self, maxsize: int | None = None) -> Subscription[T]:
        sub: Subscription[T] = Subscription(self, maxsize or self.maxsize)
        if self.closed:
            sub.put(_END)
        else:
            self._subs.append(sub)
        return sub

    def remove(self, sub: Subscription[T]) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def publish(self, item: T) -> None:
        for s in list(self._subs):
            s.put(item)

    def close(self) -> None:
        """End every subscription (idempotent)."""
        self.closed = True
        for s in list(self._subs):
            s.close()


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def restrict_ice_to_loopback() -> None:
    """Make aioice gather only 127.0.0.1 host candidates (process-wide, idempotent).

    aioice skips loopback addresses when it lists interfaces; against a server on this machine
    only 127.0.0.1 works, so the lookup is swapped (as the server does; ``docs/server.md``,
    "Loopback and other machines")."""
    import aioice.ice

    def _loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"] if use_ipv4 else []

    aioice.ice.get_host_addresses = _loopback


def video_frame(frame: Any, t0: list[int | None]) -> VideoFrame:
    """An ``av.VideoFrame`` → :class:`VideoFrame`; ``t0`` holds the track's first pts."""
    pts = int(frame.pts or 0)
    first = t0[0] = pts if t0[0] is None else t0[0]
    tb = float(frame.time_base) if frame.time_base is not None else 1 / 90000
    return VideoFrame(frame.to_ndarray(format="rgb24"), (pts - first) * tb, pts)


def audio_frame(frame: Any, t0: list[int | None]) -> AudioFrame:
    """An ``av.AudioFrame`` (s16, any layout) → mono float32 :class:`AudioFrame`."""
    pts = int(frame.pts or 0)
    first = t0[0] = pts if t0[0] is None else t0[0]
    channels = len(frame.layout.channels)
    raw = frame.to_ndarray()  # packed s16: (1, N·C); planar: (C, N)
    pcm = raw.reshape(-1, channels) if raw.shape[0] == 1 else raw.T  # (N, C)
    mono = pcm.astype(np.float32).mean(axis=1) / 32768.0
    return AudioFrame(mono, int(frame.sample_rate), (pts - first) / float(frame.sample_rate), pts)


def load_pcm(audio: np.ndarray | str | Path, sample_rate: int | None) -> tuple[np.ndarray, int]:
    """→ (int16 mono samples, rate); files are decoded with PyAV and resampled to 16 kHz."""
    if isinstance(audio, str | Path):
        import av

        rate = sample_rate or 16000
        out: list[np.ndarray] = []
        with av.open(str(audio)) as f:
            rs = av.AudioResampler(format="s16", layout="mono", rate=rate)
            for frame in f.decode(audio=0):
                out += [r.to_ndarray().reshape(-1) for r in rs.resample(frame)]
            out += [r.to_ndarray().reshape(-1) for r in rs.resample(None)]
        if not out:
            raise ValueError(f"{audio}: no audio")
        return np.concatenate(out).astype(np.int16), rate
    if sample_rate is None:
        raise ValueError("give sample_rate= with a sample array")
    return pcm16(audio), sample_rate
