"""Every message of the unison-stream protocol, both ways, as typed values (docs/protocol.md).

This is the one place that names the wire: message ``type`` strings, field names, the states
and utterance events, close codes, error codes and input limits. Each message is a frozen
dataclass whose ``TYPE`` is its ``type`` on the wire and whose :meth:`wire` gives the JSON
object it travels as; :func:`decode_server` reads the server's objects back. Validation of
what a client sends (the server's side) is in ``validate.py``; the two sans-I/O protocol
objects are ``client.py`` and ``server.py``. No I/O and no torch here.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

__all__ = [
    "AUDIO_TRACKS",
    "CLEAN_CLOSE",
    "CLIENT_STATES",
    "CLIENT_TYPES",
    "CLOSE_ENDED",
    "CLOSE_IDLE",
    "CLOSE_MAX_DURATION",
    "CLOSE_REPLACED",
    "FINAL_CLOSE",
    "MAX_ID_CHARS",
    "MODES",
    "PLAY_STATES",
    "SAMPLE_RATE_MAX",
    "SAMPLE_RATE_MIN",
    "SERVER_TYPES",
    "UTTERANCE_EVENTS",
    "Ack",
    "Answer",
    "AudioBegin",
    "AudioEnd",
    "AudioTrack",
    "ClientMessage",
    "ClientState",
    "Close",
    "ConnectionEvent",
    "ConnectionStatus",
    "CreateSession",
    "ErrorCode",
    "ErrorEvent",
    "Event",
    "Interrupt",
    "Limits",
    "MediaInfo",
    "Mode",
    "Offer",
    "PayloadTooLarge",
    "Ping",
    "PlayState",
    "Pong",
    "ProtocolError",
    "Ready",
    "Say",
    "Sequenced",
    "ServerMessage",
    "SetState",
    "StateEvent",
    "StatsEvent",
    "UtteranceEvent",
    "UtteranceEventName",
    "check_sample_rate",
    "decode_server",
]

# ---- names --------------------------------------------------------------------------------------

ClientState = Literal["idle", "listening"]  # what a client may ask for
PlayState = Literal["speaking", "idle", "listening"]  # what the server reports, as played out
UtteranceEventName = Literal["queued", "started", "finished", "interrupted"]
ConnectionStatus = Literal["reconnecting", "resumed", "moved", "closed"]  # made by the SDK
Mode = Literal["private", "broadcast"]
# ``session_lost`` is made by the SDK when a session vanished with its server (docs/sdk.md)
ErrorCode = Literal["bad_request", "unauthorized", "rate_limited", "capacity", "internal"]

CLIENT_STATES: tuple[str, ...] = get_args(ClientState)
PLAY_STATES: tuple[str, ...] = get_args(PlayState)
UTTERANCE_EVENTS: tuple[str, ...] = get_args(UtteranceEventName)
MODES: tuple[str, ...] = get_args(Mode)

# The audio tracks of a session opened with ``stems``, in the order of their m-lines after the
# video's: the mix, then its speech and its effects (docs/stems.md). Each track's id (the
# second word of its ``a=msid``) is its name; a session without stems has the mix alone.
AudioTrack = Literal["mix", "speech", "sfx"]
AUDIO_TRACKS: tuple[AudioTrack, ...] = get_args(AudioTrack)

# ---- close codes of the websocket (docs/protocol.md, Closing) -----------------------------------

CLOSE_ENDED = 4000  # the session ended: ``close``, ``DELETE``, shutdown
CLOSE_REPLACED = 4001  # a resumed websocket took this session over
CLOSE_IDLE = 4408  # no client message for ``idle_timeout_s``
CLOSE_MAX_DURATION = 4409  # the session ran for ``max_duration_s``
FINAL_CLOSE: dict[int, str] = {
    CLOSE_ENDED: "session ended",
    CLOSE_REPLACED: "replaced by another connection",
    CLOSE_IDLE: "idle timeout",
    CLOSE_MAX_DURATION: "maximum duration",
}
CLEAN_CLOSE = (1000, 1001)  # a client closing with these ends its session; others may resume

# ---- limits -------------------------------------------------------------------------------------

MAX_ID_CHARS = 128  # a client ``id``
SAMPLE_RATE_MIN, SAMPLE_RATE_MAX = 8000, 48000  # uploaded speech (the front end's range)


class ProtocolError(ValueError):
    """A message breaks the protocol: ``code`` is the error code it is reported as, ``ref`` the
    ``id`` of the message it answers (when known)."""

    def __init__(self, message: str, *, code: ErrorCode = "bad_request", ref: str | None = None):
        super().__init__(message)
        self.message, self.code, self.ref = message, code, ref


class PayloadTooLarge(ProtocolError):
    """A request body, or the picture in it, is over its limit (HTTP 413)."""


def check_sample_rate(rate: object, *, ref: str | None = None) -> int:
    """The one check of an upload's sample rate: an integer in [8000, 48000]."""
    if isinstance(rate, bool) or not isinstance(rate, int):
        raise ProtocolError("'sample_rate' must be an integer in [8000, 48000]", ref=ref)
    if not SAMPLE_RATE_MIN <= rate <= SAMPLE_RATE_MAX:
        raise ProtocolError(
            f"'sample_rate' must be an integer in [{SAMPLE_RATE_MIN}, {SAMPLE_RATE_MAX}], "
            f"not {rate}",
            ref=ref,
        )
    return rate


