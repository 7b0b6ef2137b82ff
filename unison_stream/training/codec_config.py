"""Configuration of one codec training run (``unison-stream train codec``; ``docs/codecs.md``).

Only training reads it: the architecture the weights are built from stays in
:mod:`unison_stream.codecs.config`. Every loss term's weight sits in one ``losses`` dict keyed
by its name in the registry of :mod:`.codec_losses`; the defaults below say what each is for.
Runs before the registry spelt the weights as fields (``edge_weight=1.0``, ``adv_weight=0.5``,
``latent_l2=1e-3``, as the journal's commands do): :func:`renamed_overrides` maps those
overrides to ``losses.<name>=…``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

from omegaconf import OmegaConf

from unison_stream.codecs.config import AudioCodecConfig
from unison_stream.config import ConfigError

__all__ = [
    "DEFAULT_LOSS_WEIGHTS",
    "CodecTrainConfig",
    "load_codec_train_config",
    "loss_weights",
    "renamed_overrides",
]

log = logging.getLogger(__name__)

# name → weight of every term the trainer knows; a run's ``losses`` overrides some of them.
# Each non-zero default is the base recipe; each zero is one experiment's term, with the weight
# the bundled decoders were trained with in the comment (docs/codecs.md, the stage table).
DEFAULT_LOSS_WEIGHTS: dict[str, float] = {
    "l1": 1.0,  # video: L1 on pixels, the base reconstruction
    "mr_stft": 1.0,  # audio: multi-resolution STFT distance ...
    "mel": 1.0,  # ... and log-mel L1, the base reconstruction
    "latent_l2": 1e-3,  # both: keeps latents near unit scale so the model sees sane inputs
    "eye_blur": 0.0,  # video: blurred L1 inside the eyes (bundled: 10)
    "sharp": 0.0,  # video: L1 of local RMS luminance gradients (bundled: 32)
    "edge": 0.0,  # video: L1 of pixel differences (bundled: 1)
    "envelope": 0.0,  # audio: L1 of 5 ms log-RMS envelopes, sharp attacks (bundled: 1)
    # video: L1 and interior-colour membership L1 inside the mouth (candidate: 10)
    "mouth": 0.0,
    # not terms of their own but weightings of the l1 term's pixels (codec_losses.l1)
    "detail": 0.0,  # pixels unlike their neighbours (irises, lips) weigh more (bundled: 4)
    "eye": 0.0,  # pixels inside the eyes weigh more (tried: moves nothing eye_blur does not)
    # the patch critic's hinge loss × the adaptive weight λ (codec_losses.Adversary); from
    # step adv_start on (bundled: 0.5)
    "adv": 0.0,
}

# the fields a weight was before the registry → its name in ``losses``
RENAMED: dict[str, str] = {
    "latent_l2": "latent_l2",
    "envelope_weight": "envelope",
    "edge_weight": "edge",
    "detail_weight": "detail",
    "eye_weight": "eye",
    "eye_blur_weight": "eye_blur",
    "sharp_weight": "sharp",
    "adv_weight": "adv",
    "mouth_weight": "mouth",
}


@dataclass
class CodecTrainConfig:
    """One training run of one codec (``unison-stream train codec``)."""

    kind: str = "video"  # "video" or "audio"
    steps: int = 3000
    batch: int = 16
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.0
    latent_noise: float = 0.1  # σ of Gaussian noise added to (normalised) latents in training
    crop: int = 64  # video: crop side in pixels (the nets are fully convolutional)
    clip_latents: int = 3  # video latent frames per crop
    audio_latents: int = 24  # audio latent frames per crop (0.96 s at 25 Hz)
    val_every: int = 250
    ckpt_every: int = 250
    threads: int = 1
    seed: int = 0
    data_dir: str = "data/codec"
    out_dir: str = "runs/codec"
    stems: tuple[str, ...] = ("speech", "sfx", "mix")  # one audio codec for every stem
    init: str = ""  # "bundled": start from the bundled codec of this kind
    freeze_encoder: bool = False  # decoder only: latents, and a DiT trained on them, stay valid
    event_crop_prob: float = 0.0  # audio: share of crops holding an effect onset (SFX or mix)
    # every loss term's weight by name (DEFAULT_LOSS_WEIGHTS; a name left out keeps its default)
    losses: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LOSS_WEIGHTS))
    # video: train a decoder that reads a reference frame (VideoCodecConfig.reference); its
    # reference is another frame of the crop's clip, left out (zeros) this share of the time
    video_reference: bool = False
    reference_drop: float = 0.1
    video_reference_attention: bool = False  # the decoder also looks the reference up
    # learning rate of what a fine-tune (init=bundled) adds, a reference path or its attention
    # (lr: everything else)
    reference_lr: float = 2e-4
    # video, losses.adv > 0: the decoder gets the critic's term from step adv_start on; the
    # critic trains from step 0 (a fresh critic warms up on a trained decoder)
    adv_start: int = 0
    disc_lr: float = 2e-4
    disc_width: int = 32
    # audio: the codec built for training (init=bundled loads every bundled tensor that fits it,
    # so a decoder with its own STFT starts from the bundled encoder and conv blocks)
    audio_codec: AudioCodecConfig = field(default_factory=AudioCodecConfig)
    extra: dict[str, str] = field(default_factory=dict)


def loss_weights(losses: Mapping[str, float]) -> dict[str, float]:
    """Every term's weight: :data:`DEFAULT_LOSS_WEIGHTS` updated by ``losses``; raises
    :class:`ConfigError` on a name no term has or a negative weight."""
    unknown = sorted(set(losses) - set(DEFAULT_LOSS_WEIGHTS))
    if unknown:
        known = ", ".join(DEFAULT_LOSS_WEIGHTS)
        raise ConfigError(f"losses: no term named {', '.join(unknown)} (the terms: {known})")
    weights = {**DEFAULT_LOSS_WEIGHTS, **losses}
    negative = [name for name, w in weights.items() if w < 0]
    if negative:
        raise ConfigError(f"losses: weights are ≥ 0, not {', '.join(negative)}")
    return weights


def renamed_overrides(overrides: Sequence[str]) -> list[str]:
    """``overrides`` with the weights' old spelling (``edge_weight=1.0``) in the new one
    (``losses.edge=1.0``), each renaming logged; every other override unchanged."""
    out = []
    for o in overrides:
        key, sep, value = o.partition("=")
        if sep and key in RENAMED:
            log.warning("%s is now losses.%s", key, RENAMED[key])
            o = f"losses.{RENAMED[key]}={value}"
        out.append(o)
    return out


def load_codec_train_config(kind: str, overrides: Sequence[str] = ()) -> CodecTrainConfig:
    """The defaults for ``kind`` merged with dotlist ``overrides`` (old weight names accepted,
    :func:`renamed_overrides`), checked once."""
    base = OmegaConf.structured(CodecTrainConfig(kind=kind))
    try:
        merged = OmegaConf.merge(base, OmegaConf.from_dotlist(renamed_overrides(overrides)))
    except Exception as e:  # omegaconf raises several types; all mean "bad key or value"
        raise ConfigError(f"bad codec training config value: {e}") from e
    tc = cast(CodecTrainConfig, OmegaConf.to_object(merged))
    if tc.kind not in ("video", "audio"):
        raise ConfigError(f"kind: video or audio, not {tc.kind!r}")
    loss_weights(tc.losses)
    return tc
