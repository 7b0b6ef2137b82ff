"""Session lifecycle: channels (engine session + media clock), sessions (a client), reaping.

A :class:`Channel` owns one engine session, the :class:`~.media.MediaClock` that reads it and,
for broadcast, the shared encoder. A :class:`Session` is one client: its websocket, its
peer connection, its say-rate bucket and its deadlines. A private session has a channel of its
own; broadcast sessions with the same ``channel`` name share one. :class:`SessionManager`
creates and ends both, enforces capacity, and reaps sessions whose client vanished, went idle,
or outlived ``max_duration_s``. Every background task goes through a :class:`~.tasks.TaskManager`
and every ``close()`` is idempotent. Log records carry the session id (``[sid]``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription

from unison_stream.errors import EngineFullError
from unison_stream.server import protocol as P
from unison_stream.server.auth import TokenSigner
from unison_stream.server.broadcast import SharedEncoder
from unison_stream.server.config import ServerConfig
from unison_stream.server.engine_api import (
    EngineLike,
    EngineSessionLike,
    EventLike,
    SpeechWriterLike,
)
from unison_stream.server.errors import BadRequest, CapacityError, ServerError
from unison_stream.server.media import (
    AUDIO_RATE,
    HOPS,
    KEEP_TRACES,
    ClockAudioTrack,
    ClockVideoTrack,
    MediaClock,
    Playout,
)
from unison_stream.server.tasks import TaskManager
from unison_stream.server.webrtc import prefer_codecs, rtc_configuration

__all__ = ["Channel", "MediaSpec", "Session", "SessionManager"]

log = logging.getLogger(__name__)

TICK_S = 0.02  # channel clock tick: materialise due slots, release due events
ERROR_REPORT_S = 1.0  # at most one engine ``error`` message per channel per this period
CLOSE_IDLE = 4408  # websocket close codes (docs/protocol.md)
CLOSE_MAX_DURATION = 4409
CLOSE_ENDED = 4000
CLOSE_REPLACED = 4001  # a resumed websocket took over this session


@dataclass
class _AudioStream:
    """A streamed upload: its writer (None for a retried id, whose parts are dropped)."""

    uid: str
    rate: int
    writer: SpeechWriterLike | None
    size: int = 0  # bytes so far
    odd: bytes = b""  # the first byte of a sample split between two parts

    def dropped(self) -> bool:
        return self.writer is None or self.writer.dropped


RECENT_IDS = 256  # say / audio ids remembered per session, so a retried command is not doubled
Send = Callable[[dict[str, Any]], Awaitable[None]]


class MediaSpec:
    """Output media format of the engine (from the model config)."""

    def __init__(self, *, fps: float, width: int, height: int, sample_rate: int) -> None:
        self.fps, self.width, self.height, self.sample_rate = fps, width, height, sample_rate


class Channel:
    """One engine session and its media clock; one member (private) or many (broadcast)."""

    def __init__(
        self,
        name: str,
        engine_session: EngineSessionLike,
        media: MediaSpec,
        cfg: ServerConfig,
        *,
        broadcast: bool,
    ) -> None:
        self.name, self.engine_session, self.cfg = name, engine_session, cfg
        self.broadcast = broadcast
        self.label = name
        self.clock = MediaClock(
            engine_session,
            fps=media.fps,
            width=media.width,
            height=media.height,
            sample_rate=media.sample_rate,
            buffer_s=cfg.buffer_s,
            max_prebuffer_s=cfg.max_prebuffer_s,
            label=name,
            on_error=self._on_engine_error,
        )
        self.tasks = TaskManager(f"channel:{name}")
        self.members: set[Session] = set()
        self.encoder = (
            SharedEncoder(
                self.clock,
                self.tasks,
                gop_s=cfg.broadcast_gop_s,
                bitrate=cfg.video_bitrate,
                label=name,
            )
            if broadcast
            else None
        )
        self._due: list[EventLike] = []  # started/finished events waiting for playout
        self._said: dict[str, float] = {}  # utterance id → time.monotonic() the say arrived
        self._cut_sample: int | None = None  # clock sample (48 kHz) of the last interrupt
        self._cut_unix_s = 0.0  # time.time() when that sample is due
        self._tick_t0 = 0.0  # loop time of the timeline's slot 0
        self._last_state = "idle"
        self._last_error_report = -1e9
        self.errors = 0
        self._closed = False

    def start(self) -> None:
        self.tasks.create(self._tick_loop(), name="clock")

    # ---- engine faults (the clock reports what reading the engine session raised) -----------
    def _on_engine_error(self, e: BaseException) -> None:
        self.errors += 1
        log.error("[%s] engine error mid-stream: %r; falling back to idle", self.label, e)
        try:
            self.engine_session.set_state("idle")
        except Exception as e2:  # the engine may be broken; idle slots keep the stream alive
            log.warning("[%s] set_state(idle) after error failed: %r", self.label, e2)
        now = time.monotonic()
        if now - self._last_error_report >= ERROR_REPORT_S:
            self._last_error_report = now
            err = ServerError(f"generation failed: {type(e).__name__}; streaming idle")
            self.publish(P.error_msg(err))
            self.publish(P.state_msg("idle"))

    # ---- fan-out to members -----------------------------------------------------------------
    def publish(self, msg: dict[str, Any]) -> None:
        for s in list(self.members):
            s.post(msg)

    def media_time(self) -> float:
        return self.clock.next_slot / self.clock.fps

    # ---- the clock task ---------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        """Advance the timeline in real time (even with no viewer) and release due events."""
        loop = asyncio.get_running_loop()
        t0 = self._tick_t0 = loop.time()
        next_stats = t0 + self.cfg.stats_interval_s
        while True:
            now = loop.time()
            due_slot = int((now - t0) * self.clock.fps)
            if due_slot >= self.clock.next_slot:
                self.clock.slot(due_slot)
            self._pump_events()
            if self.clock.state != self._last_state:
                self._last_state = self.clock.state
                self.publish(P.state_msg(self.clock.state))
            if now >= next_stats:
                next_stats = now + self.cfg.stats_interval_s
                self.publish(P.stats_msg(self.stats()))
            await asyncio.sleep(TICK_S)

    def _pump_events(self) -> None:
        try:
            events = self.engine_session.poll_events()
        except Exception as e:
            log.warning("[%s] poll_events failed: %r", self.label, e)
            events = []
        for ev in events:
            if ev.event == "queued":  # now, on the clock's timeline
                self.publish(P.utterance_msg(ev.utterance_id, ev.event, self.media_time()))
            elif ev.event == "interrupted":
                self._publish_interrupted(ev.utterance_id)
            elif ev.event in ("started", "finished"):
                self._due.append(ev)
            elif ev.event == "failed":  # the engine's own fault report: chunk could not be made
                self.errors += 1
                log.error("[%s] engine failed utterance %s; idle", self.label, ev.utterance_id)
                msg = f"generation failed for utterance {ev.utterance_id}; streaming idle"
                self.publish(P.error_msg(ServerError(msg, ref=ev.utterance_id)))
            else:
                log.debug("[%s] ignoring engine event %r", self.label, ev.event)
        if not self._due:
            return
        played = self.clock.played_media_s
        keep: list[EventLike] = []
        for ev in self._due:
            # the clock placed the chunks, so an event's time is that of the sample it names on
            # the clock's timeline; released once the slot holding it has played: ``started``
            # at T with the slot that starts at T, ``finished`` at T (an end) with the slot
            # ending at T
            t = ev.media_time_s
            if (t < played - 1e-6) if ev.event == "started" else (t <= played + 1e-6):
                if ev.event == "started":
                    self._publish_started(ev.utterance_id, t)
                else:
                    self.publish(P.utterance_msg(ev.utterance_id, ev.event, t))
            else:
                keep.append(ev)
        self._due = keep

    def _publish_started(self, uid: str, media_s: float) -> None:
        """``started`` with its hop trace and, per member, where its first sample is: the
        member's audio pts (private sessions) and the wall time its first slot was sent."""
        msg = P.utterance_msg(uid, "started", media_s, self._trace(uid))
        first = self.clock.first_slots.get(uid)
        if first is not None:
            msg["sent_at_unix_s"] = round(first[1], 4)
        self._publish_at(msg, first[0] * self.clock.samples_per_slot if first else None)

    def _publish_interrupted(self, uid: str) -> None:
        """``interrupted`` with where the cut is: the first clock sample after the last
        interrupt (a 20 ms audio frame boundary, or the next slot's start)."""
        cut = self._cut_sample
        at = cut / AUDIO_RATE if cut is not None else self.media_time()
        msg = P.utterance_msg(uid, "interrupted", at)
        msg["sent_at_unix_s"] = round(self._cut_unix_s, 4)
        self._publish_at(msg, cut)

    def _publish_at(self, msg: dict[str, Any], sample: int | None) -> None:
        """Publish ``msg`` with, per member whose tracks are its own, ``audio_pts``: the audio
        sample index of clock sample ``sample`` on that member's track."""
        for s in list(self.members):
            pts = s.playout.audio_pts(sample) if sample is not None and s.playout else None
            s.post(msg if pts is None else {**msg, "audio_pts": pts})

    def said(self, utterance_id: str) -> None:
        """Note when a say (or audio upload) arrived: the origin of its latency trace."""
        self._said[utterance_id] = time.monotonic()
        while len(self._said) > KEEP_TRACES:
            self._said.pop(next(iter(self._said)))

    def _trace(self, utterance_id: str) -> dict[str, float] | None:
        """ms from the say's arrival to each hop of the utterance's first chunk, or None."""
        hops = self.clock.traces.get(utterance_id)
        origin = self._said.pop(utterance_id, None)
        if hops is None or origin is None:
            return None
        return {h: round(1000 * (hops[h] - origin), 1) for h in HOPS if hops.get(h, 0.0) > 0}

    def interrupt(self) -> None:
        """Stop speech now: the engine drops its queue, the clock its buffered media."""
        self.engine_session.interrupt()
        self.clock.flush()
        # the first sample that plays no cut speech: where the members' audio tracks are in
        # the slot in playout (20 ms frames, so mid-slot), else the next slot's start
        cut = self.clock.next_slot * self.clock.samples_per_slot
        sent = [s.playout.audio_sent() for s in self.members if s.playout is not None]
        at = max((x for x in sent if x is not None), default=cut)
        if at < cut and self.clock.silence_from(at):
            cut = at
        self._cut_sample = cut
        due = self._tick_t0 + cut / AUDIO_RATE - asyncio.get_running_loop().time()
        self._cut_unix_s = time.time() + max(0.0, due)
        # started/finished of flushed media will never play: report them as interrupted
        for ev in self._due:
            if ev.event == "finished":
                self._publish_interrupted(ev.utterance_id)
        self._due = []

    def stats(self) -> dict[str, float]:
        out = self.clock.stats()
        try:
            eng = self.engine_session.stats()
        except Exception:  # stats are best effort
            eng = {}
        out["rtf"] = float(eng.get("rtf", 0.0))
        out["errors"] = float(self.errors)
        out["viewers"] = float(len(self.members))
        return out

    async def close(self) -> None:
        """Stop the clock task and the engine session; idempotent."""
        if self._closed:
            return
        self._closed = True
        await self.tasks.close()
        self.clock.close()
        try:
            self.engine_session.close()
        except Exception as e:
            log.warning("[%s] engine session close failed: %r", self.label, e)
        log.info("[%s] channel closed", self.label)


