"""What a client may send, checked: websocket text → a typed client message, or a
:class:`~.messages.ProtocolError` naming the broken rule (docs/protocol.md).

The server runs every client message and every ``POST /v1/sessions`` body through here, so
each rule is written once and tested without a network. Sans-I/O: text in, values out.
"""

from __future__ import annotations

import json
import math
from typing import Any

from unison_sdk.protocol.avatars import PICTURE_FIELD, decode_picture, picture_body_limit
from unison_sdk.protocol.messages import (
    CLIENT_STATES,
    MAX_ID_CHARS,
    MODES,
    Ack,
    AudioBegin,
    AudioEnd,
    ClientMessage,
    Close,
    CreateSession,
    Interrupt,
    Limits,
    Offer,
    PayloadTooLarge,
    Ping,
    ProtocolError,
    Say,
    SetState,
    check_sample_rate,
)

__all__ = ["parse_client", "parse_create_session"]


def _json(data: str | bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError(f"malformed JSON: {e}") from e
    except RecursionError as e:  # "[[[[…" within the size limit
        raise ProtocolError("JSON nested too deeply") from e
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what} must be a JSON object")
    return obj


def _unicode(s: str, key: str, ref: str | None) -> None:
    """JSON admits lone surrogates (``"\\ud800"``), which no UTF-8 consumer downstream
    (espeak-ng, logs, the websocket) can take: refuse them here."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ProtocolError(f"'{key}' is not valid Unicode text", ref=ref) from e


def _str(obj: dict[str, Any], key: str, *, ref: str | None) -> str | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise ProtocolError(f"'{key}' must be a string", ref=ref)
    _unicode(v, key, ref)
    return v


def _required(obj: dict[str, Any], key: str, *, ref: str | None) -> str:
    v = _str(obj, key, ref=ref)
    if v is None:
        raise ProtocolError(f"'{key}' is required", ref=ref)
    return v


def _bool(obj: dict[str, Any], key: str, *, ref: str | None) -> bool:
    v = obj.get(key, False)
    if not isinstance(v, bool):
        raise ProtocolError(f"'{key}' must be a boolean", ref=ref)
    return v


def _id(obj: dict[str, Any]) -> str | None:
    v = obj.get("id")
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise ProtocolError("'id' must be a string or an integer")
    s = str(v)
    if not s or len(s) > MAX_ID_CHARS:
        raise ProtocolError(f"'id' must have 1..{MAX_ID_CHARS} characters")
    _unicode(s, "id", None)
    return s


def _need_id(ref: str | None) -> str:
    if ref is None:
        raise ProtocolError("'id' is required")
    return ref


def parse_client(data: str | bytes, limits: Limits) -> ClientMessage:
    """Parse one websocket text message; raise :class:`ProtocolError` naming the broken rule."""
    if len(data) > limits.max_message_bytes:
        raise ProtocolError(f"message of {len(data)} bytes exceeds {limits.max_message_bytes}")
    obj = _json(data, "a message")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("'type' (string) is required")
    ref = _id(obj)
    if kind == Say.TYPE:
        ref = _need_id(ref)
        text = _required(obj, "text", ref=ref)
        if not text.strip():
            raise ProtocolError("'text' is empty", ref=ref)
        if len(text) > limits.max_text_chars:
            raise ProtocolError(f"'text' exceeds {limits.max_text_chars} characters", ref=ref)
        caption = _str(obj, "caption", ref=ref)
        if caption is not None and len(caption) > limits.max_caption_chars:
            raise ProtocolError(f"'caption' exceeds {limits.max_caption_chars} characters", ref=ref)
        return Say(ref, text, caption, _bool(obj, "interrupt", ref=ref))
    if kind == Offer.TYPE:
        sdp = _required(obj, "sdp", ref=ref)
        if len(sdp) > limits.max_sdp_bytes or not sdp.startswith("v=0"):
            raise ProtocolError("'sdp' is not a session description (v=0 …)", ref=ref)
        return Offer(sdp, ref)
    if kind == Interrupt.TYPE:
        return Interrupt(ref)
    if kind == SetState.TYPE:
        state = obj.get("state")
        if state not in CLIENT_STATES:
            raise ProtocolError(f"'state' must be one of {', '.join(CLIENT_STATES)}", ref=ref)
        return SetState(state, ref)
    if kind == Ping.TYPE:
        return Ping(ref)
    if kind == Ack.TYPE:
        seq = obj.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ProtocolError("'seq' must be a non-negative integer", ref=ref)
        return Ack(seq, ref)
    if kind == Close.TYPE:
        return Close(ref)
    if kind == AudioBegin.TYPE:
        ref = _need_id(ref)
        rate = check_sample_rate(obj.get("sample_rate"), ref=ref)
        return AudioBegin(ref, rate, _bool(obj, "stream", ref=ref))
    if kind == AudioEnd.TYPE:
        return AudioEnd(_need_id(ref))
    raise ProtocolError(f"unknown message type {kind!r}", ref=ref)


def parse_create_session(body: bytes, limits: Limits) -> CreateSession:
    """Parse and validate the JSON body (may be empty) of ``POST /v1/sessions``.

    A body is at most ``limits.max_message_bytes``, not counting an inline ``picture``
    (base64, at most ``limits.max_picture_bytes`` decoded); PayloadTooLarge otherwise."""
    if not body.strip():
        return CreateSession()
    if len(body) > picture_body_limit(limits):
        raise PayloadTooLarge("request body too large")
    obj = _json(body, "the body")
    inline = obj.get(PICTURE_FIELD)
    rest = len(body) - (len(inline) if isinstance(inline, str) else 0)
    if rest > limits.max_message_bytes:
        raise PayloadTooLarge("request body too large")
    unknown = set(obj) - set(CreateSession.__dataclass_fields__)
    if unknown:
        raise ProtocolError(f"unknown field(s): {', '.join(sorted(unknown))}")
    identity = obj.get("identity", 0)
    if isinstance(identity, bool) or not isinstance(identity, int) or identity < 0:
        raise ProtocolError("'identity' must be a non-negative integer")
    people = [k for k in ("identity", "avatar", PICTURE_FIELD) if obj.get(k) is not None]
    if len(people) > 1:
        raise ProtocolError(f"give one of 'identity', 'avatar' and 'picture', not {people}")
    avatar = obj.get("avatar")
    if avatar is not None and (not isinstance(avatar, str) or not 1 <= len(avatar) <= 64):
        raise ProtocolError("'avatar' must be an avatar id (av_…, from POST /v1/avatars)")
    picture = None if inline is None else decode_picture(inline, limits)
    caption = obj.get("caption", "")
    if not isinstance(caption, str) or len(caption) > limits.max_caption_chars:
        raise ProtocolError(
            f"'caption' must be a string of ≤ {limits.max_caption_chars} characters"
        )
    _unicode(caption, "caption", None)
    mode = obj.get("mode", "private")
    if mode not in MODES:
        raise ProtocolError(f"'mode' must be one of {', '.join(map(repr, MODES))}")
    channel = obj.get("channel")
    if mode == "broadcast":
        if not isinstance(channel, str) or not 1 <= len(channel) <= MAX_ID_CHARS:
            raise ProtocolError(f"broadcast mode needs 'channel' (1..{MAX_ID_CHARS} characters)")
        _unicode(channel, "channel", None)
    elif channel is not None:
        raise ProtocolError("'channel' is only allowed with mode 'broadcast'")
    stems = _bool(obj, "stems", ref=None)
    if stems and mode == "broadcast":
        raise ProtocolError("'stems' is for private sessions (a channel sends one mix to all)")
    times: dict[str, float | None] = {}
    for key in ("idle_timeout_s", "max_duration_s"):
        v = obj.get(key)
        if v is not None and (
            isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0
        ):
            raise ProtocolError(f"'{key}' must be a positive number")
        times[key] = None if v is None else float(v)
    return CreateSession(
        identity=identity,
        caption=caption,
        mode=mode,
        channel=channel,
        idle_timeout_s=times["idle_timeout_s"],
        max_duration_s=times["max_duration_s"],
        avatar=avatar,
        picture=picture,
        stems=stems,
    )
