"""The asyncio client: one session on a unison-stream server (docs/sdk.md, docs/protocol.md).

``connect()`` opens a session (``POST /v1/sessions`` with an API key, or a ready session token),
its websocket and, unless ``media=False``, a receive-only WebRTC connection. One reader task
feeds websocket text to the sans-I/O :class:`~unison_sdk.protocol.ClientProtocol`; when the
websocket drops without a clean close, it resumes the same session (``?resume=…&last_seq=N``)
with back-off for up to ``reconnect_timeout_s``: the server replays what was missed and the
protocol drops duplicates, so events are neither lost nor doubled. When the session itself is
gone — its server refuses the connection (the process or cluster replica died) or answers that
the session ended — and the client opened it with an API key, it *moves*: a new session with
the same body (identity, caption, mode, channel) at ``url`` (a cluster's front door places it
on a live replica), the utterance in flight reported ``interrupted``, the ones not yet queued
sent again, media renegotiated. Every background task goes through one
:class:`~unison_sdk._tasks.TaskManager`; :meth:`Avatar.close` is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from unison_sdk._dial import dial
from unison_sdk._rest import post_session
from unison_sdk._tasks import TaskManager
from unison_sdk.devices import Player, Recorder, stem_paths
from unison_sdk.errors import (
    ConnectionFailed,
    ConnectionLost,
    ServerBusyError,
    SessionEnded,
    UnisonError,
    server_error,
)
from unison_sdk.media import AudioFrame, Fanout, Subscription, VideoFrame, load_pcm
from unison_sdk.protocol import (
    AUDIO_TRACKS,
    CLIENT_STATES,
    FINAL_CLOSE,
    Answer,
    AudioTrack,
    ClientProtocol,
    ClientState,
    ConnectionEvent,
    ErrorEvent,
    Event,
    MediaInfo,
    Ready,
    StateEvent,
    StatsEvent,
    UtteranceEvent,
    check_sample_rate,
    resume_url,
    ws_url_for_token,
)
from unison_sdk.rtc import MediaReceiver
from unison_sdk.speech_stream import SpeechStream
from unison_sdk.utterance import Utterance

__all__ = ["Avatar"]

log = logging.getLogger(__name__)

AUDIO_PART_BYTES = 32768  # one binary upload message (the server's default limit is 64 KiB)
BACKOFF_S = (0.05, 0.1, 0.2, 0.5, 1.0)  # reconnect waits, the last one repeated


def _new_id() -> str:
    return uuid.uuid4().hex[:16]


class Avatar:
    """A connected avatar session. Made by :func:`connect`; use it as ``async with``."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None,
        token: str | None,
        session: dict[str, Any],
        media: bool,
        reconnect: bool,
        reconnect_timeout_s: float,
        timeout_s: float,
        failover: bool = True,
    ) -> None:
        if (api_key is None) == (token is None):
            raise ValueError("give exactly one of api_key= or token=")
        self.url, self._api_key, self._token = url, api_key, token
        self._session_body, self._media_on = session, media
        self._reconnect, self.reconnect_timeout_s = reconnect, reconnect_timeout_s
        self._failover = failover and api_key is not None  # a new session needs the key
        self.timeout_s = timeout_s
        self._proto = ClientProtocol()
        self._tasks = TaskManager("unison-avatar")
        self._ws: ClientConnection | None = None
        self._ws_url = ""
        self._resume_token: str | None = None
        self._connected = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._utterances: dict[str, Utterance] = {}
        self._answers: dict[str, asyncio.Future[Answer]] = {}
        self._events: Fanout[Event] = Fanout(1024)
        self._video: Fanout[VideoFrame] = Fanout(64)
        self._audio: dict[AudioTrack, Fanout[AudioFrame]] = {t: Fanout(256) for t in AUDIO_TRACKS}
        self._rx = MediaReceiver(url, self._tasks, self._video, self._audio)
        self._closing = False
        self._closed = asyncio.Event()
        self._failure: UnisonError | None = None
        self.session_id = ""
        self.media: MediaInfo | None = None
        self.stems = False  # the session sends the mix's stems too (its ``ready`` says so)
        self.state = "idle"
        self.stats: dict[str, float] = {}
        self.resumes = 0  # successful resumes so far
        self.last_resume_s: float | None = None  # drop noticed → session resumed
        self.moves = 0  # times the session was lost and a new one opened in its place
        self.last_move_s: float | None = None  # drop noticed → the new session ready

    # ---- opening ---------------------------------------------------------------------------
    async def _open(self) -> None:
        if self._api_key is not None:
            info = await asyncio.to_thread(
                post_session, self.url, self._api_key, self._session_body, self.timeout_s
            )
            self._ws_url = str(info["ws_url"])
        else:
            assert self._token is not None
            self._ws_url = ws_url_for_token(self.url, self._token)
        ws, ready = await self._dial(self._ws_url)
        self._on_ready(ws, ready)
        self._tasks.create(self._run(), name="reader")
        if self._media_on:
            await self._negotiate()

    async def _dial(self, url: str) -> tuple[ClientConnection, Ready]:
        return await dial(url, self._proto, self.timeout_s)

    def _on_ready(self, ws: ClientConnection, ready: Ready) -> None:
        self._ws = ws
        self.session_id, self.media, self.stems = ready.session_id, ready.media, ready.stems
        self._resume_token = ready.resume_token
        self._connected.set()

    # ---- the reader, and resuming ------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            ws = self._ws
            assert ws is not None
            code: int | None = None
            try:
                async for raw in ws:
                    self._dispatch(raw)
                    if (ack := self._proto.ack_due(time.monotonic())) is not None:
                        await self._send_raw(ack, ws)
                code = ws.close_code
            except ConnectionClosed as e:
                code = e.rcvd.code if e.rcvd is not None else 1006
            self._connected.clear()
            if self._closing:
                return
            if code in FINAL_CLOSE or code == 1000:
                reason = FINAL_CLOSE.get(code or 1000, "closed by the server")
                self._fail(SessionEnded(f"session {self.session_id} ended: {reason}", code=code))
                return
            if not self._reconnect or self._resume_token is None:
                self._fail(ConnectionLost(f"websocket closed (code {code})"))
                return
            if not await self._resume(code):
                return

    async def _resume(self, code: int | None) -> bool:
        t0 = time.monotonic()
        self._events.publish(ConnectionEvent("reconnecting", f"websocket closed (code {code})"))
        log.info("[%s] websocket lost (code %s); resuming", self.session_id, code)
        deadline = t0 + self.reconnect_timeout_s
        attempt, last = 0, None
        while time.monotonic() < deadline and not self._closing:
            await asyncio.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
            attempt += 1
            assert self._resume_token is not None
            url = resume_url(self._ws_url, self._resume_token, self._proto.last_seq)
            try:
                ws, ready = await self._dial(url)
            except ConnectionFailed as e:
                last = e
                gone = e.status in (400, 401) or isinstance(e.__cause__, ConnectionRefusedError)
                if gone and self._failover:  # the session (or its server) is no more
                    return await self._move(t0, deadline)
                if e.status in (400, 401):  # the session is gone or cannot be replayed
                    break
                continue
            self._on_ready(ws, ready)
            self.resumes += 1
            self.last_resume_s = time.monotonic() - t0
            log.info("[%s] resumed in %.3f s", self.session_id, self.last_resume_s)
            self._events.publish(ConnectionEvent("resumed", f"{self.last_resume_s:.3f} s"))
            self._tasks.create(self._after_resume(), name="after-resume")
            return True
        self._fail(ConnectionLost(f"could not resume session {self.session_id}: {last!r}"))
        return False

    async def _move(self, t0: float, deadline: float) -> bool:
        """Open a new session in place of a lost one (module docstring)."""
        old = self.session_id
        attempt, last = 0, None
        while time.monotonic() < deadline and not self._closing:
            try:
                assert self._api_key is not None
                info = await asyncio.to_thread(
                    post_session, self.url, self._api_key, self._session_body, self.timeout_s
                )
                self._proto = ClientProtocol()  # a new session numbers its messages anew
                ws, ready = await self._dial(str(info["ws_url"]))
                break
            except ConnectionFailed as e:
                last = e
                if e.code not in (None, "capacity"):  # refused for good (bad key, bad body)
                    break
                wait = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
                if isinstance(e, ServerBusyError):  # all full: as long as the server asks
                    wait = max(wait, min(e.retry_after_s, deadline - time.monotonic()))
                await asyncio.sleep(wait)
                attempt += 1
        else:
            self._fail(ConnectionLost(f"session {old} was lost and no new one opened: {last!r}"))
            return False
        self._ws_url = str(info["ws_url"])
        self._on_ready(ws, ready)
        again: list[Utterance] = []
        for utt in list(self._utterances.values()):
            started = any(ev.event == "started" for ev in utt.events)
            if started and not utt.done():  # in flight on the lost session: cut there
                ev = UtteranceEvent(utt.id, "interrupted", 0.0)
                utt._event(ev)
                self._events.publish(ev)
                self._utterances.pop(utt.id, None)
            elif utt.queued:  # queued there but never heard: said again on the new one
                again.append(utt)
        self.moves += 1
        self.last_move_s = time.monotonic() - t0
        # the lost session's own error, as its server could not send it (docs/sdk.md)
        lost = f"session {old} was lost with its server; continued as {self.session_id}"
        self._events.publish(ErrorEvent("session_lost", lost))
        log.info("session %s lost; moved to %s in %.3f s", old, self.session_id, self.last_move_s)
        self._events.publish(ConnectionEvent("moved", f"{old} → {self.session_id}"))
        self._tasks.create(self._after_resume(moved=True, again=tuple(again)), name="after-move")
        return True

    async def _after_resume(
        self, *, moved: bool = False, again: tuple[Utterance, ...] = ()
    ) -> None:
        # say / audio the server may never have received: resend (it ignores ids it has)
        for utt in list(self._utterances.values()):
            if (utt in again or not utt.queued) and not utt.done():
                await utt._resend()
        if self._media_on and (moved or not self._rx.usable):
            await self._negotiate()

    def _dispatch(self, raw: str | bytes) -> None:
        msg = self._proto.receive(raw)
        if msg is None:
            return
        if isinstance(msg, UtteranceEvent):
            utt = self._utterances.get(msg.id)
            if utt is not None:
                utt._event(msg)
                if utt.done():
                    self._utterances.pop(msg.id, None)
            self._events.publish(msg)
        elif isinstance(msg, StateEvent):
            self.state = msg.state
            self._events.publish(msg)
        elif isinstance(msg, StatsEvent):
            self.stats = msg.values
            self._events.publish(msg)
        elif isinstance(msg, ErrorEvent):
            if msg.ref is not None and msg.ref in self._utterances:
                utt = self._utterances.pop(msg.ref)
                utt._fail(server_error(msg.code, msg.message, msg.ref))
            elif msg.ref is not None and msg.ref in self._answers:
                fut = self._answers.pop(msg.ref)
                if not fut.done():
                    fut.set_exception(server_error(msg.code, msg.message, msg.ref))
            self._events.publish(msg)
        elif isinstance(msg, Answer):
            pending = self._answers.pop(msg.id or "", None)
            if pending is not None and not pending.done():
                pending.set_result(msg)

    def _fail(self, exc: UnisonError) -> None:
        """The session is over for this client: fail what waits, end every iterator."""
        if self._failure is None:
            self._failure = exc
        for utt in self._utterances.values():
            utt._fail(exc)
        self._utterances.clear()
        for fut in self._answers.values():
            if not fut.done():
                fut.set_exception(exc)
        self._events.publish(ConnectionEvent("closed", str(exc)))
        fanouts: list[Fanout[Any]] = [self._events, self._video, *self._audio.values()]
        for f in fanouts:
            f.close()
        self._closed.set()

    # ---- sending ---------------------------------------------------------------------------
    async def _send_raw(self, data: str | bytes, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(data)

    async def _send(self, *parts: str | bytes) -> None:
        """Send ``parts`` back to back on the current websocket, waiting through a resume."""
        while True:
            if self._failure is not None:
                raise self._failure
            if self._closing:
                raise ConnectionLost("the client is closed")
            if not self._connected.is_set():
                waiter = asyncio.ensure_future(self._connected.wait())
                closed = asyncio.ensure_future(self._closed.wait())
                await asyncio.wait({waiter, closed}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                closed.cancel()
                continue
            ws = self._ws
            assert ws is not None
            try:
                async with self._send_lock:
                    for p in parts:
                        await ws.send(p)
                return
            except ConnectionClosed:
                self._connected.clear()  # the reader notices too and resumes

    # ---- WebRTC ----------------------------------------------------------------------------
    async def _negotiate(self) -> None:
        sdp = await self._rx.offer(stems=self.stems)
        uid = f"offer-{_new_id()}"
        fut: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._answers[uid] = fut
        await self._send(self._proto.offer(sdp, uid))
        answer = await asyncio.wait_for(fut, self.timeout_s)
        await self._rx.accept(answer.sdp)

    # ---- public API --------------------------------------------------------------------------
    async def say(
        self, text: str, *, interrupt: bool = False, caption: str | None = None
    ) -> Utterance:
        """Queue ``text`` and return its :class:`Utterance` once the server queued it; raise a
        :class:`~unison_sdk.errors.ServerError` subclass if refused. ``interrupt=True`` first
        drops what is playing. Cancelling is safe but the say may still be performed."""
        uid = _new_id()
        msg = self._proto.say(uid, text, interrupt=interrupt, caption=caption)

        async def send() -> None:
            await self._send(msg)

        return await self._start(Utterance(uid, text, send))

    async def say_audio(
        self, audio: np.ndarray | str | Path, *, sample_rate: int | None = None
    ) -> Utterance:
        """Speak recorded speech: a float32 array in [-1, 1] / int16 array (mono, give
        ``sample_rate``) or an audio file path (decoded with PyAV). Returns the queued
        :class:`Utterance`. Cancelling is safe but the upload may still be performed."""
        pcm16, rate = load_pcm(audio, sample_rate)
        uid = _new_id()
        raw = pcm16.astype("<i2").tobytes()
        parts: list[str | bytes] = [self._proto.audio_begin(uid, rate)]
        parts += [raw[i : i + AUDIO_PART_BYTES] for i in range(0, len(raw), AUDIO_PART_BYTES)]
        parts.append(self._proto.audio_end(uid))

        async def send() -> None:
            await self._send(*parts)

        return await self._start(Utterance(uid, None, send))

    async def say_audio_stream(self, *, sample_rate: int) -> SpeechStream:
        """Start an utterance whose speech is written as it is made (a streaming TTS):
        returns its :class:`~unison_sdk.speech_stream.SpeechStream` once the server queued it.
        ``await stream.write(pcm)`` as audio comes, then ``await stream.end()`` (or use
        ``async with``); ``stream.utterance`` has its events."""
        check_sample_rate(sample_rate)  # a ProtocolError (a ValueError) naming the range
        uid = _new_id()
        begin = self._proto.audio_begin(uid, sample_rate, stream=True)

        async def send() -> None:  # resent after a reconnect: the server keeps the open stream
            await self._send(begin)

        utt = await self._start(Utterance(uid, None, send))
        end = self._proto.audio_end(uid)
        return SpeechStream(
            utt, sample_rate, send=self._send, end_msg=end, part_bytes=AUDIO_PART_BYTES
        )

    async def _start(self, utt: Utterance) -> Utterance:
        if self._failure is not None:
            raise self._failure
        self._utterances[utt.id] = utt
        await utt._resend()
        await asyncio.wait_for(utt.wait_queued(), self.timeout_s + self.reconnect_timeout_s)
        return utt

    async def interrupt(self) -> None:
        """Stop speaking now and drop what is queued. Cancelling is safe."""
        await self._send(self._proto.interrupt())

    async def set_state(self, state: ClientState) -> None:
        """``"idle"`` or ``"listening"`` (idle behaviour). Cancelling is safe."""
        if state not in CLIENT_STATES:
            raise ValueError(f"state must be one of {', '.join(CLIENT_STATES)}, not {state!r}")
        await self._send(self._proto.set_state(state))

    def events(self) -> Subscription[Event]:
        """Events from now on (utterance, state, stats, error, connection), as an async
        iterator that ends when the session ends; ``close()`` it to stop early."""
        return self._events.subscribe()

    def video_frames(self) -> Subscription[VideoFrame]:
        """Video frames from now on: :class:`~unison_sdk.media.VideoFrame` (RGB + media time).
        A reader that falls behind loses the oldest frames (counted in ``dropped``)."""
        self._need_media()
        return self._video.subscribe()

    def audio_frames(self, stem: AudioTrack = "mix") -> Subscription[AudioFrame]:
        """Audio from now on: 20 ms :class:`~unison_sdk.media.AudioFrame` at 48 kHz, mono: the
        mix, or (``stems=True`` sessions) its ``"speech"`` or ``"sfx"`` stem, summing to it."""
        self._need_media(stem)
        return self._audio[stem].subscribe()

    def record(self, path: str | Path, *, stems: bool = False) -> Recorder:
        """Start writing video + audio to an mp4 (PyAV); ``await rec.stop()`` or use
        ``async with avatar.record(path):``. ``stems``: also the mix and its stems as WAVs
        beside it, lined up by pts (:func:`~unison_sdk.devices.stem_paths`)."""
        self._need_media("speech" if stems else "mix")
        pairs = zip(stem_paths(path), AUDIO_TRACKS, strict=True)
        wavs = [(p, self._audio[t].subscribe(1024)) for p, t in pairs] if stems else []
        mix, fps = self._audio["mix"].subscribe(1024), self.media.fps if self.media else 25.0
        return Recorder(path, self._video.subscribe(), mix, fps=fps, tasks=self._tasks, wavs=wavs)

    def play(self) -> Player:
        """Play the audio on the default output device; raises
        :class:`~unison_sdk.errors.PlaybackUnavailable` with the reason when there is none."""
        self._need_media()
        return Player(self._audio["mix"].subscribe(1024), tasks=self._tasks, sample_rate=48000)

    def _need_media(self, stem: AudioTrack = "mix") -> None:
        if not self._media_on:
            raise UnisonError("connected with media=False: no video or audio is received")
        if stem not in AUDIO_TRACKS:
            raise ValueError(f"stem must be one of {', '.join(AUDIO_TRACKS)}, not {stem!r}")
        if stem != "mix" and not self.stems:
            why = f"session {self.session_id} was opened without stems: connect(..., stems=True)"
            raise UnisonError(f"no {stem!r} stem; {why}")

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        """Wait until the session ends (for any reason). Cancelling is safe."""
        await self._closed.wait()

    async def close(self) -> None:
        """End the session (``close`` message), media and tasks; idempotent, never hangs.
        Cancelling it is not safe: let it finish (it is bounded by a few seconds)."""
        if self._closing:
            return
        self._closing = True
        ws = self._ws
        if ws is not None and self._connected.is_set():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.send(self._proto.close()), 1.0)
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._rx.close(), 2.0)
        await self._tasks.close()
        if not self._closed.is_set():
            self._fail(SessionEnded(f"session {self.session_id} closed by the client"))

    async def __aenter__(self) -> Avatar:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