@dataclass(frozen=True)
class Limits:
    """Input limits the server enforces (its ``ServerConfig`` sets them)."""

    max_message_bytes: int = 65536
    max_text_chars: int = 600  # the planner's limit (``unison_stream.vocab.MAX_TEXT_CHARS``)
    max_caption_chars: int = 200
    max_sdp_bytes: int = 32768
    max_picture_bytes: int = 4 * 1024 * 1024  # an uploaded picture (docs/avatars.md)


def _with(msg: dict[str, Any], **optional: Any) -> dict[str, Any]:
    """``msg`` plus every optional field that is set (not ``None``, not a zero ``seq``)."""
    for k, v in optional.items():
        if v is not None and not (k == "seq" and v == 0):
            msg[k] = v
    return msg


# ---- client → server ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    """A WebRTC offer (non-trickle); answered by :class:`Answer` with the same ``id``."""

    TYPE: ClassVar[str] = "offer"
    sdp: str
    id: str | None = None

    def wire(self) -> dict[str, Any]:
        return _with({"type": self.TYPE, "sdp": self.sdp}, id=self.id)


@dataclass(frozen=True)
class Say:
    TYPE: ClassVar[str] = "say"
    id: str
    text: str
    caption: str | None = None
    interrupt: bool = False

    def wire(self) -> dict[str, Any]:
        msg = {"type": self.TYPE, "id": self.id, "text": self.text, "interrupt": self.interrupt}
        return _with(msg, caption=self.caption)


@dataclass(frozen=True)
class Interrupt:
    TYPE: ClassVar[str] = "interrupt"
    id: str | None = None

    def wire(self) -> dict[str, Any]:
        return _with({"type": self.TYPE}, id=self.id)


@dataclass(frozen=True)
class SetState:
    TYPE: ClassVar[str] = "set_state"
    state: ClientState
    id: str | None = None

    def wire(self) -> dict[str, Any]:
        return _with({"type": self.TYPE, "state": self.state}, id=self.id)


@dataclass(frozen=True)
class Ping:
    TYPE: ClassVar[str] = "ping"
    id: str | None = None

    def wire(self) -> dict[str, Any]:
        return _with({"type": self.TYPE}, id=self.id)


@dataclass(frozen=True)
class Close:
    TYPE: ClassVar[str] = "close"
    id: str | None = None

    def wire(self) -> dict[str, Any]:
        return _with({"type": self.TYPE}, id=self.id)


@dataclass(frozen=True)
class AudioBegin:
    TYPE: ClassVar[str] = "audio_begin"
    id: str
    sample_rate: int
    stream: bool = False  # True: each binary part is spoken as it arrives (streaming TTS)

    def wire(self) -> dict[str, Any]:
        msg = {"type": self.TYPE, "id": self.id, "sample_rate": self.sample_rate}
        return _with(msg, stream=True if self.stream else None)


@dataclass(frozen=True)
class AudioEnd:
    TYPE: ClassVar[str] = "audio_end"
    id: str

    def wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "id": self.id}


@dataclass(frozen=True)
class Ack:
    """The client has every server message up to ``seq``; the server may forget them."""

    TYPE: ClassVar[str] = "ack"
    seq: int
    id: str | None = None

    def wire(self) -> dict[str, Any]:
        return _with({"type": self.TYPE, "seq": self.seq}, id=self.id)


