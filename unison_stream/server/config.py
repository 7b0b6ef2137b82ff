"""Typed server settings (``ServerConfig``), loaded like the model config.

Schema defaults → optional YAML file → dotlist overrides (``server.port=9000`` style keys without
the prefix: ``port=9000``), validated once by :func:`validate_server`. API keys also come from
the environment variable ``UNISON_API_KEYS`` (comma-separated), so no secret needs to sit in a
file. Defaults are safe: loopback only, bound to 127.0.0.1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from omegaconf import OmegaConf

from unison_stream.config import ConfigError
from unison_stream.vocab import MAX_TEXT_CHARS

__all__ = ["API_KEYS_ENV", "IceServer", "ServerConfig", "load_server_config", "validate_server"]

API_KEYS_ENV = "UNISON_API_KEYS"


@dataclass
class IceServer:
    urls: list[str] = field(default_factory=list)  # e.g. ["stun:stun.example.org:3478"]
    username: str | None = None
    credential: str | None = None


@dataclass
class ServerConfig:
    """Everything the streaming server needs besides the model config."""

    host: str = "127.0.0.1"  # bind address; serving other machines is an explicit choice
    port: int = 8080
    api_keys: list[str] = field(default_factory=list)  # plus $UNISON_API_KEYS
    token_secret: str = ""  # HMAC key for session tokens; empty → random per process
    token_ttl_s: float = 60.0  # a session token must open its websocket within this time
    # WebRTC: loopback_only gathers only 127.0.0.1 host candidates and ignores ice_servers
    loopback_only: bool = True
    ice_servers: list[IceServer] = field(default_factory=list)
    # capacity: engine sessions (private sessions + broadcast channels) and viewers per channel.
    # "auto": measured at start-up, the most sessions the host serves at rtf ≥ 1.1 each
    # (capacity.py; docs/server.md "Capacity"); an integer is taken as it is
    max_sessions: int | str = 4
    max_viewers: int = 16
    retry_after_s: int = 5  # the ``Retry-After`` of a 503 (at capacity): when to try again
    # limits on client input
    max_message_bytes: int = 65536  # one websocket text message
    max_text_chars: int = MAX_TEXT_CHARS  # one ``say``; at most the planner's limit
    max_caption_chars: int = 200
    say_rate_per_s: float = 4.0  # token bucket refill rate for ``say``
    say_burst: int = 8  # token bucket size
    max_audio_s: float = 30.0  # one ``audio_begin`` … ``audio_end`` upload
    # lifetime
    idle_timeout_s: float = 300.0  # no client message for this long → session ends
    max_duration_s: float = 3600.0  # hard cap on a session's life
    keepalive_s: float = 20.0  # websocket ping interval; a missing pong closes the socket
    # an HTTP connection with no complete request for this long is closed (idle keep-alive
    # connections, and slow-drip clients that never finish their headers)
    http_idle_timeout_s: float = 15.0
    # resume: a websocket lost without a close frame keeps its session this long, so the client
    # can reconnect (``?resume=…&last_seq=N``) and get every event it missed exactly once
    resume_grace_s: float = 30.0  # 0 → a lost websocket ends the session at once
    resume_buffer: int = 2048  # unacknowledged events kept per session for replay
    # media
    buffer_s: float = 1.0  # media the engine makes ahead of playout (its queue: the one buffer)
    # an utterance starts once the measured production rate and jitter can play it through
    # without a gap, waiting at most this long (docs/server.md "Buffer policy")
    max_prebuffer_s: float = 4.0
    stats_interval_s: float = 1.0  # period of ``stats`` messages
    broadcast_gop_s: float = 2.0  # keyframe interval of a broadcast channel's shared encoder
    video_bitrate: int = 500_000  # broadcast channel VP8 target bitrate (bit/s)
    # avatars (docs/avatars.md): the store's folder, shared by every replica that mounts it;
    # "" → a temporary folder that lasts as long as the process
    avatar_dir: str = ""
    avatar_max_per_key: int = 20  # avatars one API key may keep
    avatar_max_bytes_per_key: int = 8 * 1024 * 1024  # … and their bytes on disk
    avatar_max_upload_bytes: int = 4 * 1024 * 1024  # one uploaded picture (PNG, JPEG, WebP)


def validate_server(cfg: ServerConfig) -> ServerConfig:
    """Check each rule once at start-up; raise :class:`ConfigError` naming the key."""

    def need(ok: bool, key: str, rule: str) -> None:
        if not ok:
            raise ConfigError(f"server.{key}: {rule}")

    need(0 <= cfg.port < 65536, "port", "must be in [0, 65535] (0 = any free port)")
    need(cfg.token_ttl_s > 0, "token_ttl_s", "must be > 0")
    need(
        cfg.max_sessions == "auto" or (isinstance(cfg.max_sessions, int) and cfg.max_sessions >= 1),
        "max_sessions",
        f"must be an integer ≥ 1 or auto, not {cfg.max_sessions!r}",
    )
    need(cfg.retry_after_s >= 1, "retry_after_s", "must be ≥ 1 (whole seconds)")
    need(cfg.max_viewers >= 1, "max_viewers", "must be ≥ 1")
    need(cfg.max_message_bytes >= 1024, "max_message_bytes", "must be ≥ 1024")
    need(
        1 <= cfg.max_text_chars <= MAX_TEXT_CHARS,
        "max_text_chars",
        f"must be in 1..{MAX_TEXT_CHARS} (the planner's limit)",
    )
    need(cfg.say_rate_per_s > 0 and cfg.say_burst >= 1, "say_rate_per_s", "rate > 0, burst ≥ 1")
    need(cfg.idle_timeout_s > 0, "idle_timeout_s", "must be > 0")
    need(cfg.max_duration_s > 0, "max_duration_s", "must be > 0")
    need(cfg.http_idle_timeout_s > 0, "http_idle_timeout_s", "must be > 0")
    need(cfg.resume_grace_s >= 0, "resume_grace_s", "must be ≥ 0")
    need(cfg.resume_buffer >= 16, "resume_buffer", "must be ≥ 16")
    need(cfg.buffer_s > 0, "buffer_s", "must be > 0")
    need(cfg.max_prebuffer_s >= 0, "max_prebuffer_s", "must be >= 0")
    need(cfg.stats_interval_s > 0, "stats_interval_s", "must be > 0")
    need(cfg.avatar_max_per_key >= 1, "avatar_max_per_key", "must be ≥ 1")
    need(cfg.avatar_max_bytes_per_key >= 65536, "avatar_max_bytes_per_key", "must be ≥ 65536")
    need(
        1024 <= cfg.avatar_max_upload_bytes <= 4 * 1024 * 1024,
        "avatar_max_upload_bytes",
        "must be in 1024..4194304 (the avatars package refuses larger pictures)",
    )
    if cfg.loopback_only:
        need(
            cfg.host in ("127.0.0.1", "localhost", "::1"),
            "host",
            "loopback_only=true needs a loopback host; set loopback_only=false to serve others",
        )
    return cfg


def load_server_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> ServerConfig:
    """Schema defaults → YAML ``path`` (optional) → dotlist ``overrides``; keys from the env."""
    layers = [OmegaConf.structured(ServerConfig)]
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError(f"server config {path}: no such file")
        layers.append(OmegaConf.load(path))
    layers.append(OmegaConf.from_dotlist(list(overrides)))
    try:
        cfg = cast(ServerConfig, OmegaConf.to_object(OmegaConf.merge(*layers)))
    except Exception as e:  # omegaconf raises several types; all mean "bad key or value"
        raise ConfigError(f"bad server config value: {e}") from e
    env_keys = [k.strip() for k in os.environ.get(API_KEYS_ENV, "").split(",") if k.strip()]
    cfg.api_keys = [*cfg.api_keys, *env_keys]
    return validate_server(cfg)
