"""When a stream's next utterance may start playing: the buffer policy, on the stream's side.

The stream knows when its worker could start on each chunk (its queue had room and the
utterance was planned) and when the chunk was decoded, so it measures its own production —
media seconds made per second of making them, and their jitter — and decides, once per chunk
boundary the consumer asks at, whether an utterance's first chunk may start
(``docs/server.md``, "Buffer policy"):

- an utterance of ``D`` seconds made at ``rate`` × real time, whose chunks last ``d``, plays
  through without a gap when its start waits ``(D − d)(1/rate − 1)`` after its first chunk came,
  plus the measured jitter (at most ``max_prebuffer_s``);
- it starts earlier when the whole utterance is made, or when the queue is full (nothing more
  could arrive);
- while it waits, the worker may make ahead what arrives meanwhile (``ahead``), and back to the
  consumer's buffer once the reply is done.

Pure and sans-I/O: times are passed in (``time.monotonic`` seconds), so tests drive it on a
simulated clock.
"""

from __future__ import annotations

import logging
import math
from collections import deque

from unison_stream.engine.types import Held

__all__ = ["RATE_WINDOW", "Readiness"]

log = logging.getLogger(__name__)

RATE_WINDOW = 12  # chunks the production rate and its jitter are measured over
MAX_AHEAD_S = 60.0  # the most media a prebuffer lets the worker make ahead


class Readiness:
    """One stream's buffer policy (module docstring); the stream calls it under its lock."""

    def __init__(self, chunk_s: float, frame_s: float, *, ahead: int) -> None:
        self.chunk_s, self.frame_s = chunk_s, frame_s
        self.base_ahead = ahead  # chunks made ahead of the consumer outside a prebuffer
        self.ahead = ahead  # chunks the worker may make ahead now
        self.max_prebuffer_s = 4.0
        self.wait_s = 0.0  # the current (or last) utterance's planned wait
        self.planned: str | None = None  # the utterance the wait was planned for
        # chunks taken: (seconds the worker took for one, media seconds it holds)
        self._rates: deque[tuple[float, float]] = deque(maxlen=RATE_WINDOW)

    def configure(self, *, ahead_s: float, max_prebuffer_s: float) -> None:
        """The consumer's buffer: ``ahead_s`` of media made ahead, at most ``max_prebuffer_s``
        of waiting before an utterance starts."""
        self.base_ahead = max(1, math.ceil(ahead_s / self.chunk_s - 1e-9))
        self.ahead = self.base_ahead
        self.max_prebuffer_s = max_prebuffer_s

    def taken(self, took_s: float, *, idle: bool) -> None:
        """A chunk was handed to the consumer; making it took ``took_s`` seconds."""
        self._rates.append((took_s, self.chunk_s))
        if idle:  # no utterance waits: back to the consumer's buffer
            self.planned = None
            self.ahead = self.base_ahead

    @property
    def rates(self) -> list[tuple[float, float]]:
        """(seconds taken, media seconds) of the chunks measured, oldest first."""
        return list(self._rates)

    def production(self) -> tuple[float, float]:
        """(rate, jitter_s): media seconds made per second of making them (from the moment the
        worker could start on a chunk to the moment it was decoded), and how much longer than
        it lasts the slowest chunk of the window took beyond the mean (0 for an even pace)."""
        if not self._rates:
            return 1.0, 0.0
        took = sum(w for w, _ in self._rates)
        made = sum(d for _, d in self._rates)
        rate = made / took if took > 1e-6 else float("inf")
        late = [w - d for w, d in self._rates]  # > 0: took longer than it lasts
        jitter = max(0.0, max(late) - max(0.0, sum(late) / len(late)))
        return rate, jitter

    def may_start(
        self, uid: str, *, utterance_s: float, made_at: float, made: int, queued: int, now: float
    ) -> Held | None:
        """None when the utterance ``uid`` whose first chunk heads the queue may start: that
        chunk (made at ``made_at``) has waited long enough, its ``made`` chunks queued hold
        the whole utterance, or the ``queued`` chunks fill the queue; else why it is held."""
        if uid != self.planned:
            self.planned = uid
            self._plan(utterance_s, uid)
        if (
            now - made_at >= self.wait_s - 1e-9
            or made * self.chunk_s >= utterance_s - 0.5 * self.frame_s
            or queued >= max(1, self.ahead)
        ):
            return None
        return Held(uid, self.wait_s)

    def _plan(self, utterance_s: float, uid: str) -> None:
        """The wait before an utterance of ``utterance_s`` starts, and how far ahead the worker
        may make chunks meanwhile."""
        rate, jitter = self.production()
        d = self.chunk_s
        # chunk k (of length d) comes k·d/rate after the first and plays k·d after the start:
        # the start waits (D − d)(1/rate − 1) after the first chunk came, plus the jitter
        slow = max(0.0, utterance_s - d) * max(0.0, 1.0 / max(rate, 1e-3) - 1.0)
        self.wait_s = min(self.max_prebuffer_s, slow + jitter)
        log.info(
            "buffer policy for %s: production %.2f× real time, jitter %.0f ms → wait %.0f ms (%s)",
            uid,
            rate,
            1000 * jitter,
            1000 * self.wait_s,
            " ".join(f"{1000 * (w - m):+.0f}" for w, m in self._rates),  # ms late per chunk
        )
        hold_s = d + self.wait_s * min(rate, 1e3)  # media that arrives meanwhile
        need = math.ceil(hold_s / d - 1e-9) + 1
        self.ahead = max(self.base_ahead, min(need, math.ceil(MAX_AHEAD_S / d)))
