"""The protocol as the server uses it: ``unison_sdk.protocol`` plus the server's error types.

The messages, their rules and the sans-I/O session state are written once, in
``unison_sdk.protocol`` (docs/protocol.md); this module re-exports what the server needs under
the names its callers (the routes, the MQTT bridge) use, and turns a
:class:`~unison_sdk.protocol.ProtocolError` into the server's own exception of the same code
(``errors.py``), so a route can answer it with the right HTTP status.
"""

from __future__ import annotations

import json
from typing import Any

from unison_sdk.protocol import (
    AVATAR_PREVIEW_PATH,
    AVATAR_TRAITS_PATH,
    AVATARS_PATH,
    CLEAN_CLOSE,
    CLIENT_STATES,
    CLOSE_ENDED,
    CLOSE_IDLE,
    CLOSE_MAX_DURATION,
    CLOSE_REPLACED,
    PICTURE_FIELD,
    PLAY_STATES,
    Ack,
    Answer,
    AudioBegin,
    AudioClip,
    AudioEnd,
    AvatarInfo,
    AvatarList,
    ClientMessage,
    Close,
    Command,
    CreateAvatar,
    CreateSession,
    ErrorEvent,
    Interrupt,
    Limits,
    MediaInfo,
    Offer,
    PayloadTooLarge,
    Ping,
    PlayState,
    Pong,
    ProtocolError,
    Ready,
    Say,
    Sequenced,
    ServerProtocol,
    SetState,
    StateEvent,
    StatsEvent,
    StreamBegin,
    StreamEnd,
    StreamPart,
    TokenBucket,
    UtteranceEvent,
    avatar_path,
    avatar_preview_path,
    parse_client,
    picture_body_limit,
)
from unison_sdk.protocol import parse_create_avatar as _parse_create_avatar
from unison_sdk.protocol import parse_create_session as _parse_create_session

from unison_stream.server.config import ServerConfig
from unison_stream.server.errors import BadRequest, RateLimited, ServerError, TooLarge

__all__ = [
    "AVATARS_PATH",
    "AVATAR_PREVIEW_PATH",
    "AVATAR_TRAITS_PATH",
    "CLEAN_CLOSE",
    "CLOSE_ENDED",
    "CLOSE_IDLE",
    "CLOSE_MAX_DURATION",
    "CLOSE_REPLACED",
    "PICTURE_FIELD",
    "PLAY_STATES",
    "STATES",
    "Ack",
    "Answer",
    "AudioBegin",
    "AudioClip",
    "AudioEnd",
    "AvatarInfo",
    "AvatarList",
    "BadRequest",
    "ClientMessage",
    "Close",
    "Command",
    "CreateAvatar",
    "CreateSession",
    "ErrorEvent",
    "Interrupt",
    "Limits",
    "MediaInfo",
    "Offer",
    "Ping",
    "PlayState",
    "Pong",
    "ProtocolError",
    "Ready",
    "Say",
    "Sequenced",
    "ServerProtocol",
    "SetState",
    "StateEvent",
    "StatsEvent",
    "StreamBegin",
    "StreamEnd",
    "StreamPart",
    "TokenBucket",
    "UtteranceEvent",
    "avatar_path",
    "avatar_preview_path",
    "dumps",
    "error_msg",
    "limits_for",
    "parse_client_message",
    "parse_create_avatar",
    "parse_create_session",
    "picture_body_limit",
    "server_error",
]

STATES = CLIENT_STATES  # what a client may set; the server also reports "speaking"
_BY_CODE: dict[str, type[ServerError]] = {"bad_request": BadRequest, "rate_limited": RateLimited}


def server_error(e: ProtocolError) -> ServerError:
    """The server's exception for a protocol error (same code, message and ``ref``)."""
    if isinstance(e, PayloadTooLarge):
        return TooLarge(e.message, ref=e.ref)
    return _BY_CODE.get(e.code, ServerError)(e.message, ref=e.ref)


def limits_for(cfg: ServerConfig) -> Limits:
    """The input limits a server with ``cfg`` enforces."""
    return Limits(
        max_message_bytes=cfg.max_message_bytes,
        max_text_chars=cfg.max_text_chars,
        max_caption_chars=cfg.max_caption_chars,
        max_picture_bytes=cfg.avatar_max_upload_bytes,
    )


def parse_client_message(data: str | bytes, limits: Limits) -> ClientMessage:
    """Parse one websocket text message; raise :class:`BadRequest` naming the broken rule."""
    try:
        return parse_client(data, limits)
    except ProtocolError as e:
        raise server_error(e) from e


def parse_create_session(body: bytes, limits: Limits) -> CreateSession:
    """Parse and validate the JSON body (may be empty) of ``POST /v1/sessions``."""
    try:
        return _parse_create_session(body, limits)
    except ProtocolError as e:
        raise server_error(e) from e


def parse_create_avatar(body: bytes, limits: Limits) -> CreateAvatar:
    """Parse the JSON body of ``POST /v1/avatars`` (a picture or a design)."""
    try:
        return _parse_create_avatar(body, limits)
    except ProtocolError as e:
        raise server_error(e) from e


def error_msg(err: ServerError) -> ErrorEvent:
    """The ``error`` message that reports ``err`` to a client."""
    return ErrorEvent(err.code, err.message, err.ref)


def dumps(msg: dict[str, Any]) -> str:
    """Compact JSON, as every message travels."""
    return json.dumps(msg, separators=(",", ":"))