class Session:
    """One client: websocket sender, peer connection, limits and deadlines."""

    def __init__(
        self,
        session_id: str,
        channel: Channel,
        cfg: ServerConfig,
        req: P.CreateSession,
        manager: SessionManager,
        *,
        internal: bool = False,
    ) -> None:
        self.id, self.channel, self.cfg, self.manager = session_id, channel, cfg, manager
        self.internal = internal  # an in-process member (the MQTT bridge): never reaped
        self.mode = req.mode
        self.idle_timeout_s = min(req.idle_timeout_s or cfg.idle_timeout_s, cfg.idle_timeout_s)
        self.max_duration_s = min(req.max_duration_s or cfg.max_duration_s, cfg.max_duration_s)
        self.created = time.monotonic()
        self.last_activity = self.created
        self.tasks = TaskManager(f"session:{session_id}")
        self.bucket = P.TokenBucket(rate=cfg.say_rate_per_s, burst=cfg.say_burst)
        self.pc: RTCPeerConnection | None = None
        self.playout: Playout | None = None  # this member's own tracks' (private sessions)
        self._outbox: asyncio.Queue[dict[str, Any] | None] | None = None
        self.ws_connected = False
        self.close_code = CLOSE_ENDED
        self.close_reason = "session ended"
        self._audio: tuple[str, int, list[bytes], int] | None = None  # id, rate, parts, bytes
        self._stream: _AudioStream | None = None  # the streamed upload being spoken
        self._close_ws: Callable[[int, str], Awaitable[None]] | None = None
        self._writer_task: asyncio.Task[Any] | None = None
        self.closed = asyncio.Event()
        # resume (docs/protocol.md): every posted message gets ``seq``; unacknowledged ones are
        # kept for replay to a websocket that resumes the session after a drop
        self.seq = 0
        self._replay: deque[dict[str, Any]] = deque()
        self._lost_through = 0  # messages ≤ this were evicted unacknowledged: no resume before
        self.generation = 0  # bumped by every attach; a replaced websocket's handler sees it
        self.ever_connected = False
        self.detached_at: float | None = None
        self._recent: deque[str] = deque(maxlen=RECENT_IDS)

    # ---- outgoing messages ------------------------------------------------------------------
    def check_resumable(self, last_seq: int) -> None:
        """Raise :class:`BadRequest` unless every message after ``last_seq`` can be replayed."""
        if last_seq > self.seq:
            raise BadRequest(f"cannot resume: last_seq {last_seq} is ahead of the server's")
        if last_seq < self._lost_through:
            raise BadRequest(f"cannot resume: messages after seq {last_seq} are gone")

    async def attach(
        self,
        send: Send,
        close_ws: Callable[[int, str], Awaitable[None]],
        *,
        first: dict[str, Any] | None = None,
        resume_from: int | None = None,
    ) -> int:
        """Bind a websocket and return its generation: ``first`` (unsequenced ``ready``) is sent,
        then every kept message after ``resume_from`` (all kept ones on a first attach), then
        whatever is posted from now on, in order, by one writer task. A websocket still attached
        is closed with 4001 (replaced)."""
        if resume_from is not None:
            self.check_resumable(resume_from)
            self.ack(resume_from)
        old_close, old_writer = self._close_ws, self._writer_task
        if self._outbox is not None:
            self._outbox.put_nowait(None)
        self.generation += 1
        self.ws_connected = self.ever_connected = True
        self.detached_at = None
        outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        if first is not None:
            outbox.put_nowait(first)
        after = resume_from or 0
        for m in self._replay:
            if m["seq"] > after:
                outbox.put_nowait(m)
        self._outbox, self._close_ws = outbox, close_ws
        self._writer_task = self.tasks.create(self._writer(send, outbox), name="ws-writer")
        if old_writer is not None:
            await self.tasks.cancel(old_writer)
        if old_close is not None:
            try:
                await old_close(CLOSE_REPLACED, "replaced by a resumed websocket")
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

    def ack(self, seq: int) -> None:
        """Forget kept messages up to ``seq`` (the client has them)."""
        while self._replay and self._replay[0]["seq"] <= seq:
            self._replay.popleft()

    async def _writer(self, send: Send, outbox: asyncio.Queue[dict[str, Any] | None]) -> None:
        while (msg := await outbox.get()) is not None:
            try:
                await send(msg)
            except (ConnectionError, RuntimeError) as e:
                log.info("[%s] websocket send failed: %r", self.id, e)
                return

    def post(self, msg: dict[str, Any]) -> None:
        """Number a message (``seq``), keep it for replay and queue it for the websocket, if
        one is attached (non-blocking)."""
        if self.closed.is_set():
            return
        self.seq += 1
        numbered = {**msg, "seq": self.seq}
        self._replay.append(numbered)
        if len(self._replay) > self.cfg.resume_buffer:
            self._lost_through = self._replay.popleft()["seq"]
        if self._outbox is not None:
            self._outbox.put_nowait(numbered)

    def _accept(self, uid: str) -> None:
        """A new say / audio upload: counted against the say rate, its latency trace begun."""
        self.bucket.take(time.monotonic(), ref=uid)
        self.channel.said(uid)

    def _first_time(self, uid: str) -> bool:
        """Whether a say / audio id is new to this session (a retry after a resume is not)."""
        if uid in self._recent:
            return False
        self._recent.append(uid)
        return True

    # ---- client messages --------------------------------------------------------------------
    async def handle(self, msg: P.ClientMessage) -> bool:
        """Act on one parsed message; return False when the client asked to close."""
        if isinstance(msg, P.Ack):  # bookkeeping, not activity: it does not defer idle timeout
            self.ack(msg.seq)
            return True
        self.last_activity = time.monotonic()
        eng = self.channel.engine_session
        if isinstance(msg, P.Say):
            if not self._first_time(msg.id):
                log.info("[%s] say %s already accepted; ignored", self.id, msg.id)
                return True
            self._accept(msg.id)
            if msg.interrupt:
                self.channel.interrupt()
            try:
                eng.say(msg.text, utterance_id=msg.id, caption=msg.caption)
            except ValueError as e:
                raise BadRequest(f"cannot say this text: {e}", ref=msg.id) from e
        elif isinstance(msg, P.Interrupt):
            self.channel.interrupt()
        elif isinstance(msg, P.SetState):
            eng.set_state(msg.state)
        elif isinstance(msg, P.Ping):
            self.post(P.pong_msg(msg.id))
        elif isinstance(msg, P.Offer):
            sdp = await self.answer(msg.sdp)
            self.post(P.answer_msg(sdp, msg.id))
        elif isinstance(msg, P.AudioBegin) and msg.stream:
            self._begin_stream(msg)
        elif isinstance(msg, P.AudioBegin):
            self._audio = (msg.id, msg.sample_rate, [], 0)
        elif isinstance(msg, P.AudioEnd) and self._stream is not None:
            await self._end_stream(msg.id)
        elif isinstance(msg, P.AudioEnd):
            await self._finish_audio(msg.id)
        elif isinstance(msg, P.Close):
            return False
        return True

    async def handle_binary(self, data: bytes) -> None:
        """A PCM16 (little-endian mono) part of the current ``audio_begin`` upload; of a
        streamed one (``stream: true``), spoken as it arrives."""
        self.last_activity = time.monotonic()
        if self._stream is not None:
            await self._stream_part(data)
            return
        if self._audio is None:
            raise BadRequest("binary audio outside audio_begin … audio_end")
        uid, rate, parts, size = self._audio
        size += len(data)
        if size > self.cfg.max_audio_s * rate * 2:
            self._audio = None
            raise BadRequest(f"audio upload exceeds {self.cfg.max_audio_s:g} s", ref=uid)
        parts.append(data)
        self._audio = (uid, rate, parts, size)

    async def _finish_audio(self, uid: str) -> None:
        if self._audio is None or self._audio[0] != uid:
            raise BadRequest("audio_end without a matching audio_begin", ref=uid)
        _, rate, parts, size = self._audio
        self._audio = None
        if not self._first_time(uid):
            log.info("[%s] audio %s already accepted; ignored", self.id, uid)
            return
        raw = b"".join(parts)
        if size == 0 or len(raw) % 2:
            raise BadRequest("audio must be a non-empty whole number of PCM16 samples", ref=uid)
        self._accept(uid)
        pcm = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
        say_audio = functools.partial(
            self.channel.engine_session.say_audio, pcm, rate, utterance_id=uid
        )
        try:  # resampling and the speech encoder take a while: off the event loop
            await asyncio.get_running_loop().run_in_executor(None, say_audio)
        except ValueError as e:
            raise BadRequest(f"cannot use this audio: {e}", ref=uid) from e

    def _begin_stream(self, msg: P.AudioBegin) -> None:
        """``audio_begin`` with ``stream: true``: the utterance is queued now, its speech
        follows part by part (``docs/protocol.md``, "Streamed audio")."""
        if self._stream is not None and self._stream.uid == msg.id:
            return  # resent after a reconnect: the open stream goes on
        if self._stream is not None and self._stream.dropped():
            self._stream = None  # interrupted: its audio_end is not waited for
        if self._stream is not None or self._audio is not None:
            raise BadRequest("audio_begin while another upload is open", ref=msg.id)
        if not self._first_time(msg.id):  # a retry after a resume: its parts are dropped
            log.info("[%s] audio %s already accepted; ignored", self.id, msg.id)
            self._stream = _AudioStream(msg.id, msg.sample_rate, None)
            return
        self._accept(msg.id)
        eng = self.channel.engine_session
        writer = eng.say_audio_stream(msg.sample_rate, utterance_id=msg.id)
        self._stream = _AudioStream(msg.id, msg.sample_rate, writer)

    async def _stream_part(self, data: bytes) -> None:
        st = self._stream
        assert st is not None
        st.size += len(data)
        if st.size > self.cfg.max_audio_s * st.rate * 2:
            self._stream = None
            if st.writer is not None:  # what was spoken stays; the rest is refused
                await asyncio.get_running_loop().run_in_executor(None, st.writer.end)
            raise BadRequest(f"audio upload exceeds {self.cfg.max_audio_s:g} s", ref=st.uid)
        raw = st.odd + data
        st.odd = raw[len(raw) - len(raw) % 2 :]  # a sample split between parts waits
        pcm = np.frombuffer(raw[: len(raw) - len(st.odd)], "<i2").astype(np.float32) / 32768.0
        if st.writer is not None and pcm.size and not st.writer.dropped:
            # resampling and the speech encoder: off the event loop, in arrival order
            await asyncio.get_running_loop().run_in_executor(None, st.writer.write, pcm)

    async def _end_stream(self, uid: str) -> None:
        st = self._stream
        assert st is not None
        if st.uid != uid:
            raise BadRequest("audio_end without a matching audio_begin", ref=uid)
        self._stream = None
        if st.writer is not None:
            await asyncio.get_running_loop().run_in_executor(None, st.writer.end)

    # ---- WebRTC -----------------------------------------------------------------------------
    async def answer(self, sdp: str) -> str:
        """Answer an offer with this session's tracks; a new offer replaces the old connection."""
        await self._close_pc()
        pc = RTCPeerConnection(configuration=rtc_configuration(self.cfg))
        self.pc = pc
        if self.channel.encoder is not None:
            try:
                video, audio = self.channel.encoder.add_viewer()
            except Exception:
                await pc.close()
                raise
        else:
            self.playout = playout = Playout(self.channel.clock)
            video, audio = ClockVideoTrack(playout), ClockAudioTrack(playout)  # type: ignore[assignment]
        pc.addTrack(video)
        pc.addTrack(audio)
        for t in pc.getTransceivers():  # before setRemoteDescription, or it is ignored
            prefer_codecs(t, ("video/VP8",) if t.kind == "video" else ("audio/opus",))

        @pc.on("connectionstatechange")
        async def _on_state() -> None:
            log.info("[%s] peer connection %s", self.id, pc.connectionState)
            if pc.connectionState == "failed" and self.pc is pc:
                await self._close_pc()

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as e:
            await self._close_pc()
            raise BadRequest(f"bad SDP offer: {e}") from e
        assert pc.localDescription is not None
        return pc.localDescription.sdp

    async def _close_pc(self) -> None:
        pc, self.pc = self.pc, None
        if pc is None:
            return
        for sender in pc.getSenders():
            if sender.track is not None:
                sender.track.stop()
        try:
            await pc.close()
        except Exception as e:  # aiortc cannot close a connection a bad offer left half built
            log.info("[%s] closing a half-built peer connection: %r", self.id, e)

    async def close(self, *, code: int = CLOSE_ENDED, reason: str = "session ended") -> None:
        """End the session: peer connection, tasks, websocket writer; idempotent."""
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
        await self._close_pc()
        await self.tasks.close()
        log.info("[%s] session closed: %s", self.id, reason)


