"""Event-loop lag: how late a 10 ms ticker wakes, the figure that says whether anything heavy
runs on the loop (every session's media is paced by it; docs/server.md "Latency budget").

A task sleeps ``tick_s`` and records how much later than asked it woke, in a window of the
most recent ``window`` ticks; ``/metrics`` and ``/healthz`` report its p50 / p99 / max.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

import numpy as np

__all__ = ["LoopLag"]

TICK_S = 0.010
WINDOW = 3000  # ticks kept (≈ 30 s at 10 ms)


class LoopLag:
    def __init__(self, *, tick_s: float = TICK_S, window: int = WINDOW) -> None:
        self.tick_s = tick_s
        self._lag_ms: deque[float] = deque(maxlen=window)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(self.tick_s)
            self._lag_ms.append(max(0.0, (loop.time() - t - self.tick_s) * 1000.0))

    def reset(self) -> None:
        """Forget the window (a benchmark measures one phase at a time)."""
        self._lag_ms.clear()

    def summary(self) -> dict[str, float]:
        """``{"p50": ms, "p99": ms, "max": ms, "ticks": n}`` of the window (zeros when empty)."""
        if not self._lag_ms:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0, "ticks": 0.0}
        x = np.fromiter(self._lag_ms, np.float64)
        p50, p99 = np.percentile(x, [50, 99])
        return {"p50": float(p50), "p99": float(p99), "max": float(x.max()), "ticks": float(x.size)}