ClientMessage = Offer | Say | Interrupt | SetState | Ping | Close | AudioBegin | AudioEnd | Ack
CLIENT_TYPES: dict[str, type[ClientMessage]] = {
    c.TYPE: c for c in (Offer, Say, Interrupt, SetState, Ping, Close, AudioBegin, AudioEnd, Ack)
}


@dataclass(frozen=True)
class CreateSession:
    """The JSON body of ``POST /v1/sessions`` (every field optional). The person is one of
    ``identity`` (a world identity), ``avatar`` (a stored avatar's id) or ``picture`` (image
    bytes, base64 on the wire; docs/avatars.md)."""

    identity: int = 0
    caption: str = ""
    mode: Mode = "private"
    channel: str | None = None  # broadcast only, required there
    idle_timeout_s: float | None = None
    max_duration_s: float | None = None
    avatar: str | None = None  # a stored avatar's id (``av_…``)
    picture: bytes | None = None  # PNG, JPEG or WebP bytes, normalised like an upload
    stems: bool = False  # private only: the speech and effects stems as two more audio tracks

    def wire(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"mode": self.mode}
        if self.avatar is None and self.picture is None:
            msg["identity"] = self.identity
        picture = None if self.picture is None else base64.b64encode(self.picture).decode()
        return _with(
            msg,
            avatar=self.avatar,
            picture=picture,
            caption=self.caption or None,
            channel=self.channel,
            idle_timeout_s=self.idle_timeout_s,
            max_duration_s=self.max_duration_s,
            stems=self.stems or None,
        )


# ---- server → client ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MediaInfo:
    fps: float
    width: int
    height: int
    sample_rate: int


@dataclass(frozen=True)
class Ready:
    """The first message of every websocket; never numbered itself."""

    TYPE: ClassVar[str] = "ready"
    session_id: str
    mode: str
    media: MediaInfo
    resume_token: str | None = None
    resumed: bool = False
    last_seq: int = 0  # the server's last sequence number when this websocket opened
    stems: bool = False  # the session was opened with ``stems``: offer AUDIO_TRACKS audio lines

    def wire(self) -> dict[str, Any]:
        m = self.media
        media = {"fps": m.fps, "width": m.width, "height": m.height, "sample_rate": m.sample_rate}
        msg: dict[str, Any] = {"type": self.TYPE, "session_id": self.session_id, "mode": self.mode}
        msg["media"] = media
        if self.stems:
            msg["stems"] = True
        if self.resume_token is not None:
            msg.update(resume_token=self.resume_token, resumed=self.resumed, last_seq=self.last_seq)
        return msg


@dataclass(frozen=True)
class UtteranceEvent:
    """``event`` is ``queued`` | ``started`` | ``finished`` | ``interrupted``."""

    TYPE: ClassVar[str] = "utterance"
    id: str
    event: UtteranceEventName
    media_time_s: float
    seq: int = 0
    # ``started`` / ``interrupted`` of a private session: the audio pts (48 kHz samples, as
    # AudioFrame.pts) of the utterance's first sample / of the cut
    audio_pts: int | None = None
    # ``started``: ms from the server receiving the ``say`` to each hop of the first chunk
    trace_ms: dict[str, float] | None = None
    # ``started`` / ``interrupted``: the wall time (Unix s) the first slot / the cut was due
    sent_at_unix_s: float | None = None
    # ``started`` of a text say: (effect, seconds after ``media_time_s`` its sound begins)
    effects: tuple[tuple[str, float], ...] = ()

    def wire(self) -> dict[str, Any]:
        msg = {
            "type": self.TYPE,
            "id": self.id,
            "event": self.event,
            "media_time_s": round(self.media_time_s, 4),
        }
        sent = None if self.sent_at_unix_s is None else round(self.sent_at_unix_s, 4)
        fx = [{"effect": n, "offset_s": round(t, 4)} for n, t in self.effects] or None
        return _with(
            msg,
            trace_ms=self.trace_ms,
            sent_at_unix_s=sent,
            audio_pts=self.audio_pts,
            effects=fx,
            seq=self.seq,
        )


@dataclass(frozen=True)
class StateEvent:
    TYPE: ClassVar[str] = "state"
    state: PlayState
    seq: int = 0

    def wire(self) -> dict[str, Any]:
        return _with({"type": self.TYPE, "state": self.state}, seq=self.seq)


