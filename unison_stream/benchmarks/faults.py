"""``unison-stream bench faults --json``: repeated faults against a served session
(docs/reliability.md "Faults"), the server a subprocess on 127.0.0.1 as in ``bench serve``.

Three phases, each skipped with ``--<phase> 0``:

- ``ws_drop`` (``--ws-drops N``, default 20): an SDK client reaches the server through a TCP
  relay on 127.0.0.1; each round says a sentence, and once it has ``started`` the relay aborts
  every connection (no close frame: a network drop). The SDK resumes the same session. Figures:
  ``resumes`` (must be N), ``resume_ms`` (p50 / max), ``lost_messages`` (gaps in the server's
  sequence numbers the client saw), ``duplicated_messages`` (a number seen twice),
  ``bad_orders`` (an utterance not queued → started → finished), ``session_changed``.
- ``broker_restart`` (``--broker-restarts N``, default 5; needs ``mosquitto``): the server runs
  the MQTT bridge against a mosquitto the harness starts without persistence; each round stops
  and restarts the broker; once a subscriber sees ``online`` again, a second one that connects
  only then checks that ``availability`` and ``state`` are retained (the bridge republished
  them: the broker kept nothing), and one ``cmd/say`` is published twice with the same
  ``request_id`` (a QoS-1 redelivery). Figures: ``bridge_back_ms`` (broker listening →
  ``online`` seen; p50 / max), ``retained_missing``, ``duplicate_executions``
  (a request id queued more than once), ``lost_commands`` (never finished).
- ``replica_kill`` (``--replica-kills N``, default 10; ``--engine real`` only: the fake engine
  has no replica process): each round says a long sentence and SIGKILLs the server's replica
  process once it has ``started``, then says a short one. Figures: ``recovery_ms`` (kill → the
  next utterance ``started``; p50 / max), ``chunk_errors`` (chunks the engine reported failed:
  the server's ``errors`` stat), ``utterances_unended`` (said but neither finished nor
  interrupted), ``session_alive`` (``ping`` answered after every round), ``restarts_seen``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from unison_sdk.protocol import Interrupt, Ping, Pong, Say

from unison_stream.benchmarks.harness import (
    KEY,
    LONG_TEXT,
    TEXTS,
    Viewer,
    children,
    free_port,
    order_violations,
    p50_max,
    print_figures,
    served,
    wait_healthy,
)
from unison_stream.extras import require

__all__ = ["Relay", "register", "seq_faults", "ws_drops"]

SHORT = "Back again."


class Relay:
    """A TCP relay 127.0.0.1:<port> → ``target_port`` whose :meth:`cut` aborts every open
    connection at once, both sides, with no close frame: what a dropped network does."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._conns: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._conns |= {writer, up_w}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        self._conns -= {writer, up_w}

    def cut(self) -> int:
        """Abort every relayed connection; returns how many were open."""
        n = len(self._conns)
        for w in list(self._conns):
            w.transport.abort()
        return n

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


# ---- ws_drop -------------------------------------------------------------------------------
def seq_faults(seqs: list[int]) -> tuple[int, int]:
    """(lost, duplicated) in the sequence numbers a client saw, in arrival order: a number
    skipped is lost, one seen again (or going back) is duplicated."""
    lost = duplicated = 0
    for a, b in itertools.pairwise(seqs):
        if b <= a:
            duplicated += 1
        else:
            lost += b - a - 1
    return lost, duplicated


async def _started(utt: Any) -> None:
    async for ev in utt:
        if ev.event == "started":
            return
    raise RuntimeError(f"{utt.id} ended without starting")


async def ws_drops(base: str, rounds: int, api_key: str = KEY) -> dict[str, Any]:
    from unison_sdk import ConnectionEvent, StateEvent, StatsEvent, UtteranceEvent, connect

    port = int(base.rsplit(":", 1)[1])
    relay = Relay(port)
    await relay.start()
    resume_ms: list[float] = []
    orders: list[list[str]] = []
    try:
        async with connect(f"http://127.0.0.1:{relay.port}", api_key=api_key, media=False) as av:
            sid, sub = av.session_id, av.events()
            for i in range(rounds):
                utt = await av.say(TEXTS[i % len(TEXTS)])
                await asyncio.wait_for(_started(utt), 30)
                before = av.resumes
                t_cut = time.monotonic()
                relay.cut()
                while av.resumes == before:
                    if time.monotonic() - t_cut > 30:
                        raise TimeoutError(f"round {i}: the SDK did not resume")
                    await asyncio.sleep(0.005)
                resume_ms.append(1000 * (time.monotonic() - t_cut))
                await asyncio.wait_for(utt, 60)
                orders.append([e.event for e in utt.events])
            await asyncio.sleep(1.0)  # a stats message or two after the last resume
            sub.close()
            got = [e async for e in sub]
            same = av.session_id == sid
            resumes = av.resumes
    finally:
        await relay.close()
    seqs = [e.seq for e in got if isinstance(e, UtteranceEvent | StateEvent | StatsEvent)]
    lost, duplicated = seq_faults(seqs)
    return {
        "rounds": rounds,
        "resumes": resumes,
        "resume_ms": p50_max(resume_ms),
        "lost_messages": lost,
        "duplicated_messages": duplicated,
        "bad_orders": sum(1 for o in orders if o != ["queued", "started", "finished"]),
        "session_changed": not same,
        "reconnecting_events": sum(
            1 for e in got if isinstance(e, ConnectionEvent) and e.status == "reconnecting"
        ),
    }


