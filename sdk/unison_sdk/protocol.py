"""The client side of the unison-stream protocol, sans-I/O (docs/protocol.md).

:class:`ClientProtocol` turns websocket text into typed events and typed commands into JSON; it
tracks the server's sequence numbers so that a resumed connection delivers every event exactly
once (a replayed duplicate decodes to ``None``), and says when an ``ack`` is due. Nothing here
touches a socket or the event loop; ``client.py`` feeds it and sends what it returns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

__all__ = [
    "Answer",
    "ClientProtocol",
    "ConnectionEvent",
    "ErrorEvent",
    "Event",
    "MediaInfo",
    "Pong",
    "ProtocolError",
    "Ready",
    "ServerMessage",
    "StateEvent",
    "StatsEvent",
    "UtteranceEvent",
    "resume_url",
    "ws_url_for_token",
]

ACK_EVERY = 32  # messages between acks …
ACK_PERIOD_S = 1.0  # … or seconds, whichever first


class ProtocolError(ValueError):
    """The server sent something this client cannot read."""


@dataclass(frozen=True)
class MediaInfo:
    fps: float
    width: int
    height: int
    sample_rate: int


@dataclass(frozen=True)
class Ready:
    session_id: str
    mode: str
    media: MediaInfo
    resume_token: str | None = None
    resumed: bool = False
    last_seq: int = 0  # the server's last sequence number when this websocket opened


@dataclass(frozen=True)
class UtteranceEvent:
    """``event`` is ``queued`` | ``started`` | ``finished`` | ``interrupted``."""

    id: str
    event: str
    media_time_s: float
    seq: int = 0
    # ``started`` / ``interrupted`` of a private session: the audio pts (48 kHz samples, as
    # AudioFrame.pts) of the utterance's first sample / of the cut
    audio_pts: int | None = None


@dataclass(frozen=True)
class StateEvent:
    state: str  # speaking | idle | listening
    seq: int = 0


@dataclass(frozen=True)
class StatsEvent:
    values: dict[str, float] = field(default_factory=dict)
    seq: int = 0


@dataclass(frozen=True)
class ErrorEvent:
    code: str
    message: str
    ref: str | None = None
    seq: int = 0


@dataclass(frozen=True)
class Answer:
    sdp: str
    id: str | None = None
    seq: int = 0


@dataclass(frozen=True)
class Pong:
    id: str | None = None
    seq: int = 0


@dataclass(frozen=True)
class ConnectionEvent:
    """Made by the client itself: ``reconnecting`` | ``resumed`` | ``moved`` (a new session in
    place of a lost one) | ``closed``."""

    status: str
    detail: str = ""


ServerMessage = Ready | UtteranceEvent | StateEvent | StatsEvent | ErrorEvent | Answer | Pong
Event = UtteranceEvent | StateEvent | StatsEvent | ErrorEvent | ConnectionEvent


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)


class ClientProtocol:
    """Decode server messages (dropping replayed duplicates) and encode client commands."""

    def __init__(self) -> None:
        self.last_seq = 0  # highest sequence number delivered
        self._acked = 0
        self._acked_at = 0.0
        self.duplicates = 0  # replayed messages dropped (for tests and stats)

    # ---- server → client ---------------------------------------------------------------------
    def receive(self, text: str | bytes) -> ServerMessage | None:
        """One websocket text message → a typed message, or ``None`` for a duplicate."""
        try:
            obj = json.loads(text)
        except ValueError as e:
            raise ProtocolError(f"server sent malformed JSON: {e}") from e
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            raise ProtocolError(f"server message without a type: {obj!r:.200}")
        seq = obj.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool):
            if seq <= self.last_seq:
                self.duplicates += 1
                return None
            self.last_seq = seq
        else:
            seq = 0
        try:
            return self._decode(obj, seq)
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"bad {obj.get('type')!r} message: {e!r}") from e

    def _decode(self, o: dict[str, Any], seq: int) -> ServerMessage | None:
        kind = o["type"]
        if kind == "ready":
            m = o["media"]
            media = MediaInfo(
                float(m["fps"]), int(m["width"]), int(m["height"]), int(m["sample_rate"])
            )
            return Ready(
                session_id=str(o["session_id"]),
                mode=str(o.get("mode", "private")),
                media=media,
                resume_token=_opt_str(o.get("resume_token")),
                resumed=bool(o.get("resumed", False)),
                last_seq=int(o.get("last_seq", 0)),
            )
        if kind == "utterance":
            pts = o.get("audio_pts")
            return UtteranceEvent(
                str(o["id"]),
                str(o["event"]),
                float(o["media_time_s"]),
                seq,
                int(pts) if isinstance(pts, int | float) else None,
            )
        if kind == "state":
            return StateEvent(str(o["state"]), seq)
        if kind == "stats":
            vals = {k: float(v) for k, v in o.items() if k not in ("type", "seq")}
            return StatsEvent(vals, seq)
        if kind == "error":
            return ErrorEvent(str(o["code"]), str(o["message"]), _opt_str(o.get("ref")), seq)
        if kind == "answer":
            return Answer(str(o["sdp"]), _opt_str(o.get("id")), seq)
        if kind == "pong":
            return Pong(_opt_str(o.get("id")), seq)
        return None  # a newer server's message type: ignored

    def ack_due(self, now: float) -> str | None:
        """The ``ack`` to send now, if enough was received since the last one."""
        if self.last_seq <= self._acked:
            return None
        if self.last_seq - self._acked < ACK_EVERY and now - self._acked_at < ACK_PERIOD_S:
            return None
        self._acked, self._acked_at = self.last_seq, now
        return self.encode({"type": "ack", "seq": self.last_seq})

    # ---- client → server ---------------------------------------------------------------------
    @staticmethod
    def encode(msg: dict[str, Any]) -> str:
        return json.dumps(msg, separators=(",", ":"))

    def say(self, uid: str, text: str, *, interrupt: bool, caption: str | None) -> str:
        msg: dict[str, Any] = {"type": "say", "id": uid, "text": text, "interrupt": interrupt}
        if caption is not None:
            msg["caption"] = caption
        return self.encode(msg)

    def interrupt(self) -> str:
        return self.encode({"type": "interrupt"})

    def set_state(self, state: str) -> str:
        return self.encode({"type": "set_state", "state": state})

    def offer(self, sdp: str, uid: str) -> str:
        return self.encode({"type": "offer", "id": uid, "sdp": sdp})

    def audio_begin(self, uid: str, sample_rate: int, *, stream: bool = False) -> str:
        msg = {"type": "audio_begin", "id": uid, "sample_rate": sample_rate}
        return self.encode({**msg, "stream": True} if stream else msg)

    def audio_end(self, uid: str) -> str:
        return self.encode({"type": "audio_end", "id": uid})

    def ping(self, uid: str) -> str:
        return self.encode({"type": "ping", "id": uid})

    def close(self) -> str:
        return self.encode({"type": "close"})


def _ws_base(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return scheme, parts.netloc


def ws_url_for_token(base_url: str, token: str) -> str:
    """``ws://host/v1/ws?token=…`` for a server base URL (http/https/ws/wss)."""
    scheme, netloc = _ws_base(base_url)
    return urlunsplit((scheme, netloc, "/v1/ws", urlencode({"token": token}), ""))


def resume_url(ws_url: str, resume_token: str, last_seq: int) -> str:
    """The URL that resumes a session: ``/v1/ws?resume=…&last_seq=N`` on the same host."""
    scheme, netloc = _ws_base(ws_url)
    query = urlencode({"resume": resume_token, "last_seq": last_seq})
    return urlunsplit((scheme, netloc, "/v1/ws", query, ""))
