"""Writing received media to an mp4 (PyAV) and playing it through speakers (sounddevice).

Both read a client's frame subscriptions in a task and do the blocking work (encoding, audio
device writes) in one thread of their own, never in the event loop (aiortc's habit). A
recording with stems also writes the mix and each stem as a 48 kHz 16-bit WAV (:func:`stem_paths`),
each frame placed by its pts, so the three files line up sample for sample.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import wave
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from unison_sdk.errors import PlaybackUnavailable
from unison_sdk.media import AudioFrame, Subscription, VideoFrame

__all__ = ["Player", "Recorder", "check_output_device", "stem_paths"]

log = logging.getLogger(__name__)
_STOP = object()


class _Worker:
    """A thread draining a queue into ``handle``; ``finish`` runs last in the same thread."""

    def __init__(self, name: str) -> None:
        self._q: queue.Queue[Any] = queue.Queue(maxsize=512)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def submit(self, item: Any) -> None:
        try:
            self._q.put_nowait(item)
        except queue.Full:
            log.warning("%s is behind; a frame was dropped", self._thread.name)

    def _run(self) -> None:
        try:
            while (item := self._q.get()) is not _STOP:
                if self.error is None:
                    self.handle(item)
        except BaseException as e:  # reported by stop(); the thread must end either way
            self.error = e
        finally:
            try:
                self.finish()
            except BaseException as e:
                self.error = self.error or e

    def handle(self, item: Any) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        pass

    async def join(self) -> None:
        self._q.put(_STOP)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)


class _Mp4Writer(_Worker):
    def __init__(self, path: Path, fps: float) -> None:
        super().__init__(f"unison-record:{path.name}")
        import av

        self.container = av.open(str(path), mode="w")
        self.fps = fps
        self.video: Any = None
        self.audio: Any = None
        self.frames = 0
        self._last_vpts = -1
        self._next_apts = 0

    def _open_video(self, width: int, height: int) -> None:
        import av

        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self.video = self.container.add_stream(codec, rate=Fraction(self.fps).limit_denominator())
        self.video.width, self.video.height = width - width % 2, height - height % 2
        self.video.pix_fmt = "yuv420p"
        self.video.time_base = Fraction(1, 90000)
        self.audio = self.container.add_stream("aac", rate=48000, layout="mono")

    def handle(self, item: Any) -> None:
        import av

        if isinstance(item, VideoFrame):
            h, w = item.image.shape[:2]
            if self.video is None:
                self._open_video(w, h)
            img = np.ascontiguousarray(item.image[: self.video.height, : self.video.width])
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            pts = max(round(item.time_s * 90000), self._last_vpts + 1)
            vf.pts, vf.time_base = pts, Fraction(1, 90000)
            self._last_vpts = pts
            self.container.mux(self.video.encode(vf))
            self.frames += 1
        elif isinstance(item, AudioFrame) and self.audio is not None:
            pcm = np.clip(item.samples * 32768.0, -32768, 32767).astype(np.int16)[None, :]
            af = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            af.sample_rate = item.sample_rate
            af.pts, af.time_base = self._next_apts, Fraction(1, item.sample_rate)
            self._next_apts += pcm.shape[1]
            self.container.mux(self.audio.encode(af))

    def finish(self) -> None:
        try:
            if self.video is not None:
                self.container.mux(self.video.encode(None))
                self.container.mux(self.audio.encode(None))
        finally:
            self.container.close()


def stem_paths(path: str | Path) -> tuple[Path, Path, Path]:
    """The WAVs ``record(path, stems=True)`` writes beside ``path``: the mix, its speech, its
    effects (``x.mp4`` → ``x.wav``, ``x.speech.wav``, ``x.sfx.wav``; as ``render --stems``)."""
    p = Path(path)
    return p.with_suffix(".wav"), p.with_suffix(".speech.wav"), p.with_suffix(".sfx.wav")


class _WavWriter(_Worker):
    """(first sample, (N,) float32) pieces → a 16-bit mono WAV; a gap is written as silence,
    a sample already written is not written again."""

    def __init__(self, path: Path, sample_rate: int) -> None:
        super().__init__(f"unison-record:{path.name}")
        self.wav = wave.open(str(path), "wb")  # noqa: SIM115  # closed by finish()
        self.wav.setnchannels(1)
        self.wav.setsampwidth(2)
        self.wav.setframerate(sample_rate)
        self.written = 0  # samples in the file

    def handle(self, item: Any) -> None:
        start, samples = item
        if start > self.written:
            self.wav.writeframes(np.zeros(start - self.written, "<i2").tobytes())
            self.written = start
        new = samples[self.written - start :]
        s16 = np.clip(np.round(new * 32768.0), -32768, 32767).astype("<i2")
        self.wav.writeframes(s16.tobytes())
        self.written += len(new)

    def finish(self) -> None:
        self.wav.close()


class Recorder:
    """Writes the avatar's video + audio to an mp4 until :meth:`stop` (or the ``async with``
    block) ends. ``frames`` counts video frames written. ``wavs``: (path, audio) pairs also
    written as WAVs, all from one origin — the pts of the first frame any of them delivered
    (earlier frames are dropped, a track that starts later begins with silence)."""

    def __init__(
        self,
        path: str | Path,
        video: Subscription[VideoFrame],
        audio: Subscription[AudioFrame],
        *,
        fps: float,
        tasks: Any,
        wavs: Sequence[tuple[Path, Subscription[AudioFrame]]] = (),
    ) -> None:
        self.path = Path(path)
        self._subs: list[Subscription[Any]] = [video, audio, *(sub for _, sub in wavs)]
        self._writer = _Mp4Writer(self.path, fps)
        self._wavs = [_WavWriter(p, 48000) for p, _ in wavs]
        self._origin: int | None = None  # the WAVs' first pts
        for w in (self._writer, *self._wavs):
            w.start()
        self._pumps = [
            tasks.create(self._pump(video), name="record-video"),
            tasks.create(self._pump(audio), name="record-audio"),
            *(
                tasks.create(self._pump_wav(sub, w), name=f"record-{p.name}")
                for (p, sub), w in zip(wavs, self._wavs, strict=True)
            ),
        ]
        self._stopped = False

    @property
    def frames(self) -> int:
        return self._writer.frames

    async def _pump(self, sub: Subscription[Any]) -> None:
        async for item in sub:
            self._writer.submit(item)

    async def _pump_wav(self, sub: Subscription[AudioFrame], writer: _WavWriter) -> None:
        async for frame in sub:  # on the event loop: the first frame of any track sets origin
            if self._origin is None:
                self._origin = frame.pts
            if frame.pts + len(frame.samples) > self._origin:
                start = frame.pts - self._origin
                writer.submit((max(0, start), frame.samples[max(0, -start) :]))

    async def stop(self) -> Path:
        """Finish the files and return the mp4's path (idempotent). Cancelling it is not
        safe: the file may be left without its index; let it finish."""
        if not self._stopped:
            self._stopped = True
            for sub in self._subs:
                sub.close()
            await asyncio.gather(*self._pumps, return_exceptions=True)
            for w in (self._writer, *self._wavs):
                await w.join()
            for w in (self._writer, *self._wavs):
                if w.error is not None:
                    raise RuntimeError(f"recording {self.path} failed") from w.error
        return self.path

    async def __aenter__(self) -> Recorder:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def check_output_device() -> Any:
    """Import sounddevice and find an output device; raise :class:`PlaybackUnavailable`."""
    try:
        import sounddevice as sd
    except (ImportError, OSError) as e:
        raise PlaybackUnavailable(
            f"audio playback needs sounddevice and the PortAudio library ({e}); "
            "install 'unison-sdk[play]' and libportaudio2, or use record() / audio_frames()"
        ) from e
    try:
        sd.query_devices(kind="output")
    except Exception as e:  # sounddevice raises PortAudioError or ValueError
        raise PlaybackUnavailable(
            f"no audio output device on this machine ({e}); "
            "use avatar.record('out.mp4') or avatar.audio_frames() instead"
        ) from e
    return sd


class _SpeakerWriter(_Worker):
    def __init__(self, sd: Any, sample_rate: int) -> None:
        super().__init__("unison-play")
        self.stream = sd.OutputStream(samplerate=sample_rate, channels=1, dtype="float32")
        self.stream.start()

    def handle(self, item: Any) -> None:
        self.stream.write(np.ascontiguousarray(item.samples, dtype=np.float32)[:, None])

    def finish(self) -> None:
        self.stream.stop()
        self.stream.close()


class Player:
    """Plays the avatar's audio on the default output device until :meth:`stop`."""

    def __init__(self, audio: Subscription[AudioFrame], *, tasks: Any, sample_rate: int) -> None:
        sd = check_output_device()
        self._audio = audio
        self._writer = _SpeakerWriter(sd, sample_rate)
        self._writer.start()
        self._pump = tasks.create(self._run(), name="play")
        self._stopped = False

    async def _run(self) -> None:
        async for frame in self._audio:
            self._writer.submit(frame)

    async def stop(self) -> None:
        """Stop playback (idempotent; cancelling it is safe)."""
        if not self._stopped:
            self._stopped = True
            self._audio.close()
            await asyncio.gather(self._pump, return_exceptions=True)
            await self._writer.join()

    async def __aenter__(self) -> Player:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
