"""One model replica: the model, each session's KV-cache row and streaming decoders.

The engine's worker thread plans and groups chunks; a replica runs them. :class:`ReplicaCore`
holds the model-side state and does the work (batched ``CausalGenerator.step`` and decode);
it is sans-I/O, called either

- in-process (:class:`LocalReplica`, ``runtime.replica: thread``), from the engine's worker
  thread, or
- in a **child process** (:class:`ProcessReplica`, ``runtime.replica: process``, the default),
  whose *main thread* runs it, fed over a socket pair. The child is a fresh interpreter
  (``python -c``), not ``multiprocessing``'s spawn, which re-imports the caller's main script
  and so breaks scripts without an ``if __name__ == "__main__"`` guard; messages are plain
  pickles (tensors copied, no shared-memory file descriptors).

Why a process: measured on the 2-core CPU, the same ``step`` of the tiny model is about 2×
slower when called from a non-main Python thread (bf16 232 → 460 ms; libgomp parallel regions
started from a non-initial thread). The child's main thread gets the speed ``bench model``
measures; a chunk's request and its decoded media (≈ 0.4 MB) cross the pipe in about a
millisecond. A child that dies (killed, out of memory) is restarted on the next call; the
sessions of that call fail their chunk and restart from their identity sink.

**Cancelling.** ``cancel(step_id)`` may be called from any thread while a step runs: the core
checks before each model call that precedes the commit and abandons the chunk
(:class:`~unison_stream.model.generator.ChunkCancelled`), its rows untouched. The engine uses it
when an interrupt or a newly planned utterance makes the chunk being made worthless, so the
next chunk starts at once instead of after a chunk time. In the child the check is a
non-blocking poll of the socket, where only cancels can arrive during a step.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import socket
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unison_stream.codecs import AudioDecoder, VideoDecoder, load_decoders
from unison_stream.config import UnisonConfig
from unison_stream.engine.batching import BatchStepper, Row
from unison_stream.model.checkpoint import default_model, load_model
from unison_stream.model.dit import UnisonDiT
from unison_stream.model.generator import ChunkCancelled, PlanSlice
from unison_stream.runtime import resolve_device, resolve_dtype

__all__ = [
    "Decoded",
    "LocalReplica",
    "ProcessReplica",
    "Replica",
    "ReplicaCore",
    "ReplicaError",
    "StepRequest",
    "make_replica",
]

log = logging.getLogger(__name__)
REPLICA_KINDS = ("process", "thread")


class ReplicaError(RuntimeError):
    """A step failed in the replica (the message carries the original error)."""


@dataclass
class StepRequest:
    """One batched chunk: rows are sessions (by id) in batch order."""

    sessions: list[str]
    plan: PlanSlice  # batch len(sessions)
    decode: list[bool]  # False: a sink chunk, committed but not decoded
    step_id: int = 0  # what ``cancel`` names


@dataclass
class Decoded:
    """One session's decoded chunk (the engine mixes and stamps it)."""

    video: np.ndarray  # (F, H, W, 3) uint8
    speech: np.ndarray  # (S,) float32
    sfx: np.ndarray | None  # (S,) float32, None for a single audio stream
    generated_at: float = 0.0  # time.monotonic() when the batched step returned (host-wide)
    decoded_at: float = 0.0  # time.monotonic() when this session's decode finished


@dataclass
class _Slot:
    row: Row
    video: VideoDecoder
    speech: AudioDecoder
    sfx: AudioDecoder