@dataclass(frozen=True)
class StatsEvent:
    TYPE: ClassVar[str] = "stats"
    values: dict[str, float] = field(default_factory=dict)
    seq: int = 0

    def wire(self) -> dict[str, Any]:
        msg = {"type": self.TYPE, **{k: round(v, 4) for k, v in self.values.items()}}
        return _with(msg, seq=self.seq)


@dataclass(frozen=True)
class ErrorEvent:
    TYPE: ClassVar[str] = "error"
    code: str  # an ErrorCode (or ``session_lost``, made by the SDK)
    message: str
    ref: str | None = None
    seq: int = 0

    def wire(self) -> dict[str, Any]:
        msg = {"type": self.TYPE, "code": self.code, "message": self.message}
        return _with(msg, ref=self.ref, seq=self.seq)


@dataclass(frozen=True)
class Answer:
    TYPE: ClassVar[str] = "answer"
    sdp: str
    id: str | None = None
    seq: int = 0

    def wire(self) -> dict[str, Any]:
        return _with({"type": self.TYPE, "sdp": self.sdp}, id=self.id, seq=self.seq)


@dataclass(frozen=True)
class Pong:
    TYPE: ClassVar[str] = "pong"
    id: str | None = None
    seq: int = 0

    def wire(self) -> dict[str, Any]:
        return _with({"type": self.TYPE}, id=self.id, seq=self.seq)


@dataclass(frozen=True)
class ConnectionEvent:
    """Made by the client itself: ``reconnecting`` | ``resumed`` | ``moved`` (a new session in
    place of a lost one) | ``closed``."""

    status: ConnectionStatus
    detail: str = ""


ServerMessage = Ready | UtteranceEvent | StateEvent | StatsEvent | ErrorEvent | Answer | Pong
Sequenced = UtteranceEvent | StateEvent | StatsEvent | ErrorEvent | Answer | Pong
Event = UtteranceEvent | StateEvent | StatsEvent | ErrorEvent | ConnectionEvent
SERVER_TYPES: dict[str, type[ServerMessage]] = {
    c.TYPE: c for c in (Ready, UtteranceEvent, StateEvent, StatsEvent, ErrorEvent, Answer, Pong)
}


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)


def decode_server(o: dict[str, Any], seq: int) -> ServerMessage | None:
    """A server's JSON object → its typed message (``None`` for a type this SDK does not know:
    a newer server's). Raises KeyError / TypeError / ValueError on a malformed one."""
    kind = o["type"]
    if kind == Ready.TYPE:
        m = o["media"]
        media = MediaInfo(float(m["fps"]), int(m["width"]), int(m["height"]), int(m["sample_rate"]))
        return Ready(
            session_id=str(o["session_id"]),
            mode=str(o.get("mode", "private")),
            media=media,
            resume_token=_opt_str(o.get("resume_token")),
            resumed=bool(o.get("resumed", False)),
            last_seq=int(o.get("last_seq", 0)),
            stems=o.get("stems") is True,
        )
    if kind == UtteranceEvent.TYPE:
        if o["event"] not in UTTERANCE_EVENTS:
            return None  # a newer server's event
        pts, sent, trace = o.get("audio_pts"), o.get("sent_at_unix_s"), o.get("trace_ms")
        fx = o.get("effects")
        return UtteranceEvent(
            str(o["id"]),
            o["event"],
            float(o["media_time_s"]),
            seq,
            int(pts) if isinstance(pts, int | float) else None,
            {str(k): float(v) for k, v in trace.items()} if isinstance(trace, dict) else None,
            float(sent) if isinstance(sent, int | float) else None,
            tuple((str(e["effect"]), float(e["offset_s"])) for e in fx)
            if isinstance(fx, list)
            else (),
        )
    if kind == StateEvent.TYPE:
        return StateEvent(o["state"], seq) if o["state"] in PLAY_STATES else None
    if kind == StatsEvent.TYPE:
        return StatsEvent({k: float(v) for k, v in o.items() if k not in ("type", "seq")}, seq)
    if kind == ErrorEvent.TYPE:
        return ErrorEvent(str(o["code"]), str(o["message"]), _opt_str(o.get("ref")), seq)
    if kind == Answer.TYPE:
        return Answer(str(o["sdp"]), _opt_str(o.get("id")), seq)
    if kind == Pong.TYPE:
        return Pong(_opt_str(o.get("id")), seq)
    return None
