"""Typed training configuration (schema → ``configs/train_<name>.yaml`` → dotlist overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from omegaconf import OmegaConf

from unison_stream.config import CONFIG_DIR, ConfigError

__all__ = ["CurriculumConfig", "DistillConfig", "TaskConfig", "TrainConfig", "load_train_config"]


@dataclass
class CurriculumConfig:
    """Progressive stabilization (``docs/training.md``): sync → bounded gap → independent."""

    sync_frac: float = 0.3  # first 30 % of steps: t_a = t_v
    bounded_frac: float = 0.4  # next 40 %: independent with probability p, |t_a − t_v| ≤ gap
    p_independent: float = 0.5
    max_gap: float = 0.25
    lam: float = 0.5  # λ of (1 + λd)·L_video + (1 + λ(1 − d))·(L_speech + L_sfx)
    clean_history_prob: float = 0.25  # per sequence: history chunks at t = 0 (as the cache holds)


@dataclass
class TaskConfig:
    """Multi-task mixture: which modality is held clean."""

    text_to_av: float = 0.7  # both generated
    audio_to_video: float = 0.15  # speech and SFX given clean
    video_to_audio: float = 0.15  # video given clean


@dataclass
class DistillConfig:
    """Few-step streaming stage: roll out through the KV cache, regress the teacher's ODE."""

    teacher_steps: int = 16
    student_steps: int = 4
    history: str = "teacher"  # whose output is committed to the caches: "teacher" | "student"
    chunks: int = 4  # chunks rolled out per sequence
    # the teacher samples with the event guidance of its sampler config (guidance
    # distillation: the student makes no extra call for effects)
    guidance: bool = False
    audio_driven_prob: float = 0.0  # per step: speech given clean (the audio→video task)
    heard_track_prob: float = 0.0  # per audio-driven step: the front end's track, not the true one
    # the student's starting weights; empty: a copy of the teacher (``init``). A student
    # already distilled can so be fine-tuned further, e.g. on its own rollouts
    student_init: str = ""
    # the teacher's event guidance (SFX, video); None: the model config's sampler. Set it: the
    # bundled preset samples the student, whose own guidance is off (1.0)
    teacher_event_guidance: float | None = None
    teacher_event_guidance_video: float | None = None
    teacher_event_guidance_min_t: float | None = None  # the teacher's guided steps' lowest level


@dataclass
class TrainConfig:
    name: str = "tiny"
    out_dir: str = "runs/tiny"
    steps: int = 2000
    batch: int = 4
    seq_chunks: int = 4  # chunks per training sequence, chunk 0 being the reference (sink)
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup: int = 100
    grad_clip: float = 1.0
    ema: float = 0.999
    log_every: int = 10
    val_every: int = 200
    ckpt_every: int = 200
    seed: int = 0
    precision: str = "fp32"  # "fp32" | "bf16" (autocast)
    strategy: str = "ddp"  # "ddp" | "fsdp" (under torchrun; single process otherwise)
    data: str = ""  # latent dataset directory (empty: a random batch source, for smoke tests)
    init: str = ""  # weights to start from (an exported model or a run checkpoint); "" = random
    sfx_weight: float = 1.0  # multiplier of the SFX term (effects are sparse: ~1 per clip)
    event_window_prob: float = 0.0  # per sequence: the window is cut around a random event
    # SFX latent frames overlapping [onset − 40 ms, onset + 160 ms] of an event weigh 1 + this
    event_frame_weight: float = 0.0
    # share of the audio-driven rows (and distillation steps) conditioned on the speech front
    # end's track of the clip's speech instead of the world's true track: what serving gives
    heard_track_prob: float = 0.0
    # share of sequences that see the engine's generic caption (a session opened without one)
    # instead of their own; listening clips see the second, the engine's listening caption
    generic_caption_prob: float = 0.0
    generic_captions: tuple[str, str] = (
        "a person talking in a quiet room",
        "a person talking in a quiet room, listening attentively",
    )
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    tasks: TaskConfig = field(default_factory=TaskConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    # model-config overrides this run trains with (dotlist, e.g. model.ablation.scg=false),
    # applied after the preset and before the command line's: an ablation is one training file
    model_overrides: list[str] = field(default_factory=list)
    # a training preset this file extends (its keys first, this file's over them)
    extends: str = ""


def load_train_config(
    name: str | Path = "tiny", overrides: list[str] | tuple[str, ...] = ()
) -> TrainConfig:
    """``configs/train_<name>.yaml`` (or a YAML path) merged over the schema, then overrides."""
    layers: list[Any] = []
    while True:  # the file, then the presets it extends (at most a few levels)
        path = Path(name)
        if not path.is_file():
            path = CONFIG_DIR / f"train_{name}.yaml"
        if not path.is_file():
            raise ConfigError(f"training preset {name!r}: no configs/train_{name}.yaml or file")
        layers.insert(0, OmegaConf.load(path))
        name = str(layers[0].get("extends", "") or "")
        if not name:
            break
        if len(layers) > 8:
            raise ConfigError("training presets extend each other in a loop")
    try:
        merged = OmegaConf.merge(
            OmegaConf.structured(TrainConfig), *layers, OmegaConf.from_dotlist(list(overrides))
        )
    except Exception as e:  # omegaconf raises several types; all mean "bad key or value"
        raise ConfigError(f"bad training config value: {e}") from e
    cfg = cast(TrainConfig, OmegaConf.to_object(merged))
    c = cfg.curriculum
    if not 0 <= c.sync_frac + c.bounded_frac <= 1:
        raise ConfigError("curriculum: sync_frac + bounded_frac must lie in [0, 1]")
    t = cfg.tasks
    if (
        min(t.text_to_av, t.audio_to_video, t.video_to_audio) < 0
        or t.text_to_av + t.audio_to_video + t.video_to_audio <= 0
    ):
        raise ConfigError("tasks: probabilities must be ≥ 0 and not all 0")
    if cfg.precision not in ("fp32", "bf16"):
        raise ConfigError("precision: fp32 or bf16")
    if cfg.strategy not in ("ddp", "fsdp"):
        raise ConfigError("strategy: ddp or fsdp")
    if cfg.sfx_weight < 0 or cfg.event_frame_weight < 0 or not 0 <= cfg.event_window_prob <= 1:
        raise ConfigError("sfx_weight, event_frame_weight: ≥ 0; event_window_prob: in [0, 1]")
    if not (0 <= cfg.heard_track_prob <= 1 and 0 <= cfg.generic_caption_prob <= 1):
        raise ConfigError("heard_track_prob, generic_caption_prob: in [0, 1]")
    if cfg.seq_chunks < 2:
        raise ConfigError("seq_chunks: ≥ 2 (the reference chunk and at least one generated chunk)")
    return cfg