class ReplicaCore:
    """Model-side state of one replica (module docstring); not thread-safe: one caller."""

    def __init__(self, model: UnisonDiT) -> None:
        self.model = model
        self.cfg = model.cfg
        self.stepper = BatchStepper(model)
        self.slots: dict[str, _Slot] = {}
        # (generate ms, decode ms) of recent steps, for benchmarks (``timings``)
        self.step_ms: deque[tuple[float, float]] = deque(maxlen=1000)

    @classmethod
    def build(
        cls, cfg: UnisonConfig, checkpoint: Path | None, model: UnisonDiT | None
    ) -> ReplicaCore:
        """The model of ``checkpoint`` (or ``model``, or the bundled default) on the runtime's
        device and dtype, in inference mode."""
        if cfg.runtime.threads > 0:
            torch.set_num_threads(cfg.runtime.threads)
        device = resolve_device(cfg.runtime)
        dtype = resolve_dtype(cfg.runtime, device)
        if model is None:
            model = default_model(cfg) if checkpoint is None else load_model(checkpoint)
        return cls(model.to(device=device, dtype=dtype).eval())

    def info(self) -> dict[str, Any]:
        p = next(self.model.parameters())
        return {"cfg": self.cfg, "device": str(p.device), "dtype": str(p.dtype)}

    def open(self, session: str, seed: int, reference: np.ndarray | None = None) -> None:
        """A cache row and decoders for ``session``; ``reference`` ``(H, W, 3)`` uint8 is the
        person's picture, for a video decoder that copies identity details from it."""
        video, speech, sfx = load_decoders(self.cfg, 1)
        video.set_reference(reference)
        self.slots[session] = _Slot(Row(self.stepper.new_cache(), 0, seed), video, speech, sfx)

    def close(self, session: str) -> None:
        self.slots.pop(session, None)

    def reset(self, session: str) -> None:
        """Forget the session's history: its next chunk is its identity sink again."""
        slot = self.slots.get(session)
        if slot is None:
            return
        slot.row.cache.reset()
        slot.row.index = 0
        for d in (slot.video, slot.speech, slot.sfx):
            d.reset()

    def step(
        self, req: StepRequest, cancel: Callable[[], bool] | None = None
    ) -> list[Decoded | None]:
        """Generate, commit and decode the next chunk of every session of ``req``; on failure
        every session of the request is reset and the error raised (``ChunkCancelled``: the
        sessions are left as they were)."""
        slots = [self.slots[s] for s in req.sessions]
        try:
            t0 = time.perf_counter()
            out = self.stepper.step([s.row for s in slots], req.plan, cancel)
            t1, generated_at = time.perf_counter(), time.monotonic()
            res: list[Decoded | None] = []
            for b, (slot, dec) in enumerate(zip(slots, req.decode, strict=True)):
                if not dec:
                    res.append(None)
                    continue
                # decoders take CPU fp32 latents; tiny latents, cheap copy
                v = out.video[b : b + 1].float().cpu()
                a = out.audio[b : b + 1].float().cpu()  # (1, S, Nc, Ca)
                sfx = slot.sfx.decode(a[:, 1])[0] if a.shape[1] == 2 else None
                video, speech = slot.video.decode(v)[0], slot.speech.decode(a[:, 0])[0]
                res.append(Decoded(video, speech, sfx, generated_at, time.monotonic()))
            self.step_ms.append(((t1 - t0) * 1000, (time.perf_counter() - t1) * 1000))
            return res
        except ChunkCancelled:
            raise
        except Exception:
            for s in req.sessions:
                self.reset(s)
            raise

    def timings(self) -> list[tuple[float, float]]:
        """(generate ms, decode ms) of the steps since the last call (benchmarks)."""
        out = list(self.step_ms)
        self.step_ms.clear()
        return out

    def handle(
        self, op: str, args: tuple[Any, ...], cancel: Callable[[], bool] | None = None
    ) -> Any:
        """Dispatch one call by name (the process protocol)."""
        if op == "step":
            return self.step(args[0], cancel)
        if op == "timings":
            return self.timings()
        if op not in ("info", "open", "close", "reset"):
            raise ValueError(f"unknown replica call {op!r}")
        return getattr(self, op)(*args)


