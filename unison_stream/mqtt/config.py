"""Typed MQTT bridge settings (``MqttConfig``): defaults → YAML → ``key=value`` overrides.

The broker password may come from ``$UNISON_MQTT_PASSWORD`` or ``password_file`` rather than the
YAML, so no secret needs to sit in a config file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from omegaconf import OmegaConf

from unison_stream.config import ConfigError

__all__ = ["PASSWORD_ENV", "MqttConfig", "load_mqtt_config", "validate_mqtt"]

PASSWORD_ENV = "UNISON_MQTT_PASSWORD"


@dataclass
class MqttConfig:
    """Where the broker is, who we are, and which broadcast channels the bridge serves."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None  # or $UNISON_MQTT_PASSWORD, or password_file
    password_file: str | None = None  # a file holding only the password
    client_id: str = "unison-stream"
    prefix: str = "unison"  # topics: <prefix>/<channel>/cmd/say …
    channels: list[str] = field(default_factory=lambda: ["main"])
    caption: str = ""  # scene caption of each channel's engine session
    identity: int = 0  # the world identity each channel shows, unless ``avatar`` is given
    avatar: str | None = None  # a stored avatar's id (av_…, POST /v1/avatars) instead
    # the API key whose stored avatars ``avatar`` is one of (the store keeps each key's apart);
    # unset: the server's first configured key
    avatar_key: str | None = None
    keepalive_s: int = 30  # MQTT keep-alive; the broker sends the last will after 1.5 × this
    reconnect_min_s: float = 0.5  # back-off after a lost broker: doubles up to the max
    reconnect_max_s: float = 30.0
    dedup_window: int = 1024  # request ids remembered per channel (duplicates ignored)


def validate_mqtt(cfg: MqttConfig) -> MqttConfig:
    def need(ok: bool, key: str, rule: str) -> None:
        if not ok:
            raise ConfigError(f"mqtt.{key}: {rule}")

    need(0 < cfg.port < 65536, "port", "must be in [1, 65535]")
    need(bool(cfg.prefix) and not set(cfg.prefix) & set("+#"), "prefix", "non-empty, no + or #")
    need(bool(cfg.channels), "channels", "at least one channel")
    for ch in cfg.channels:
        need(bool(ch) and not set(ch) & set("/+#"), "channels", f"{ch!r}: no '/', '+' or '#'")
    need(cfg.keepalive_s >= 1, "keepalive_s", "must be ≥ 1")
    need(0 < cfg.reconnect_min_s <= cfg.reconnect_max_s, "reconnect_min_s", "0 < min ≤ max")
    need(cfg.dedup_window >= 1, "dedup_window", "must be ≥ 1")
    need(cfg.avatar is None or bool(cfg.avatar), "avatar", "an avatar id (av_…) or unset")
    if cfg.password is None and cfg.password_file:
        path = Path(cfg.password_file)
        need(path.is_file(), "password_file", f"{path}: no such file")
        cfg.password = path.read_text().strip()
    return cfg


def load_mqtt_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> MqttConfig:
    """Schema defaults → YAML ``path`` → dotlist ``overrides``; password from the environment."""
    layers = [OmegaConf.structured(MqttConfig)]
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError(f"mqtt config {path}: no such file")
        layers.append(OmegaConf.load(path))
    layers.append(OmegaConf.from_dotlist(list(overrides)))
    try:
        cfg = cast(MqttConfig, OmegaConf.to_object(OmegaConf.merge(*layers)))
    except Exception as e:  # omegaconf raises several types; all mean "bad key or value"
        raise ConfigError(f"bad mqtt config value: {e}") from e
    if cfg.password is None and os.environ.get(PASSWORD_ENV):
        cfg.password = os.environ[PASSWORD_ENV]
    return validate_mqtt(cfg)
