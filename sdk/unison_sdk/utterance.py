"""An utterance the client asked for: awaitable until it finished or was interrupted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import Any

from unison_sdk.protocol import UtteranceEvent

__all__ = ["Utterance"]

TERMINAL = ("finished", "interrupted")


class Utterance:
    """One ``say`` / ``say_audio``. ``await utt`` waits until it ``finished`` or was
    ``interrupted`` and returns it (cancelling that wait is safe: the utterance goes on);
    a server error about it raises its typed :class:`~unison_sdk.errors.ServerError`.
    ``async for ev in utt`` follows its events from the first; ``utt.events`` holds those seen."""

    def __init__(self, uid: str, text: str | None, resend: Callable[[], Awaitable[None]]) -> None:
        self.id, self.text = uid, text
        self.events: list[UtteranceEvent] = []
        self._resend = resend
        loop = asyncio.get_running_loop()
        self._queued: asyncio.Future[None] = loop.create_future()
        self._done: asyncio.Future[Utterance] = loop.create_future()
        self._changed = asyncio.Event()

    @property
    def outcome(self) -> str | None:
        """``finished`` / ``interrupted`` once done, else ``None``."""
        last = self.events[-1].event if self.events else None
        return last if last in TERMINAL else None

    @property
    def queued(self) -> bool:
        return self._queued.done() and self._queued.exception() is None

    def done(self) -> bool:
        return self._done.done()

    # ---- fed by the client ---------------------------------------------------------------
    def _event(self, ev: UtteranceEvent) -> None:
        self.events.append(ev)
        self._changed.set()
        if not self._queued.done():
            self._queued.set_result(None)
        if ev.event in TERMINAL and not self._done.done():
            self._done.set_result(self)

    def _fail(self, exc: BaseException) -> None:
        for fut in (self._queued, self._done):
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # mark retrieved: a caller may never await both
        self._changed.set()

    # ---- awaiting --------------------------------------------------------------------------
    def __await__(self) -> Generator[Any, None, Utterance]:
        return asyncio.shield(self._done).__await__()

    async def wait_queued(self) -> None:
        await asyncio.shield(self._queued)

    async def __aiter__(self) -> AsyncIterator[UtteranceEvent]:
        i = 0
        while True:
            while i < len(self.events):
                i += 1
                yield self.events[i - 1]
            if self._done.done():
                if self._done.exception() is not None:
                    raise self._done.exception()  # type: ignore[misc]  # checked not None
                return
            self._changed.clear()
            await self._changed.wait()

    def __repr__(self) -> str:
        state = self.outcome or (self.events[-1].event if self.events else "sent")
        return f"Utterance({self.id!r}, {state})"
