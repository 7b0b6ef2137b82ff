"""The session protocol, sans-I/O: JSON text in → typed client messages; typed values → JSON.

Follows docs/protocol.md. Nothing here touches a socket or the event loop: the asyncio code in
``app.py`` feeds raw websocket payloads to :func:`parse_client_message` and sends what the
``*_msg`` builders return, so every validation rule is tested without a network. The say-rate
limiter (:class:`TokenBucket`) takes its clock as an argument for the same reason.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from unison_stream.server.errors import BadRequest, RateLimited, ServerError
from unison_stream.vocab import MAX_TEXT_CHARS

__all__ = [
    "STATES",
    "Ack",
    "AudioBegin",
    "AudioEnd",
    "ClientMessage",
    "Close",
    "CreateSession",
    "Interrupt",
    "Limits",
    "Offer",
    "Ping",
    "Say",
    "SetState",
    "TokenBucket",
    "answer_msg",
    "dumps",
    "error_msg",
    "parse_client_message",
    "parse_create_session",
    "pong_msg",
    "ready_msg",
    "state_msg",
    "stats_msg",
    "utterance_msg",
]

STATES = ("idle", "listening")  # what a client may set; the server also reports "speaking"
UTTERANCE_EVENTS = ("queued", "started", "finished", "interrupted")
MAX_ID_CHARS = 128


@dataclass(frozen=True)
class Limits:
    """Input limits, taken from :class:`~unison_stream.server.config.ServerConfig`."""

    max_message_bytes: int = 65536
    max_text_chars: int = MAX_TEXT_CHARS
    max_caption_chars: int = 200
    max_sdp_bytes: int = 32768


# ---- client → server -------------------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    sdp: str
    id: str | None = None


@dataclass(frozen=True)
class Say:
    id: str
    text: str
    caption: str | None = None
    interrupt: bool = False


@dataclass(frozen=True)
class Interrupt:
    id: str | None = None


@dataclass(frozen=True)
class SetState:
    state: str
    id: str | None = None


@dataclass(frozen=True)
class Ping:
    id: str | None = None


@dataclass(frozen=True)
class Close:
    id: str | None = None


@dataclass(frozen=True)
class AudioBegin:
    id: str
    sample_rate: int
    stream: bool = False  # True: each binary part is spoken as it arrives (streaming TTS)


@dataclass(frozen=True)
class AudioEnd:
    id: str


@dataclass(frozen=True)
class Ack:
    """The client has every server message up to ``seq``; the server may forget them."""

    seq: int
    id: str | None = None


ClientMessage = Offer | Say | Interrupt | SetState | Ping | Close | AudioBegin | AudioEnd | Ack


def _str(obj: dict[str, Any], key: str, *, ref: str | None, required: bool = True) -> str | None:
    v = obj.get(key)
    if v is None:
        if required:
            raise BadRequest(f"'{key}' is required", ref=ref)
        return None
    if not isinstance(v, str):
        raise BadRequest(f"'{key}' must be a string", ref=ref)
    _unicode(v, key, ref)
    return v


def _unicode(s: str, key: str, ref: str | None) -> None:
    """JSON admits lone surrogates (``"\\ud800"``), which no UTF-8 consumer downstream
    (espeak-ng, logs, the websocket) can take: refuse them here."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise BadRequest(f"'{key}' is not valid Unicode text", ref=ref) from e


def _id(obj: dict[str, Any], *, required: bool) -> str | None:
    v = obj.get("id")
    if v is None:
        if required:
            raise BadRequest("'id' is required")
        return None
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise BadRequest("'id' must be a string or an integer")
    s = str(v)
    if not s or len(s) > MAX_ID_CHARS:
        raise BadRequest(f"'id' must have 1..{MAX_ID_CHARS} characters")
    _unicode(s, "id", None)
    return s


