"""One task manager per owner: every background task is created, named and cancelled here.

Pipecat's habit (STYLE.md), used by the client and the server alike (``unison_stream.server``
imports it): an owner never calls ``asyncio.create_task`` directly, so closing it can cancel
and await everything it started, and a test can assert that nothing is left behind. A task
that dies with an exception is logged, never silently lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["TaskManager"]

log = logging.getLogger(__name__)


class TaskManager:
    """Owns named asyncio tasks; :meth:`close` cancels and awaits them all (idempotent)."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    def create(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        if self._closed:
            coro.close()
            raise RuntimeError(f"task manager of {self.owner} is closed; cannot start {name}")
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.owner}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("[%s] task %s failed", self.owner, task.get_name(), exc_info=task.exception())

    async def cancel(self, task: asyncio.Task[Any]) -> None:
        """Cancel one task and wait for it (safe on a finished task, a no-op on the caller's)."""
        if task is asyncio.current_task():
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        """Cancel and await every task except the caller's own; idempotent."""
        self._closed = True
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
