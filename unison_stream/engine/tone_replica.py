"""A model replica with no model: a tone where the plan has words, a test pattern for video.

:class:`ToneReplica` stands where :class:`~unison_stream.engine.replica.LocalReplica` stands —
the engine's worker sends it the same :class:`~unison_stream.engine.replica.StepRequest` and
gets back the same :class:`~unison_stream.engine.replica.Decoded` rows — so everything above
the replica (the worker, grouping, the stream's queue, timeline, events, interrupt, the
``failed`` path) is the production code. Used by the server tests, ``serve --engine fake``
(UI work without a model) and ``bench serve --engine fake``
(:mod:`~unison_stream.server.fake_engine` builds the engine around it).

What a row's chunk holds:

- **speech**: a 440 Hz tone at half scale over the spans of the chunk's plan window that hold
  phonemes (``SILENCE_ID < id < FIRST_EVENT_ID``), silence elsewhere — audible and easy to
  detect; the audio-driven mode replaces it with the caller's speech, as with the model;
- **sfx** (configs with an effects stream): a click — a 2 kHz burst decaying over 10 ms — at
  the start of each event token (``id ≥ FIRST_EVENT_ID``, a ``<tag>``) that starts in the
  chunk's window, silence elsewhere; the engine's mixer adds it to the speech as it adds the
  model's effects (``docs/stems.md``);
- **video**: a grey frame tinted by the session's seed, a white column moving one pixel a frame
  (motion is visible) and a bright "mouth" bar on frames whose span holds a phoneme.

Pace and faults: each step takes ``step_s`` of wall time (a wait that a ``cancel`` ends at
once, as the real core abandons a step before its commit) plus ``cpu_s`` of CPU time per row
(a busy loop holding the GIL: a compute-bound replica for ``bench cluster``); ``fail_steps``
makes that many next steps raise, which the engine reports as the model's own faults (its
``failed`` event, the sessions re-sink).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from unison_stream.config import UnisonConfig
from unison_stream.engine.replica import Decoded, Replica, ReplicaError, StepRequest
from unison_stream.model.generator import ChunkCancelled
from unison_stream.vocab import FIRST_EVENT_ID, SILENCE_ID

__all__ = ["CLICK_HZ", "TONE_HZ", "ToneReplica"]

TONE_HZ = 440.0
TONE_LEVEL = 0.5  # amplitude of the tone
CLICK_HZ = 2000.0  # an effect's click: well above the tone, so the two are told apart
CLICK_LEVEL = 0.6  # its peak amplitude
CLICK_S = 0.01  # its length; it decays to zero over it
GREY = 96  # the frame's base value; the seed adds a tint of 8 per step (mod 8)


@dataclass
class _Row:
    seed: int
    index: int = 0  # chunks this row has committed (0: the next one is its sink)


class ToneReplica(Replica):
    """The replica contract (``open``, ``close``, ``reset``, ``step``, ``cancel``) with no
    model; thread-safe for one caller plus ``cancel`` from any thread."""

    def __init__(self, cfg: UnisonConfig, *, step_s: float = 0.0, cpu_s: float = 0.0) -> None:
        self.cfg, self.device, self.dtype = cfg, "cpu", "float32"
        self.step_s, self.cpu_s = step_s, cpu_s
        self.fail_steps = 0  # fault injection: this many next steps raise
        self.opened = 0  # sessions ever opened (tests count churn)
        self.steps = 0  # steps that returned media
        self._rows: dict[str, _Row] = {}
        self._cancelled = threading.Event()
        self._cancel_id = -1
        self._lock = threading.Lock()
        m = cfg.media
        chunk_s = cfg.chunk_seconds()
        self._frames = round(chunk_s * m.fps)  # F video frames a chunk
        self._samples = round(chunk_s * m.sample_rate)  # S audio samples a chunk

    # ---- the replica contract -------------------------------------------------------------
    def call(self, op: str, *args: Any) -> Any:
        if op == "open":
            session, seed = args[0], args[1]
            with self._lock:
                self._rows[session] = _Row(seed)
                self.opened += 1
            return None
        if op == "close":
            with self._lock:
                self._rows.pop(args[0], None)
            return None
        if op == "reset":
            with self._lock:
                if (row := self._rows.get(args[0])) is not None:
                    row.index = 0
            return None
        if op == "step":
            return self._step(args[0])
        if op == "timings":
            return []
        raise ValueError(f"unknown replica call {op!r}")

    def cancel(self, step_id: int) -> None:
        self._cancel_id = step_id
        self._cancelled.set()

    # ---- one batched step -----------------------------------------------------------------
    def _step(self, req: StepRequest) -> list[Decoded | None]:
        self._cancelled.clear()
        if self.step_s > 0:  # a cancel ends the wait: nothing of the step is committed
            self._cancelled.wait(self.step_s)
        if self._cancel_id == req.step_id:
            raise ChunkCancelled(f"step {req.step_id} cancelled")
        end = time.thread_time() + self.cpu_s * len(req.sessions)
        while time.thread_time() < end:  # pure Python: holds the GIL, one core
            pass
        if self.fail_steps > 0:
            self.fail_steps -= 1
            for s in req.sessions:
                self.call("reset", s)
            raise ReplicaError("RuntimeError: injected replica failure")
        generated = time.monotonic()
        out: list[Decoded | None] = []
        for b, (session, decode) in enumerate(zip(req.sessions, req.decode, strict=True)):
            with self._lock:
                row = self._rows[session]
                k = row.index
                row.index += 1
            if not decode:  # the sink: committed, never shown
                out.append(None)
                continue
            speaking = self._speaking(req, b)  # (S,) bool
            video = self._video(row.seed, k, speaking)
            t = (k * self._samples + np.arange(self._samples)) / self.cfg.media.sample_rate
            tone = (TONE_LEVEL * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)
            speech = np.where(speaking, tone, np.float32(0.0)).astype(np.float32)
            sfx = self._clicks(req, b) if self.cfg.audio_streams() == 2 else None
            out.append(Decoded(video, speech, sfx, generated, time.monotonic()))
        self.steps += 1
        return out

    def _speaking(self, req: StepRequest, b: int) -> np.ndarray:
        """(S,) bool: the samples of row ``b``'s chunk that a phoneme of its window covers."""
        c = req.plan.cond
        rate = self.cfg.media.sample_rate
        mask = np.zeros(self._samples, bool)
        valid = c.track_mask[b].numpy()
        ids = c.track_ids[b].numpy()[valid]
        starts = c.track_start[b].float().numpy()[valid]
        ends = c.track_end[b].float().numpy()[valid]
        for i, s, e in zip(ids, starts, ends, strict=True):
            if SILENCE_ID < i < FIRST_EVENT_ID:
                lo, hi = max(0, round(s * rate)), min(self._samples, round(e * rate))
                mask[lo:hi] = True
        return mask

    def _clicks(self, req: StepRequest, b: int) -> np.ndarray:
        """(S,) float32: a click at the start of each event token of row ``b``'s window."""
        c = req.plan.cond
        rate = self.cfg.media.sample_rate
        out = np.zeros(self._samples, np.float32)
        valid = c.track_mask[b].numpy()
        ids = c.track_ids[b].numpy()[valid]
        starts = c.track_start[b].float().numpy()[valid]
        n = round(CLICK_S * rate)
        t = np.arange(n) / rate
        click = CLICK_LEVEL * np.sin(2 * np.pi * CLICK_HZ * t) * np.linspace(1.0, 0.0, n)  # (n,)
        for i, s in zip(ids, starts, strict=True):
            lo = round(s * rate)
            if i >= FIRST_EVENT_ID and 0 <= lo < self._samples:
                hi = min(self._samples, lo + n)
                out[lo:hi] = click[: hi - lo]
        return out

    def _video(self, seed: int, k: int, speaking: np.ndarray) -> np.ndarray:
        """(F, H, W, 3) uint8 test pattern of chunk ``k``."""
        m = self.cfg.media
        f = self._frames
        video = np.full((f, m.height, m.width, 3), GREY + 8 * (seed % 8), np.uint8)
        per_frame = self._samples // f
        for i in range(f):
            video[i, :, (k * f + i) % m.width] = 255  # one column a frame: motion
            if speaking[i * per_frame : (i + 1) * per_frame].any():
                h, w = m.height, m.width
                video[i, 2 * h // 3 : 2 * h // 3 + max(2, h // 16), w // 4 : 3 * w // 4] = 250
        return video