def parse_client_message(data: str | bytes, limits: Limits) -> ClientMessage:
    """Parse one websocket text message; raise :class:`BadRequest` naming the broken rule."""
    if len(data) > limits.max_message_bytes:
        raise BadRequest(f"message of {len(data)} bytes exceeds {limits.max_message_bytes}")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"malformed JSON: {e}") from e
    except RecursionError as e:  # "[[[[…" within the size limit
        raise BadRequest("JSON nested too deeply") from e
    if not isinstance(obj, dict):
        raise BadRequest("a message must be a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise BadRequest("'type' (string) is required")
    if kind == "say":
        ref = _id(obj, required=True)
        assert ref is not None
        text = _str(obj, "text", ref=ref)
        assert text is not None
        if not text.strip():
            raise BadRequest("'text' is empty", ref=ref)
        if len(text) > limits.max_text_chars:
            raise BadRequest(f"'text' exceeds {limits.max_text_chars} characters", ref=ref)
        caption = _str(obj, "caption", ref=ref, required=False)
        if caption is not None and len(caption) > limits.max_caption_chars:
            raise BadRequest(f"'caption' exceeds {limits.max_caption_chars} characters", ref=ref)
        interrupt = obj.get("interrupt", False)
        if not isinstance(interrupt, bool):
            raise BadRequest("'interrupt' must be a boolean", ref=ref)
        return Say(id=ref, text=text, caption=caption, interrupt=interrupt)
    ref = _id(obj, required=kind in ("audio_begin", "audio_end"))
    if kind == "offer":
        sdp = _str(obj, "sdp", ref=ref)
        assert sdp is not None
        if len(sdp) > limits.max_sdp_bytes or not sdp.startswith("v=0"):
            raise BadRequest("'sdp' is not a session description (v=0 …)", ref=ref)
        return Offer(sdp=sdp, id=ref)
    if kind == "interrupt":
        return Interrupt(id=ref)
    if kind == "set_state":
        state = obj.get("state")
        if state not in STATES:
            raise BadRequest(f"'state' must be one of {', '.join(STATES)}", ref=ref)
        return SetState(state=str(state), id=ref)
    if kind == "ping":
        return Ping(id=ref)
    if kind == "ack":
        seq = obj.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise BadRequest("'seq' must be a non-negative integer", ref=ref)
        return Ack(seq=seq, id=ref)
    if kind == "close":
        return Close(id=ref)
    if kind == "audio_begin":
        assert ref is not None
        rate = obj.get("sample_rate")
        if isinstance(rate, bool) or not isinstance(rate, int) or not 8000 <= rate <= 48000:
            raise BadRequest("'sample_rate' must be an integer in [8000, 48000]", ref=ref)
        stream = obj.get("stream", False)
        if not isinstance(stream, bool):
            raise BadRequest("'stream' must be a boolean", ref=ref)
        return AudioBegin(id=ref, sample_rate=rate, stream=stream)
    if kind == "audio_end":
        assert ref is not None
        return AudioEnd(id=ref)
    raise BadRequest(f"unknown message type {kind!r}", ref=ref)


@dataclass(frozen=True)
class CreateSession:
    """Body of ``POST /v1/sessions``."""

    identity: int = 0
    caption: str = ""
    mode: str = "private"
    channel: str | None = None
    idle_timeout_s: float | None = None
    max_duration_s: float | None = None


def parse_create_session(body: bytes, limits: Limits) -> CreateSession:
    """Parse and validate the JSON body (may be empty) of ``POST /v1/sessions``."""
    if not body.strip():
        return CreateSession()
    if len(body) > limits.max_message_bytes:
        raise BadRequest("request body too large")
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"malformed JSON: {e}") from e
    except RecursionError as e:
        raise BadRequest("JSON nested too deeply") from e
    if not isinstance(obj, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = set(obj) - set(CreateSession.__dataclass_fields__)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    identity = obj.get("identity", 0)
    if isinstance(identity, bool) or not isinstance(identity, int) or identity < 0:
        raise BadRequest("'identity' must be a non-negative integer")
    caption = obj.get("caption", "")
    if not isinstance(caption, str) or len(caption) > limits.max_caption_chars:
        raise BadRequest(f"'caption' must be a string of ≤ {limits.max_caption_chars} characters")
    _unicode(caption, "caption", None)
    mode = obj.get("mode", "private")
    if mode not in ("private", "broadcast"):
        raise BadRequest("'mode' must be 'private' or 'broadcast'")
    channel = obj.get("channel")
    if mode == "broadcast":
        if not isinstance(channel, str) or not 1 <= len(channel) <= MAX_ID_CHARS:
            raise BadRequest("broadcast mode needs 'channel' (1..128 characters)")
        _unicode(channel, "channel", None)
    elif channel is not None:
        raise BadRequest("'channel' is only allowed with mode 'broadcast'")
    times: dict[str, float | None] = {}
    for key in ("idle_timeout_s", "max_duration_s"):
        v = obj.get(key)
        if v is not None and (
            isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0
        ):
            raise BadRequest(f"'{key}' must be a positive number")
        times[key] = None if v is None else float(v)
    return CreateSession(
        identity=identity,
        caption=caption,
        mode=mode,
        channel=channel,
        idle_timeout_s=times["idle_timeout_s"],
        max_duration_s=times["max_duration_s"],
    )


# ---- rate limiting ---------------------------------------------------------------------------


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` stored; ``take(now)`` spends one."""

    def __init__(self, *, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self._tokens = float(burst)
        self._last: float | None = None

    def take(self, now: float, *, ref: str | None = None) -> None:
        if self._last is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1.0:
            raise RateLimited(f"more than {self.rate:g} 'say' per second", ref=ref)
        self._tokens -= 1.0


# ---- server → client -------------------------------------------------------------------------


def dumps(msg: dict[str, Any]) -> str:
    return json.dumps(msg, separators=(",", ":"))


def ready_msg(
    session_id: str,
    *,
    fps: float,
    width: int,
    height: int,
    sample_rate: int,
    mode: str,
    resume_token: str | None = None,
    resumed: bool = False,
    seq: int = 0,
) -> dict[str, Any]:
    """``ready`` (never sequenced itself); ``last_seq``: the last sequence number already used."""
    media = {"fps": fps, "width": width, "height": height, "sample_rate": sample_rate}
    msg: dict[str, Any] = {"type": "ready", "session_id": session_id, "mode": mode, "media": media}
    if resume_token is not None:
        msg.update(resume_token=resume_token, resumed=resumed, last_seq=seq)
    return msg


def answer_msg(sdp: str, ref: str | None = None) -> dict[str, Any]:
    return _with_id({"type": "answer", "sdp": sdp}, ref)


def utterance_msg(
    utterance_id: str, event: str, media_time_s: float, trace_ms: dict[str, float] | None = None
) -> dict[str, Any]:
    """``trace_ms`` (``started`` only): ms from the server receiving the ``say`` to each hop of
    the utterance's first chunk (``media.HOPS``)."""
    assert event in UTTERANCE_EVENTS, f"utterance event must be one of {UTTERANCE_EVENTS}"
    msg: dict[str, Any] = {
        "type": "utterance",
        "id": utterance_id,
        "event": event,
        "media_time_s": round(media_time_s, 4),
    }
    if trace_ms is not None:
        msg["trace_ms"] = trace_ms
    return msg


def state_msg(state: str) -> dict[str, Any]:
    return {"type": "state", "state": state}


def stats_msg(stats: dict[str, float]) -> dict[str, Any]:
    return {"type": "stats", **{k: round(v, 4) for k, v in stats.items()}}


def pong_msg(ref: str | None = None) -> dict[str, Any]:
    return _with_id({"type": "pong"}, ref)


def error_msg(err: ServerError) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "error", "code": err.code, "message": err.message}
    if err.ref is not None:
        msg["ref"] = err.ref
    return msg


def _with_id(msg: dict[str, Any], ref: str | None) -> dict[str, Any]:
    if ref is not None:
        msg["id"] = ref
    return msg
