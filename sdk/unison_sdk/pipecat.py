"""A Pipecat video service: the avatar speaks a Pipecat bot's TTS (``pip install pipecat-ai``).

:class:`UnisonVideoService` sits after the TTS in a Pipecat pipeline. It streams the TTS audio
frames to a unison-stream server (``say_audio_stream``: speech is spoken as it arrives) and
pushes downstream what the avatar plays, in sync: :class:`~pipecat.frames.frames.
OutputImageRawFrame` video at the server's 25 fps (idle motion included) and the avatar's
audio as :class:`~pipecat.frames.frames.TTSAudioRawFrame` (48 kHz mono: the TTS speech plus
any effects) while an utterance plays. The TTS's own audio frames are consumed, not passed on,
so the output transport plays the avatar's audio and video from one clock.

- ``TTSStartedFrame`` / the first ``TTSAudioRawFrame`` opens a stream, ``TTSStoppedFrame``
  ends it; Pipecat's ``InterruptionFrame`` interrupts the avatar (speech stops at the next
  chunk boundary) and drops what the TTS still sends of that reply.
- ``BotStartedSpeakingFrame`` / ``BotStoppedSpeakingFrame`` are pushed (both directions) from
  the avatar's ``started`` / ``finished`` | ``interrupted`` events, i.e. when the user hears it.
- Audio frames are gated by their pts: those inside an utterance's span go out — from the
  ``started`` event's ``audio_pts`` to the ``interrupted`` one's, or to the start plus the
  utterance's media length at ``finished``; a short ring of recent frames covers events that
  arrive after their first audio. Both kinds carry ``metadata["unison_time_s"]``, their
  media time on one clock (a recorder lines audio up with video by it).

The connection (``unison_sdk.connect``) resumes by itself after a dropped websocket; a say in
flight is resent. Decisions and limits: ``docs/pipecat.md``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

import numpy as np
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputImageRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from unison_sdk.client import Avatar
from unison_sdk.connect import connect
from unison_sdk.media import AudioFrame, pcm16
from unison_sdk.protocol import AvatarInfo, UtteranceEvent
from unison_sdk.speech_stream import SpeechStream

__all__ = ["UnisonVideoService"]

log = logging.getLogger(__name__)
AUDIO_RATE = 48000  # the WebRTC audio the avatar sends (pts units)
RING_FRAMES = 25  # 0.5 s of 20 ms audio frames kept for events that come after their audio


class UnisonVideoService(FrameProcessor):
    """Pipecat frame processor driving a unison-stream avatar (module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        identity: int = 0,
        avatar: str | AvatarInfo | Any | None = None,
        caption: str = "",
        **kwargs: Any,
    ) -> None:
        """``avatar``: who the video shows instead of world ``identity`` — a stored avatar's
        id or record, or a picture (path, bytes, PIL image), as :func:`~unison_sdk.connect`
        takes it (docs/avatars.md)."""
        super().__init__(**kwargs)
        self._url, self._api_key = url, api_key
        self._identity, self._caption, self._person = identity, caption, avatar
        self._avatar: Avatar | None = None
        self._stream: SpeechStream | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ring: collections.deque[AudioFrame] = collections.deque(maxlen=RING_FRAMES)
        # [start, end) audio pts of utterances (end inf: still playing), and where each
        # started on the session's media clock (finished events carry only that clock)
        self._spans: list[list[float]] = []
        self._started_media_s = 0.0
        self._pushed = -1  # pts of the last audio frame pushed (keeps order)
        self.utterances = 0  # streams opened (for tests and logs)

    @property
    def avatar(self) -> Avatar | None:
        return self._avatar

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self._start()
            await self.push_frame(frame, direction)
        elif isinstance(frame, TTSStartedFrame):
            await self._end_stream()  # a reply the TTS never closed
            await self.push_frame(frame, direction)
        elif isinstance(frame, TTSAudioRawFrame):
            await self._write(frame)  # consumed: the avatar's own audio goes out instead
        elif isinstance(frame, TTSStoppedFrame):
            await self._end_stream()
            await self.push_frame(frame, direction)
        elif isinstance(frame, InterruptionFrame):
            if self._avatar is not None:
                await self._avatar.interrupt()
            await self._end_stream()  # the server drops what was still coming of it
            await self.push_frame(frame, direction)
        elif isinstance(frame, EndFrame | CancelFrame):
            await self._stop()
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    # ---- the avatar connection ------------------------------------------------------------
    async def _start(self) -> None:
        if self._avatar is not None:
            return
        self._avatar = await connect(
            self._url,
            api_key=self._api_key,
            identity=self._identity,
            avatar=self._person,
            caption=self._caption,
        )
        self._tasks = [
            asyncio.ensure_future(self._pump_video()),
            asyncio.ensure_future(self._pump_audio()),
            asyncio.ensure_future(self._pump_events()),
        ]

    async def _stop(self) -> None:
        await self._end_stream()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._avatar is not None:
            await self._avatar.close()
            self._avatar = None

    async def _write(self, frame: TTSAudioRawFrame) -> None:
        if self._avatar is None:
            return
        pcm = np.frombuffer(frame.audio, "<i2")
        if frame.num_channels > 1:  # the avatar speaks mono
            pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
        if self._stream is None:
            self._stream = await self._avatar.say_audio_stream(sample_rate=frame.sample_rate)
            self.utterances += 1
        await self._stream.write(pcm)

    async def _end_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.end()

    # ---- what the avatar plays → the pipeline ----------------------------------------------
    async def _pump_video(self) -> None:
        assert self._avatar is not None
        async for f in self._avatar.video_frames():
            h, w = f.image.shape[:2]
            out = OutputImageRawFrame(image=f.image.tobytes(), size=(w, h), format="RGB")
            out.metadata["unison_time_s"] = f.time_s  # media time since the stream's start
            await self.push_frame(out)

    async def _pump_audio(self) -> None:
        assert self._avatar is not None
        async for f in self._avatar.audio_frames():
            self._ring.append(f)
            if self._speaking(f.pts):
                await self._push_audio(f)

    async def _pump_events(self) -> None:
        assert self._avatar is not None
        async for ev in self._avatar.events():
            if not isinstance(ev, UtteranceEvent):
                continue
            if ev.event == "started" and ev.audio_pts is not None:
                self._spans.append([ev.audio_pts, float("inf")])
                self._started_media_s = ev.media_time_s
                for f in list(self._ring):  # audio that came before its event
                    if self._speaking(f.pts):
                        await self._push_audio(f)
                await self._both_ways(BotStartedSpeakingFrame)
            elif ev.event in ("finished", "interrupted") and self._open():
                length = (ev.media_time_s - self._started_media_s) * AUDIO_RATE
                end = ev.audio_pts if ev.audio_pts is not None else self._spans[-1][0] + length
                self._spans[-1][1] = end
                await self._both_ways(BotStoppedSpeakingFrame)
            self._spans = self._spans[-4:]

    def _open(self) -> bool:
        return bool(self._spans) and self._spans[-1][1] == float("inf")

    def _speaking(self, pts: int) -> bool:
        return pts > self._pushed and any(a <= pts < b for a, b in self._spans)

    async def _push_audio(self, f: AudioFrame) -> None:
        self._pushed = f.pts
        s16 = pcm16(f.samples).astype("<i2").tobytes()
        out = TTSAudioRawFrame(audio=s16, sample_rate=f.sample_rate, num_channels=1)
        out.metadata["unison_time_s"] = f.time_s  # on the video frames' clock
        await self.push_frame(out)

    async def _both_ways(self, kind: type[Frame]) -> None:
        await self.push_frame(kind())
        await self.push_frame(kind(), FrameDirection.UPSTREAM)
