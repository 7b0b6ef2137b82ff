"""A small blocking wrapper for scripts and notebooks: the async client on a private loop.

::

    with connect_sync("http://127.0.0.1:8080", api_key=KEY) as avatar:
        avatar.say("Hello!")                  # blocks until finished or interrupted
        avatar.record("hello.mp4", seconds=3)

It runs its own event loop in a daemon thread, so it also works inside Jupyter (whose own loop
is already running).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

from unison_sdk.client import Avatar
from unison_sdk.connect import connect
from unison_sdk.protocol import (
    ClientState,
    ConnectionEvent,
    ErrorEvent,
    Event,
    StateEvent,
    StatsEvent,
    UtteranceEvent,
)

__all__ = ["SyncAvatar", "connect_sync"]

T = TypeVar("T")
EVENT_TYPES = (UtteranceEvent, StateEvent, StatsEvent, ErrorEvent, ConnectionEvent)


class SyncAvatar:
    """Blocking counterpart of :class:`~unison_sdk.client.Avatar` (see :func:`connect_sync`)."""

    def __init__(self, url: str, **kw: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._closed = False
        try:
            self._avatar: Avatar = self._call(self._open(url, kw))
            self._events = self._call(self._subscribe())
        except BaseException:
            self._stop_loop()
            raise

    async def _open(self, url: str, kw: dict[str, Any]) -> Avatar:
        return await connect(url, **kw)

    async def _subscribe(self) -> Any:
        return self._avatar.events()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def session_id(self) -> str:
        return self._avatar.session_id

    def say(
        self, text: str, *, interrupt: bool = False, wait: bool = True, timeout: float = 120.0
    ) -> list[UtteranceEvent]:
        """Say ``text``; with ``wait`` block until it finished or was interrupted. Returns the
        utterance's events so far (``[-1].event`` is ``finished`` / ``interrupted`` when done)."""

        async def go() -> list[UtteranceEvent]:
            utt = await self._avatar.say(text, interrupt=interrupt)
            if wait:
                await asyncio.wait_for(utt, timeout)
            return list(utt.events)

        return self._call(go())

    def say_audio(
        self, audio: np.ndarray | str | Path, *, sample_rate: int | None = None, wait: bool = True
    ) -> list[UtteranceEvent]:
        async def go() -> list[UtteranceEvent]:
            utt = await self._avatar.say_audio(audio, sample_rate=sample_rate)
            if wait:
                await utt
            return list(utt.events)

        return self._call(go())

    def interrupt(self) -> None:
        self._call(self._avatar.interrupt())

    def set_state(self, state: ClientState) -> None:
        self._call(self._avatar.set_state(state))

    def record(self, path: str | Path, *, seconds: float, stems: bool = False) -> Path:
        """Record ``seconds`` of video + audio to an mp4 (blocks for that long); ``stems``:
        the mix and its stems as WAVs beside it too (``Avatar.record``)."""

        async def go() -> Path:
            rec = self._avatar.record(path, stems=stems)
            await asyncio.sleep(seconds)
            return await rec.stop()

        return self._call(go())

    def events(self) -> list[Event]:
        """Events received since the last call (non-blocking)."""

        async def drain() -> list[Event]:
            out: list[Event] = []
            q = self._events._queue
            while not q.empty():
                item = q.get_nowait()
                if isinstance(item, EVENT_TYPES):
                    out.append(item)
            return out

        return self._call(drain())

    def close(self) -> None:
        """End the session and stop the loop thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._call(self._avatar.close(), timeout=10.0)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> SyncAvatar:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def connect_sync(url: str, **kw: Any) -> SyncAvatar:
    """Blocking :func:`~unison_sdk.client.connect` (same keyword options)."""
    return SyncAvatar(url, **kw)
