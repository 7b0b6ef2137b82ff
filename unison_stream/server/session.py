"""Sessions (one client each) and the manager that creates, finds and ends them.

A :class:`Session` is one client: the sans-I/O :class:`~unison_sdk.protocol.ServerProtocol`
holding its protocol state (seq, replay, ack, dedupe, say rate, upload assembly), the
websocket writer that delivers what it posts, its media transport (``transport.py``; WebRTC
by default), and its deadlines. It performs the protocol's commands on its
:class:`~.channel.Channel`: a private session has a channel of its own; broadcast sessions with
the same ``channel`` name share one. :class:`SessionManager` creates and ends both, enforces
capacity, and reaps sessions whose client vanished, went idle, or outlived ``max_duration_s``.
Every background task goes through a task manager and every ``close()`` is idempotent. Log
records carry the session id (``[sid]``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from unison_sdk._tasks import TaskManager

from unison_stream.errors import EngineFullError
from unison_stream.server import protocol as P
from unison_stream.server.auth import TokenSigner
from unison_stream.server.avatars import AvatarService
from unison_stream.server.channel import Channel, MediaSpec
from unison_stream.server.config import ServerConfig
from unison_stream.server.engine_api import EngineLike, SpeechWriterLike
from unison_stream.server.errors import BadRequest, CapacityError
from unison_stream.server.media import Playout
from unison_stream.server.transport import MediaTransport, TransportFactory
from unison_stream.server.webrtc_transport import WebRTCTransport

__all__ = ["Channel", "MediaSpec", "Session", "SessionManager"]

log = logging.getLogger(__name__)

RECENT_IDS = 256  # say / audio ids remembered per session, so a retried command is not doubled
Send = Callable[[dict[str, Any]], Awaitable[None]]  # one message, as its JSON object
CloseWs = Callable[[int, str], Awaitable[None]]


class Session:
    """One client: protocol state, websocket writer, media transport, limits and deadlines."""

    def __init__(
        self,
        session_id: str,
        channel: Channel,
        cfg: ServerConfig,
        req: P.CreateSession,
        *,
        transport: TransportFactory = WebRTCTransport,
        internal: bool = False,
    ) -> None:
        self.id, self.channel, self.cfg = session_id, channel, cfg
        self.internal = internal  # an in-process member (the MQTT bridge): never reaped
        self.mode = req.mode
        self.stems = req.stems  # the mix's stems as two more audio tracks (docs/stems.md)
        self.idle_timeout_s = min(req.idle_timeout_s or cfg.idle_timeout_s, cfg.idle_timeout_s)
        self.max_duration_s = min(req.max_duration_s or cfg.max_duration_s, cfg.max_duration_s)
        self.created = time.monotonic()
        self.last_activity = self.created
        self.tasks = TaskManager(f"session:{session_id}")
        self.protocol = P.ServerProtocol(
            limits=P.limits_for(cfg),
            resume_buffer=cfg.resume_buffer,
            say_rate_per_s=cfg.say_rate_per_s,
            say_burst=cfg.say_burst,
            max_audio_s=cfg.max_audio_s,
            recent_ids=RECENT_IDS,
            stream_dropped=lambda uid: self._speech is None or self._speech.dropped,
        )
        self.transport: MediaTransport = transport(channel, cfg, session_id, stems=req.stems)
        self._speech: SpeechWriterLike | None = None  # the streamed upload being spoken
        self.close_code = P.CLOSE_ENDED
        self.close_reason = "session ended"
        self.closed = asyncio.Event()
        # the websocket: one writer task sends what is posted; a resumed websocket replaces it
        self._outbox: asyncio.Queue[P.Sequenced | P.Ready | None] | None = None
        self._close_ws: CloseWs | None = None
        self._writer_task: asyncio.Task[Any] | None = None
        self.generation = 0  # bumped by every attach; a replaced websocket's handler sees it
        self.ws_connected = False
        self.ever_connected = False
        self.detached_at: float | None = None
        self._perform: dict[type, Callable[[Any], Awaitable[None]]] = {
            P.Say: self._say,
            P.Interrupt: self._interrupt,
            P.SetState: self._set_state,
            P.Ping: self._ping,
            P.Offer: self._offer,
            P.AudioClip: self._audio_clip,
            P.StreamBegin: self._stream_begin,
            P.StreamPart: self._stream_part,
            P.StreamEnd: self._stream_end,
        }

    @property
    def seq(self) -> int:
        """The last sequence number posted."""
        return self.protocol.seq

    @property
    def playout(self) -> Playout | None:
        return self.transport.playout

    # ---- the websocket ------------------------------------------------------------------------
    def check_resumable(self, last_seq: int) -> None:
        """Raise :class:`BadRequest` unless every message after ``last_seq`` can be replayed."""
        try:
            self.protocol.check_resumable(last_seq)
        except P.ProtocolError as e:
            raise P.server_error(e) from e

    async def attach(
        self,
        send: Send,
        close_ws: CloseWs,
        *,
        first: P.Ready | None = None,
        resume_from: int | None = None,
    ) -> int:
        """Bind a websocket and return its generation: ``first`` (unsequenced ``ready``) is sent,
        then every kept message after ``resume_from`` (all kept ones on a first attach), then
        whatever is posted from now on, in order, by one writer task. A websocket still attached
        is closed with 4001 (replaced)."""
        if resume_from is not None:
            self.check_resumable(resume_from)
        replay = self.protocol.resume(resume_from)
        old_close, old_writer = self._close_ws, self._writer_task
        if self._outbox is not None:
            self._outbox.put_nowait(None)
        self.generation += 1
        self.ws_connected = self.ever_connected = True
        self.detached_at = None
        outbox: asyncio.Queue[P.Sequenced | P.Ready | None] = asyncio.Queue()
        if first is not None:
            outbox.put_nowait(first)
        for kept in replay:
            outbox.put_nowait(kept)
        self._outbox, self._close_ws = outbox, close_ws
        self._writer_task = self.tasks.create(self._writer(send, outbox), name="ws-writer")
        if old_writer is not None:
            await self.tasks.cancel(old_writer)
        if old_close is not None:
            try:
                await old_close(P.CLOSE_REPLACED, "replaced by a resumed websocket")
            except Exception as e:  # the old socket is usually gone already
                log.debug("[%s] closing the replaced websocket: %r", self.id, e)
        return self.generation

    def detach(self, generation: int) -> None:
        """The websocket of ``generation`` was lost: keep the session for ``resume_grace_s``."""
        if generation != self.generation or self.closed.is_set():
            return
        self.ws_connected = False
        self.detached_at = time.monotonic()
        if self._outbox is not None:
            self._outbox.put_nowait(None)
        self._outbox, self._close_ws = None, None
        log.info("[%s] websocket lost; resumable for %.0f s", self.id, self.cfg.resume_grace_s)

    async def _writer(
        self, send: Send, outbox: asyncio.Queue[P.Sequenced | P.Ready | None]
    ) -> None:
        while (msg := await outbox.get()) is not None:
            try:
                await send(msg.wire())
            except (ConnectionError, RuntimeError) as e:
                log.info("[%s] websocket send failed: %r", self.id, e)
                return

    def post(self, msg: P.Sequenced) -> None:
        """Number a message (``seq``), keep it for replay and queue it for the websocket, if
        one is attached (non-blocking)."""
        if self.closed.is_set():
            return
        numbered = self.protocol.send(msg)
        if self._outbox is not None:
            self._outbox.put_nowait(numbered)

    # ---- client messages ------------------------------------------------------------------------
    async def handle_text(self, data: str | bytes) -> bool:
        """One websocket text message; return False when the client asked to close."""
        return await self.handle(P.parse_client_message(data, self.protocol.limits))

    async def handle(self, msg: P.ClientMessage) -> bool:
        """Act on one parsed message; return False when the client asked to close. An ``ack``
        is bookkeeping, not activity: it does not defer the idle timeout."""
        if not isinstance(msg, P.Ack):
            self.last_activity = time.monotonic()
        try:
            cmd = self.protocol.receive(msg, time.monotonic())
        except P.ProtocolError as e:
            raise P.server_error(e) from e
        await self._run(cmd)
        return not isinstance(cmd, P.Close)

    async def handle_binary(self, data: bytes) -> None:
        """A PCM16 (little-endian mono) part of the current ``audio_begin`` upload; of a
        streamed one (``stream: true``), spoken as it arrives."""
        self.last_activity = time.monotonic()
        try:
            cmd = self.protocol.receive_binary(data)
        except P.ProtocolError as e:
            raise P.server_error(e) from e
        await self._run(cmd)

    async def _run(self, cmd: P.Command | None) -> None:
        perform = self._perform.get(type(cmd))
        if perform is not None:
            await perform(cmd)
        elif cmd is None:
            log.debug("[%s] a retried command was ignored", self.id)

    async def _say(self, m: P.Say) -> None:
        self.channel.said(m.id)
        if m.interrupt:
            self.channel.interrupt()
        try:
            self.channel.engine_session.say(m.text, utterance_id=m.id, caption=m.caption)
        except ValueError as e:
            raise BadRequest(f"cannot say this text: {e}", ref=m.id) from e

    async def _interrupt(self, m: P.Interrupt) -> None:
        self.channel.interrupt()

    async def _set_state(self, m: P.SetState) -> None:
        self.channel.engine_session.set_state(m.state)

    async def _ping(self, m: P.Ping) -> None:
        self.post(P.Pong(m.id))

    async def _offer(self, m: P.Offer) -> None:
        self.post(P.Answer(await self.transport.answer(m.sdp), m.id))

    async def _audio_clip(self, m: P.AudioClip) -> None:
        self.channel.said(m.id)
        pcm = np.frombuffer(m.pcm, "<i2").astype(np.float32) / 32768.0  # (N,) in [-1, 1)
        say_audio = functools.partial(
            self.channel.engine_session.say_audio, pcm, m.sample_rate, utterance_id=m.id
        )
        try:  # resampling and the speech encoder take a while: off the event loop
            await asyncio.get_running_loop().run_in_executor(None, say_audio)
        except ValueError as e:
            raise BadRequest(f"cannot use this audio: {e}", ref=m.id) from e

    async def _stream_begin(self, m: P.StreamBegin) -> None:
        """The utterance is queued now; its speech follows part by part (docs/protocol.md,
        "Streamed audio")."""
        self.channel.said(m.id)
        eng = self.channel.engine_session
        self._speech = eng.say_audio_stream(m.sample_rate, utterance_id=m.id)

    async def _stream_part(self, m: P.StreamPart) -> None:
        speech = self._speech
        if speech is not None and not speech.dropped:
            pcm = np.frombuffer(m.pcm, "<i2").astype(np.float32) / 32768.0  # (N,) in [-1, 1)
            # resampling and the speech encoder: off the event loop, in arrival order
            await asyncio.get_running_loop().run_in_executor(None, speech.write, pcm)

    async def _stream_end(self, m: P.StreamEnd) -> None:
        speech, self._speech = self._speech, None
        if speech is not None:  # over the cap: what was spoken stays
            await asyncio.get_running_loop().run_in_executor(None, speech.end)
        if m.refused is not None:
            raise BadRequest(m.refused, ref=m.id)

    # ---- the end ------------------------------------------------------------------------------
    async def close(self, *, code: int = P.CLOSE_ENDED, reason: str = "session ended") -> None:
        """End the session: media transport, tasks, websocket writer; idempotent."""
        if self.closed.is_set():
            return
        self.close_code, self.close_reason = code, reason
        self.closed.set()
        if self._outbox is not None:
            self._outbox.put_nowait(None)  # flush what was posted (e.g. the idle-timeout error)
        if self._writer_task is not None and self._writer_task is not asyncio.current_task():
            await asyncio.wait([self._writer_task], timeout=1.0)
        if self._close_ws is not None:
            try:
                await self._close_ws(code, reason)
            except Exception as e:  # the socket may already be gone
                log.debug("[%s] websocket close: %r", self.id, e)
        await self.transport.close()
        await self.tasks.close()
        log.info("[%s] session closed: %s", self.id, reason)


class SessionManager:
    """Creates, finds and ends sessions; enforces capacity and deadlines."""

    def __init__(
        self,
        engine: EngineLike,
        cfg: ServerConfig,
        media: MediaSpec,
        signer: TokenSigner,
        *,
        capacity: int | None = None,
        transport: TransportFactory = WebRTCTransport,
        avatars: AvatarService | None = None,
    ) -> None:
        self.engine, self.cfg, self.media, self.signer = engine, cfg, media, signer
        if capacity is None:
            if not isinstance(cfg.max_sessions, int):
                raise ValueError("server.max_sessions=auto: resolve it first (capacity.py)")
            capacity = cfg.max_sessions
        # who a new session shows: one avatar, whichever way the request names it
        self.avatars = avatars or AvatarService(cfg, engine, width=media.width, height=media.height)
        self.capacity = capacity  # engine sessions admitted (private sessions + channels)
        self.transport = transport  # each session's media transport
        self.sessions: dict[str, Session] = {}
        self.channels: dict[str, Channel] = {}
        self.tasks = TaskManager("sessions")
        self._lock = asyncio.Lock()
        self.created_total = 0
        self.reaped_total = 0
        # counters of channels already closed, so the totals in /metrics never go down
        self.closed_underruns = 0
        self.closed_engine_errors = 0
        self.closed_chunks = 0
        # draining (a cluster replica being emptied): no new engine session, live ones go on
        self.draining = False

    def start(self) -> None:
        self.tasks.create(self._reaper(), name="reaper")

    @property
    def in_use(self) -> int:
        """Engine sessions in use (private sessions and broadcast channels)."""
        return len(self.channels)

    @property
    def headroom(self) -> int:
        """New engine sessions this server would admit now (none while draining)."""
        return 0 if self.draining else max(0, self.capacity - self.in_use)

    def peer_connections(self) -> int:
        return sum(1 for s in self.sessions.values() if s.transport.active)

    async def create(
        self, req: P.CreateSession, *, api_key: str = "", internal: bool = False
    ) -> tuple[Session, str, float]:
        """Open a session (and its channel when needed); return it, its token and expiry.
        A new channel shows the avatar ``req`` names (``api_key``'s stored avatars are the
        ones an ``avatar`` id may name); a broadcast viewer joining one sees its avatar.
        ``internal`` sessions (in-process members such as the MQTT bridge) are never reaped."""
        async with self._lock:
            sid = secrets.token_hex(8)
            key = f"b:{req.channel}" if req.mode == "broadcast" else f"p:{sid}"
            channel = self.channels.get(key)
            if channel is not None:
                if len(channel.members) >= self.cfg.max_viewers:
                    n = self.cfg.max_viewers
                    raise CapacityError(f"channel {req.channel!r} already has {n} viewers")
            else:
                if self.draining:
                    raise CapacityError("this server is draining: no new sessions")
                if self.in_use >= self.capacity:
                    raise CapacityError(
                        f"server at capacity: all {self.capacity} sessions it serves in real "
                        f"time are in use; retry in {self.cfg.retry_after_s} s"
                    )
                avatar, reference = await self.avatars.resolve(api_key, req)
                open_session = functools.partial(
                    self.engine.open_session,
                    avatar=avatar,
                    caption=req.caption,
                    reference=reference,
                )
                try:  # encoders, the replica's row: seconds, off the event loop
                    es = await asyncio.get_running_loop().run_in_executor(None, open_session)
                except EngineFullError as e:  # other faults are not capacity: they surface
                    raise CapacityError(f"engine refused a new session: {e}") from e
                channel = Channel(key, es, self.media, self.cfg, broadcast=req.mode == "broadcast")
                channel.label = sid if req.mode == "private" else f"{req.channel}"
                self.channels[key] = channel
                channel.start()
            session = Session(
                sid, channel, self.cfg, req, transport=self.transport, internal=internal
            )
            channel.members.add(session)
            self.sessions[sid] = session
            self.created_total += 1
        token, exp = self.signer.issue(sid)
        log.info("[%s] session created (mode=%s channel=%s)", sid, req.mode, channel.label)
        return session, token, exp

    async def end(
        self, sid: str, *, code: int = P.CLOSE_ENDED, reason: str = "session ended"
    ) -> bool:
        """End one session (and its channel when it was the last member); idempotent."""
        session = self.sessions.pop(sid, None)
        if session is None:
            return False
        channel = session.channel
        channel.members.discard(session)
        last = not channel.members
        if last:  # free the capacity slot at once; the closing below may take a moment
            self.channels.pop(channel.name, None)
        await session.close(code=code, reason=reason)
        if last:
            await channel.close()
            self.closed_underruns += channel.clock.underruns
            self.closed_engine_errors += channel.errors
            self.closed_chunks += channel.clock.chunks_in
        return True

    async def _reaper(self) -> None:
        """End sessions that never connected, went idle, or ran past their maximum duration."""
        while True:
            await asyncio.sleep(min(1.0, self.cfg.idle_timeout_s / 4))
            now = time.monotonic()
            for sid, s in list(self.sessions.items()):
                if s.internal:
                    continue
                if not s.ever_connected and now - s.created > self.cfg.token_ttl_s:
                    await self.end(sid, reason="no websocket within the token lifetime")
                elif (
                    s.detached_at is not None
                    and not s.ws_connected
                    and now - s.detached_at > self.cfg.resume_grace_s
                ):
                    await self.end(sid, reason="not resumed within the grace period")
                elif now - s.last_activity > s.idle_timeout_s:
                    s.post(P.ErrorEvent("bad_request", "idle timeout"))
                    await self.end(sid, code=P.CLOSE_IDLE, reason="idle timeout")
                elif now - s.created > s.max_duration_s:
                    await self.end(sid, code=P.CLOSE_MAX_DURATION, reason="maximum duration")
                else:
                    continue
                self.reaped_total += 1

    async def close(self) -> None:
        """End every session and stop the reaper; idempotent."""
        await self.tasks.close()
        for sid in list(self.sessions):
            await self.end(sid, reason="server shutting down")
        for ch in list(self.channels.values()):
            await ch.close()
        self.channels.clear()
        self.avatars.close()
