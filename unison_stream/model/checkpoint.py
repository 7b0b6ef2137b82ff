"""Model checkpoints: safetensors weights with the config stored in the file's metadata."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from unison_stream.config import UnisonConfig, load_config, to_dict, validate
from unison_stream.model.dit import UnisonDiT

__all__ = ["BUNDLED_DIR", "bundled_checkpoint", "default_model", "load_model", "save_model"]

log = logging.getLogger(__name__)

# The bundled default weights: ``<preset>.safetensors`` trained by this project's own pipeline
# (config and training log beside it).
BUNDLED_DIR = Path(__file__).resolve().parent / "weights"
_ARCH_SECTIONS = ("media", "latent", "model")  # what the weights' shapes and meaning depend on


def bundled_checkpoint(preset: str) -> Path | None:
    """The bundled checkpoint of ``preset``, or None when the project ships none."""
    path = BUNDLED_DIR / f"{preset}.safetensors"
    return path if path.is_file() else None


def default_model(cfg: UnisonConfig) -> UnisonDiT:
    """A model for ``cfg``: the bundled weights of ``cfg.preset`` when their architecture
    (media, latent, model sections) equals ``cfg``'s, else fresh random weights (logged)."""
    model = UnisonDiT(cfg)
    path = bundled_checkpoint(cfg.preset)
    if path is None:
        log.warning("no bundled weights for preset %r: the model is untrained", cfg.preset)
        return model
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        stored = json.loads((f.metadata() or {}).get("config", "{}"))
    want = to_dict(cfg)
    if any(stored.get(k) != want[k] for k in _ARCH_SECTIONS):
        log.warning(
            "bundled %s does not fit this config's architecture: untrained model", path.name
        )
        return model
    model.load_state_dict(load_file(str(path)))
    log.info("loaded the bundled weights %s", path)
    return model


def save_model(model: UnisonDiT, path: str | Path, extra: dict[str, str] | None = None) -> Path:
    """Write ``model``'s weights and config to ``path`` (a .safetensors file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"config": json.dumps(to_dict(model.cfg)), **(extra or {})}
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=meta)
    return path


def load_model(
    checkpoint: str | Path | None,
    *,
    preset: str = "tiny",
    overrides: list[str] | tuple[str, ...] = (),
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> UnisonDiT:
    """A model from a checkpoint (its stored config, then ``overrides``), or fresh random
    weights for ``preset`` when ``checkpoint`` is None."""
    if checkpoint is None:
        cfg = load_config(preset, overrides)
        state = None
    else:
        from safetensors import safe_open

        with safe_open(str(checkpoint), framework="pt") as f:
            meta = f.metadata() or {}
        if "config" not in meta:
            raise ValueError(f"{checkpoint}: no config in the checkpoint's metadata")
        merged = OmegaConf.merge(
            OmegaConf.structured(UnisonConfig),
            OmegaConf.create(json.loads(meta["config"])),
            OmegaConf.from_dotlist(list(overrides)),
        )
        cfg = validate(OmegaConf.to_object(merged))  # type: ignore[arg-type]  # structured → UnisonConfig
        state = load_file(str(checkpoint))
    model = UnisonDiT(cfg)
    if state is not None:
        model.load_state_dict(state)
    return model.to(device=device, dtype=dtype).eval()