class SessionManager:
    """Creates, finds and ends sessions; enforces capacity and deadlines."""

    def __init__(
        self, engine: EngineLike, cfg: ServerConfig, media: MediaSpec, signer: TokenSigner
    ) -> None:
        self.engine, self.cfg, self.media, self.signer = engine, cfg, media, signer
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
    def capacity(self) -> int:
        return self.cfg.max_sessions

    def peer_connections(self) -> int:
        return sum(1 for s in self.sessions.values() if s.pc is not None)

    async def create(
        self, req: P.CreateSession, *, internal: bool = False
    ) -> tuple[Session, str, float]:
        """Open a session (and its channel when needed); return it, its token and expiry.
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
                if len(self.channels) >= self.cfg.max_sessions:
                    raise CapacityError(f"server at capacity ({self.cfg.max_sessions} sessions)")
                open_session = functools.partial(
                    self.engine.open_session, identity=req.identity, caption=req.caption
                )
                try:  # portrait, encoders, the replica's row: seconds, off the event loop
                    es = await asyncio.get_running_loop().run_in_executor(None, open_session)
                except EngineFullError as e:  # other faults are not capacity: they surface
                    raise CapacityError(f"engine refused a new session: {e}") from e
                channel = Channel(key, es, self.media, self.cfg, broadcast=req.mode == "broadcast")
                channel.label = sid if req.mode == "private" else f"{req.channel}"
                self.channels[key] = channel
                channel.start()
            session = Session(sid, channel, self.cfg, req, self, internal=internal)
            channel.members.add(session)
            self.sessions[sid] = session
            self.created_total += 1
        token, exp = self.signer.issue(sid)
        log.info("[%s] session created (mode=%s channel=%s)", sid, req.mode, channel.label)
        return session, token, exp

    async def end(
        self, sid: str, *, code: int = CLOSE_ENDED, reason: str = "session ended"
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
                    s.post({"type": "error", "code": "bad_request", "message": "idle timeout"})
                    await self.end(sid, code=CLOSE_IDLE, reason="idle timeout")
                elif now - s.created > s.max_duration_s:
                    await self.end(sid, code=CLOSE_MAX_DURATION, reason="maximum duration")
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