# ---- broker_restart ------------------------------------------------------------------------
class _Mosquitto:
    """A mosquitto on 127.0.0.1:<free port>, anonymous, no persistence (so anything retained
    after a restart was published again by the bridge)."""

    def __init__(self, tmp: Path) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            raise RuntimeError("mosquitto is not installed (Debian: apt-get install mosquitto)")
        self.port = free_port()
        self.conf = tmp / "mosquitto.conf"
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n{user}"
        )
        self.cmd = [exe, "-c", str(self.conf)]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start and wait until it listens; returns the monotonic time it did."""
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return time.monotonic()
            time.sleep(0.01)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@contextlib.asynccontextmanager
async def _follower(port: int, topic: str) -> AsyncIterator[list[tuple[str, Any, bool]]]:
    """A subscriber to ``topic``; yields the (topic, payload, retained) list it fills."""
    aiomqtt = require("aiomqtt", "mqtt")

    got: list[tuple[str, Any, bool]] = []
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(topic, qos=1)

        async def read() -> None:
            async for m in client.messages:
                raw = bytes(m.payload) if isinstance(m.payload, bytes | bytearray) else m.payload
                try:
                    payload = json.loads(raw) if isinstance(raw, bytes) else raw
                except ValueError:
                    payload = raw.decode() if isinstance(raw, bytes) else raw
                got.append((str(m.topic), payload, bool(m.retain)))

        task = asyncio.ensure_future(read())
        try:
            yield got
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _until(pred: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise TimeoutError(what)
        await asyncio.sleep(0.01)


async def broker_restarts(broker: _Mosquitto, rounds: int, prefix: str) -> dict[str, Any]:
    aiomqtt = require("aiomqtt", "mqtt")

    back_ms: list[float] = []
    missing = 0
    queued: dict[str, int] = {}
    finished: set[str] = set()
    for i in range(rounds):
        broker.stop()
        await asyncio.sleep(0.5)
        t_up = broker.start()
        async with _follower(broker.port, f"{prefix}/main/#") as got:

            def online(g: list[tuple[str, Any, bool]] = got) -> bool:
                return any(t.endswith("/availability") and p == "online" for t, p, _ in g)

            await _until(online, 60, f"round {i}: the bridge never came back")
            back_ms.append(1000 * (time.monotonic() - t_up))
            await asyncio.sleep(0.3)  # the state follows availability
            async with _follower(broker.port, f"{prefix}/main/#") as late:  # sees only retained
                await asyncio.sleep(0.5)
                retained = {t.rsplit("/", 1)[1] for t, _, r in late if r}
            missing += len({"availability", "state"} - retained)
            rid = f"restart-{i}"
            cmd = json.dumps({"request_id": rid, "text": SHORT})
            async with aiomqtt.Client("127.0.0.1", broker.port) as game:
                for _ in range(2):  # the same command twice: a QoS-1 redelivery
                    await game.publish(f"{prefix}/main/cmd/say", cmd, qos=1)

            def ended(g: list[tuple[str, Any, bool]] = got, r: str = rid) -> bool:
                return any(
                    t.endswith("evt/utterance") and p.get("request_id") == r
                    and p.get("event") in ("finished", "interrupted")
                    for t, p, _ in g if isinstance(p, dict)
                )  # fmt: skip

            with contextlib.suppress(TimeoutError):
                await _until(ended, 60, f"round {i}: the say never ended")
            await asyncio.sleep(0.5)  # a duplicate would be queued by now
            for t, p, _ in got:
                if t.endswith("evt/utterance") and isinstance(p, dict):
                    r = str(p.get("request_id"))
                    if p.get("event") == "queued":
                        queued[r] = queued.get(r, 0) + 1
                    elif p.get("event") in ("finished", "interrupted"):
                        finished.add(r)
    rids = [f"restart-{i}" for i in range(rounds)]
    return {
        "rounds": rounds,
        "bridge_back_ms": p50_max(back_ms),
        "retained_missing": missing,
        "duplicate_executions": sum(max(0, queued.get(r, 0) - 1) for r in rids),
        "lost_commands": sum(1 for r in rids if r not in finished),
    }


# ---- replica_kill --------------------------------------------------------------------------
def _replica_pid(server_pid: int) -> int | None:
    """The server's child that is the model replica (``python -c "… serve_fd(N)"``)."""
    for pid in children(server_pid):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"serve_fd" in f.read():
                return pid
    return None


