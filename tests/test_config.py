"""Config schema, presets, overrides and validation."""

from __future__ import annotations

import pytest
import torch

from unison_stream.config import ConfigError, load_config, to_dict
from unison_stream.model.dit import UnisonDiT


def test_tiny_fits_the_cpu_budget() -> None:
    cfg = load_config("tiny")
    assert cfg.tokens_per_chunk() == 4 * 64 + 2 * 8  # a few hundred tokens per chunk
    assert abs(cfg.chunk_seconds() - 0.32) < 1e-9
    with torch.device("meta"):
        params = UnisonDiT(cfg).param_count()
    assert params <= 15_000_000, f"tiny has {params} parameters"


def test_base_builds_on_meta_with_half_to_one_billion_parameters() -> None:
    cfg = load_config("base")
    with torch.device("meta"):
        params = UnisonDiT(cfg).param_count()
    assert 0.5e9 <= params <= 1.0e9, params


def test_dotlist_overrides_win_and_are_typed() -> None:
    cfg = load_config("tiny", ["model.depth=2", "sampler.lead=audio"])
    assert cfg.model.depth == 2 and cfg.sampler.lead == "audio"
    assert to_dict(cfg)["model"]["depth"] == 2
    with pytest.raises(ConfigError, match="bad config value"):
        load_config("tiny", ["model.depth=two"])
    with pytest.raises(ConfigError, match="bad config value"):
        load_config("tiny", ["model.no_such_key=1"])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.heads=3", "model.width"),
        ("latent.audio_hz=30", "latent.audio_hz"),
        ("stream.commit=sometimes", "stream.commit"),
        ("sampler.lead=both", "sampler.lead"),
        ("model.av_window_frames=2", "model.av_window_frames"),
    ],
)
def test_validation_names_the_broken_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("tiny", [override])


def test_unknown_preset_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="no such preset"):
        load_config("huge")