class Replica(ABC):
    """What the engine calls; ``index`` mirrors of the rows live in the engine."""

    cfg: UnisonConfig
    device: str
    dtype: str
    restarts: int = 0  # times the replica was restarted after dying (its rows were lost)
    pid: int | None = None  # the child process serving it, if any

    @abstractmethod
    def call(self, op: str, *args: Any) -> Any:
        """Run ``op`` (``open``, ``close``, ``reset``, ``step``) on the core; ReplicaError on
        failure, ChunkCancelled for a cancelled step."""

    def open(self, session: str, seed: int, reference: np.ndarray | None = None) -> None:
        self.call("open", session, seed, reference)

    def close_session(self, session: str) -> None:
        self.call("close", session)

    def reset(self, session: str) -> None:
        self.call("reset", session)

    def step(self, req: StepRequest) -> list[Decoded | None]:
        res: list[Decoded | None] = self.call("step", req)
        return res

    def timings(self) -> list[tuple[float, float]]:
        """(generate ms, decode ms) of each step since the last call, measured in the core."""
        res: list[tuple[float, float]] = self.call("timings")
        return res

    @abstractmethod
    def cancel(self, step_id: int) -> None:
        """Abandon step ``step_id`` if it is still running (any thread; never blocks on it)."""

    def shutdown(self) -> None:  # noqa: B027 — in-process replicas hold nothing to stop
        """Stop the replica (a child process); nothing to do in-process."""


class LocalReplica(Replica):
    """The core in this process, called from the engine's worker thread."""

    def __init__(self, core: ReplicaCore) -> None:
        self.core = core
        info = core.info()
        self.cfg, self.device, self.dtype = info["cfg"], info["device"], info["dtype"]
        self._cancelled = -1  # the step id last cancelled

    def call(self, op: str, *args: Any) -> Any:
        step_id = args[0].step_id if op == "step" else None
        try:
            return self.core.handle(op, args, lambda: self._cancelled == step_id)
        except ChunkCancelled:
            raise
        except Exception as e:
            raise ReplicaError(f"{type(e).__name__}: {e}") from e

    def cancel(self, step_id: int) -> None:
        self._cancelled = step_id


class ProcessReplica(Replica):
    """The core in a child interpreter whose main thread serves calls in order."""

    def __init__(self, cfg: UnisonConfig, checkpoint: Path | None, model: UnisonDiT | None) -> None:
        self._spec = (cfg, checkpoint, None if model is None else model.cpu())
        self._lock = threading.Lock()  # one call in flight
        self._send_lock = threading.Lock()  # calls and cancels share the socket
        # open sessions (seed, reference picture), replayed on restart
        self._sessions: dict[str, tuple[Any, ...]] = {}
        self.restarts = 0
        self._timeout_s = cfg.runtime.replica_timeout_s
        self._start()

    def _start(self) -> None:
        mine, theirs = socket.socketpair()
        fd = theirs.fileno()
        code = f"from unison_stream.engine.replica import serve_fd; serve_fd({fd})"
        self._proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=(fd,))
        theirs.close()
        self._conn = Connection(mine.detach())
        self.pid = self._proc.pid
        try:
            info = self._exchange("init", self._spec)
        except BaseException:  # a bad checkpoint, say: leave no child behind
            self._proc.kill()
            self._proc.wait()
            self._conn.close()
            raise
        self.cfg, self.device, self.dtype = info["cfg"], info["device"], info["dtype"]
        for sid, args in self._sessions.items():
            self._exchange("open", (sid, *args))

    def _exchange(self, op: str, args: tuple[Any, ...]) -> Any:
        with self._send_lock:
            _send(self._conn, (op, args))
        if self._timeout_s > 0 and not self._conn.poll(self._timeout_s):
            raise TimeoutError(f"replica answered no {op!r} for {self._timeout_s:g} s")
        status, value = _recv(self._conn)
        if status == "cancelled":
            raise ChunkCancelled
        if status != "ok":
            raise ReplicaError(value)
        return value

    def cancel(self, step_id: int) -> None:
        with self._send_lock, contextlib.suppress(OSError):
            _send(self._conn, ("cancel", (step_id,)))

    def call(self, op: str, *args: Any) -> Any:
        with self._lock:
            if op == "open":
                self._sessions[args[0]] = args[1:]
            elif op == "close":
                self._sessions.pop(args[0], None)
            try:
                return self._exchange(op, args)
            except (EOFError, OSError) as e:  # TimeoutError (hung) is an OSError too
                hung = isinstance(e, TimeoutError)
                if hung:
                    self._proc.kill()
                try:
                    code: int | None = self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    code = self._proc.wait()
                what = f"hung ({e})" if hung else f"died (exit code {code})"
                log.error("replica process %s: restarting it", what)
                self._conn.close()
                self.restarts += 1
                self._start()  # every session starts again from its identity sink
                raise ReplicaError(f"replica process {what}") from e

    def shutdown(self) -> None:
        """Ask the child to exit; kill it when it does not within 10 s, or when a call is still
        waiting on it after 10 s (a hung child must not hang the caller). Idempotent."""
        if not self._lock.acquire(timeout=10):
            log.error("replica busy at shutdown: killing the child")
            self._proc.kill()
            self._proc.wait()
            return
        try:
            with self._send_lock:
                with contextlib.suppress(OSError):
                    _send(self._conn, ("exit", ()))
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
                self._conn.close()
        finally:
            self._lock.release()


