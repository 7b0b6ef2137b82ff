"""Streamed speech input: an utterance whose audio is written while the avatar speaks it.

For voice agents whose TTS streams: ``Avatar.say_audio_stream(sample_rate=…)`` sends
``audio_begin`` with ``stream: true`` and returns a :class:`SpeechStream` once the server has
queued the utterance; each :meth:`SpeechStream.write` sends PCM16 parts that the server speaks
as they arrive (``docs/protocol.md``, "Streamed audio"); :meth:`SpeechStream.end` (or leaving
``async with``) says there is no more. After an interrupt the server drops what follows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType

import numpy as np

from unison_sdk.media import pcm16
from unison_sdk.utterance import Utterance

__all__ = ["SpeechStream"]


class SpeechStream:
    """The writer of one streamed utterance; ``utterance`` follows its events as usual."""

    def __init__(
        self,
        utterance: Utterance,
        sample_rate: int,
        *,
        send: Callable[..., Awaitable[None]],
        end_msg: str,
        part_bytes: int,
    ) -> None:
        self.utterance, self.sample_rate = utterance, sample_rate
        self._send, self._end_msg, self._part = send, end_msg, part_bytes
        self.ended = False

    async def write(self, pcm: np.ndarray) -> None:
        """Send mono speech: float in [-1, 1] or int16, at the stream's ``sample_rate``."""
        if self.ended:
            raise ValueError("write after end()")
        raw = pcm16(pcm).astype("<i2").tobytes()
        await self._send(*(raw[i : i + self._part] for i in range(0, len(raw), self._part)))

    async def end(self) -> None:
        """No more speech (idempotent): the utterance finishes with what was written."""
        if not self.ended:
            self.ended = True
            await self._send(self._end_msg)

    async def __aenter__(self) -> SpeechStream:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.end()
