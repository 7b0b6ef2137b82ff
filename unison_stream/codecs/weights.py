"""Bundled codec weights: where they live, how they are written and read back.

Layout (``unison_stream/codecs/weights/``): ``<kind>.safetensors`` (fp16 tensors; metadata
holds the codec config and the latent shape it was trained for), ``<kind>.yaml`` (the same
config, for people) and ``<kind>_train.json`` (the training history). ``kind`` is ``video``
or ``audio``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from unison_stream.codecs.audio import AudioAE
from unison_stream.codecs.config import AudioCodecConfig, VideoCodecConfig
from unison_stream.codecs.video import VideoAE
from unison_stream.config import LatentConfig, MediaConfig

__all__ = ["WEIGHTS_DIR", "build", "export", "load", "weights_path"]

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def weights_path(kind: str, root: Path | None = None) -> Path:
    return (root or WEIGHTS_DIR) / f"{kind}.safetensors"


def build(kind: str, codec_cfg: Any, latent: LatentConfig, media: MediaConfig) -> torch.nn.Module:
    """A fresh (untrained) codec of ``kind``."""
    if kind == "video":
        return VideoAE(codec_cfg, latent)
    if kind == "audio":
        return AudioAE(codec_cfg, latent, media)
    raise ValueError(f"codec kind must be 'video' or 'audio', got {kind!r}")


def default_codec_cfg(kind: str) -> VideoCodecConfig | AudioCodecConfig:
    return VideoCodecConfig() if kind == "video" else AudioCodecConfig()


def _latent_key(kind: str, latent: LatentConfig, media: MediaConfig) -> dict[str, Any]:
    """The latent-shape facts a codec is bound to (a mismatch means retraining)."""
    if kind == "video":
        return {
            "channels": latent.video_channels,
            "downsample": latent.video_downsample,
            "time_stride": latent.video_time_stride,
            "height": media.height,
            "width": media.width,
        }
    return {
        "channels": latent.audio_channels,
        "audio_hz": latent.audio_hz,
        "sample_rate": media.sample_rate,
    }


def export(
    model: torch.nn.Module,
    kind: str,
    latent: LatentConfig,
    media: MediaConfig,
    history: dict[str, Any],
    root: Path | None = None,
) -> Path:
    """Write the bundled weights (fp16), config YAML and training history for ``kind``."""
    path = weights_path(kind, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = model.cfg  # both codecs keep their config as .cfg
    cfg_yaml = OmegaConf.to_yaml(OmegaConf.structured(cfg))
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    meta = {
        "kind": kind,
        "config": json.dumps(OmegaConf.to_container(OmegaConf.structured(cfg))),
        "latent": json.dumps(_latent_key(kind, latent, media)),
    }
    save_file(tensors, str(path), metadata=meta)
    path.with_suffix(".yaml").write_text(cfg_yaml)
    (path.parent / f"{kind}_train.json").write_text(json.dumps(history, indent=1))
    log.info("exported %s codec to %s (%.2f MB)", kind, path, path.stat().st_size / 1e6)
    return path


def load(
    kind: str, latent: LatentConfig, media: MediaConfig, root: Path | None = None
) -> torch.nn.Module | None:
    """The bundled codec of ``kind`` in fp32 eval mode, or None when no weights fit ``latent``."""
    path = weights_path(kind, root)
    if not path.exists():
        return None
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    want = _latent_key(kind, latent, media)
    got = json.loads(meta.get("latent", "{}"))
    if got != want:
        log.warning("%s codec weights at %s were trained for %s, config wants %s: not used",
                    kind, path, got, want)  # fmt: skip
        return None
    schema = OmegaConf.structured(default_codec_cfg(kind))
    cfg = OmegaConf.to_object(OmegaConf.merge(schema, json.loads(meta["config"])))
    model = build(kind, cfg, latent, media)
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    model.load_state_dict(state)
    return model.eval()