async def replica_kills(base: str, server_pid: int, rounds: int) -> dict[str, Any]:
    v = Viewer()
    await v.open(base, {})
    recovery_ms: list[float] = []
    said: list[str] = []
    alive, pids = True, set()
    try:
        errors0 = v.stat("errors")
        for i in range(rounds):
            uid = f"long{i}"
            said.append(uid)
            await v.send(Say(uid, LONG_TEXT))
            await v.wait(lambda m, u=uid: m.get("event") == "started" and m.get("id") == u, 120)
            await asyncio.sleep(0.5)
            pid = _replica_pid(server_pid)
            if pid is None:
                raise RuntimeError("no replica process under the server (runtime.replica?)")
            pids.add(pid)
            t_kill = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            await v.send(Interrupt())
            nxt = f"next{i}"
            said.append(nxt)
            await v.send(Say(nxt, SHORT))
            await v.wait(lambda m, u=nxt: m.get("event") == "started" and m.get("id") == u, 120)
            recovery_ms.append(1000 * (time.monotonic() - t_kill))
            await v.wait(
                lambda m, u=nxt: m.get("event") in ("finished", "interrupted") and m.get("id") == u,
                120,
            )
            await v.send(Ping(f"p{i}"))
            try:
                await v.wait(lambda m, p=f"p{i}": m["type"] == Pong.TYPE and m.get("id") == p, 10)
            except TimeoutError:
                alive = False
        await asyncio.sleep(1.5)  # the last stats message
        chunk_errors = v.stat("errors") - errors0
        unended = order_violations(v.messages, said)
    finally:
        await v.close()
    return {
        "rounds": rounds,
        "recovery_ms": p50_max(recovery_ms),
        "chunk_errors": chunk_errors,
        "utterances_unended": unended,
        "session_alive": alive,
        "restarts_seen": len(pids),
    }


@contextlib.contextmanager
def _bridge_config(broker_port: int, prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bridge.yaml"
        path.write_text(
            f"host: 127.0.0.1\nport: {broker_port}\nprefix: {prefix}\nchannels: [main]\n"
            "reconnect_min_s: 0.2\nreconnect_max_s: 1.0\n"
        )
        yield path


def run(args: argparse.Namespace) -> int:
    from unison_stream.runtime import host_info

    out: dict[str, Any] = {"engine": args.engine, "host": host_info()}
    if args.ws_drops:
        with served(args.engine, list(args.overrides)) as (_, base):
            out["model"] = asyncio.run(wait_healthy(base))["model"]
            out["ws_drop"] = asyncio.run(ws_drops(base, args.ws_drops))
    if args.broker_restarts:
        with tempfile.TemporaryDirectory() as tmp:
            broker = _Mosquitto(Path(tmp))
            broker.start()
            try:
                with (
                    _bridge_config(broker.port, "unison") as conf,
                    served(args.engine, ["--mqtt-config", str(conf), *args.overrides]) as (_, b),
                ):
                    asyncio.run(wait_healthy(b))
                    res = asyncio.run(broker_restarts(broker, args.broker_restarts, "unison"))
                    out["broker_restart"] = res
            finally:
                broker.stop()
    if args.replica_kills:
        if args.engine != "real":
            out["replica_kill"] = {"skipped": "the fake engine has no replica process"}
        else:
            with served("real", ["runtime.replica=process", *args.overrides]) as (proc, base):
                out["model"] = asyncio.run(wait_healthy(base, timeout_s=180))["model"]
                out["replica_kill"] = asyncio.run(replica_kills(base, proc.pid, args.replica_kills))
    print_figures(out, args.json)
    return 0


def register(sub: Any) -> None:
    """Called by ``unison_stream.benchmarks.cli`` for ``bench faults``."""
    p = sub.add_parser("faults", help="repeated faults: websocket drops, broker, replica kills")
    p.add_argument("--engine", choices=("real", "fake"), default="fake")
    p.add_argument("--ws-drops", type=int, default=20)
    p.add_argument("--broker-restarts", type=int, default=5)
    p.add_argument("--replica-kills", type=int, default=10, help="--engine real only")
    p.add_argument("--json", action="store_true")
    p.add_argument("overrides", nargs="*", help="key=value passed to serve")
    p.set_defaults(func=run)