def _send(conn: Connection, msg: object) -> None:
    conn.send_bytes(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))


def _recv(conn: Connection) -> Any:
    return pickle.loads(conn.recv_bytes())


def _cancel_arrived(conn: Connection, step_id: int) -> bool:
    """During a step only cancels arrive: read them all; True if one names ``step_id``."""
    hit = False
    while conn.poll(0):
        op, args = _recv(conn)
        hit = hit or (op == "cancel" and args[0] == step_id)
    return hit


def serve_fd(fd: int) -> None:
    """The child's main loop on socket ``fd``: ``init`` builds the core, then every
    ``(op, args)`` is answered with ``(status, value)``, status ``ok``, ``error`` (value: the
    message) or ``cancelled``, until ``exit`` or EOF. Cancels of finished steps are ignored."""
    logging.basicConfig(level=logging.WARNING, format="replica %(levelname)s %(message)s")
    conn = Connection(fd)
    torch.set_grad_enabled(False)
    core: ReplicaCore | None = None
    while True:
        try:
            op, args = _recv(conn)
        except (EOFError, OSError, KeyboardInterrupt):
            return
        if op == "exit":
            return
        if op == "cancel":
            continue  # its step is over
        try:
            with torch.inference_mode():
                if op == "init":
                    core = ReplicaCore.build(*args)
                    value = core.info()
                elif core is None:
                    raise RuntimeError("replica not initialised")
                else:
                    step_id = args[0].step_id if op == "step" else -1
                    value = core.handle(op, args, partial(_cancel_arrived, conn, step_id))
            _send(conn, ("ok", value))
        except ChunkCancelled:
            _send(conn, ("cancelled", None))
        except Exception as e:
            log.exception("replica call %s failed", op)
            _send(conn, ("error", f"{type(e).__name__}: {e}"))


def make_replica(
    cfg: UnisonConfig, checkpoint: Path | None = None, model: UnisonDiT | None = None
) -> Replica:
    """``runtime.replica``: ``process`` (default) or ``thread``."""
    kind = cfg.runtime.replica
    if kind not in REPLICA_KINDS:
        raise ValueError(f"runtime.replica must be one of {REPLICA_KINDS}, not {kind!r}")
    if kind == "thread":
        return LocalReplica(ReplicaCore.build(cfg, checkpoint, model))
    return ProcessReplica(cfg, checkpoint, model)
