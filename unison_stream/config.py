"""Typed configuration: dataclass schemas, YAML presets and CLI dotlist overrides.

Every size, rate and switch the code uses lives here (STYLE.md §3). A config is built once at
start-up: schema defaults → preset YAML (``configs/<name>.yaml``) → dotlist overrides
(``model.depth=6``), then validated by :func:`validate`. The derived quantities the model needs
(tokens per frame, chunk duration, …) are methods, so nothing is stored twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from omegaconf import OmegaConf

from unison_stream.vocab import EVENT_CLASSES, TRACK_VOCAB

__all__ = [
    "PRESETS",
    "AblationConfig",
    "ConfigError",
    "LatentConfig",
    "MediaConfig",
    "ModelConfig",
    "RuntimeConfig",
    "SamplerConfig",
    "StreamConfig",
    "UnisonConfig",
    "load_config",
    "validate",
]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # package data (a wheel has them)
PRESETS: tuple[str, ...] = ("tiny", "base")


class ConfigError(ValueError):
    """A configuration value breaks a rule; the message names the key and the rule."""


@dataclass
class MediaConfig:
    """What the client sees and hears."""

    fps: float = 25.0  # output video frame rate
    width: int = 128
    height: int = 128
    sample_rate: int = 16000  # model audio rate; WebRTC resamples to 48 kHz


@dataclass
class LatentConfig:
    """Shape of the codec latents the diffusion model works on.

    The video and audio latent grids align exactly (25 fps video, 25 Hz audio latents), so a
    chunk holds whole latent frames of both (``docs/codecs.md``)."""

    video_channels: int = 8
    video_downsample: int = 8  # pixels per latent cell along each side: 128 px → 16 cells
    video_time_stride: int = 2  # output frames per latent frame: 25 fps → 12.5 latent fps
    audio_channels: int = 32
    audio_hz: float = 25.0  # audio latent frames per second (2 per video latent frame)
    patch: int = 2  # latent cells per token side: 16×16 cells → 8×8 = 64 tokens per frame

    def video_latent_fps(self, media: MediaConfig) -> float:
        return media.fps / self.video_time_stride

    def latent_hw(self, media: MediaConfig) -> tuple[int, int]:
        return media.height // self.video_downsample, media.width // self.video_downsample

    def tokens_per_frame(self, media: MediaConfig) -> int:
        h, w = self.latent_hw(media)
        return (h // self.patch) * (w // self.patch)

    def video_token_dim(self) -> int:
        return self.video_channels * self.patch * self.patch


@dataclass
class AblationConfig:
    """One switch per component of the method; each is proven by a test to cut its path."""

    split_audio: bool = True  # speech and SFX as two sub-streams (False: one mixed stream)
    bi_aca: bool = True  # bidirectional audio cross-attention between speech and SFX
    scg: bool = True  # semantic-conditioned gates on Bi-ACA (False: gates fixed at 1)
    cross_modal_forcing: bool = True  # offset schedules / independent timesteps per modality
    cross_modal_attention: bool = True  # audio↔video windowed cross-attention


@dataclass
class ModelConfig:
    """The dual-stream DiT (``docs/model.md``)."""

    width: int = 256  # D, shared by both streams so cross-attention needs no projection
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    text_dim: int = 384  # all-MiniLM-L6-v2 embedding width
    max_caption_tokens: int = 16
    track_vocab: int = len(TRACK_VOCAB)
    event_classes: int = len(EVENT_CLASSES)
    track_window_s: float = 0.24  # a query sees track tokens within this margin of their span
    av_window_frames: int = 3  # audio↔video attention: centre video latent frame ± 1
    rope_min_period_s: float = 0.04  # shortest rotary period, one audio latent frame
    rope_max_period_s: float = 60.0  # longest rotary period
    scg_hidden: int = 128
    ablation: AblationConfig = field(default_factory=AblationConfig)


@dataclass
class StreamConfig:
    """Causal chunking and the rolling KV cache (``docs/model.md``, ``docs/engine.md``)."""

    chunk_latent_frames: int = 4  # video latent frames per chunk: 4 / 12.5 fps = 0.32 s
    window_chunks: int = 4  # W: chunks kept besides the permanent sink
    commit: str = "clean_pass"  # "clean_pass" (extra forward at t=0) or "last_step"
    # streaming audio input (say_audio_stream): a chunk whose speech is this late past the
    # stream's real-time pace is replaced by a listening chunk (the stream slips one chunk)
    input_grace_s: float = 0.16


@dataclass
class SamplerConfig:
    """Flow-matching sampler per chunk."""

    steps: int = 4  # denoising steps per chunk (real time needs ≤ 4 on a CPU)
    shift: float = 1.0  # timestep shift s: t' = s·t / (1 + (s−1)·t); 1 = uniform grid
    lead: str = "none"  # default leading modality: "none", "audio" or "video"
    lead_steps: int = 1  # how many solver steps the leading modality runs ahead
    # event guidance w: in chunks where an event token starts, the SFX velocity is
    # v(no events) + w·(v(events) − v(no events)); 1 = off (one model call per step)
    event_guidance: float = 1.0
    # the same for the video velocity (the gesture), from the same extra call; 1 = off
    event_guidance_video: float = 1.0
    # guide only the solver steps whose noise level is at least this (the early, coarse steps
    # decide whether and when an effect sounds; guiding the late ones mostly makes it louder);
    # 0 = every step
    event_guidance_min_t: float = 0.0


@dataclass
class RuntimeConfig:
    device: str = "auto"  # "auto" → cuda when available, else cpu
    dtype: str = "auto"  # "auto" → bf16 on cuda, fp32 on cpu; or "fp32" / "bf16"
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    seed: int = 0
    # where the engine's model replica runs: "process" (a child process whose main thread runs
    # the model; on CPU a non-main thread runs it ~2× slower) or "thread" (in-process)
    replica: str = "process"
    # a process replica that answers no call for this long is taken as hung: it is killed and
    # restarted like a dead one (its sessions re-sink); 0 waits for ever
    replica_timeout_s: float = 60.0


@dataclass
class UnisonConfig:
    preset: str = "tiny"
    media: MediaConfig = field(default_factory=MediaConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    # ---- derived quantities (never stored) --------------------------------------------------
    def tokens_per_frame(self) -> int:
        return self.latent.tokens_per_frame(self.media)

    def video_latent_fps(self) -> float:
        return self.latent.video_latent_fps(self.media)

    def chunk_seconds(self) -> float:
        return self.stream.chunk_latent_frames / self.video_latent_fps()

    def audio_frames_per_chunk(self) -> int:
        n = self.chunk_seconds() * self.latent.audio_hz
        return round(n)

    def audio_streams(self) -> int:
        return 2 if self.model.ablation.split_audio else 1

    def video_tokens_per_chunk(self) -> int:
        return self.stream.chunk_latent_frames * self.tokens_per_frame()

    def audio_tokens_per_chunk(self) -> int:
        return self.audio_streams() * self.audio_frames_per_chunk()

    def tokens_per_chunk(self) -> int:
        return self.video_tokens_per_chunk() + self.audio_tokens_per_chunk()


def validate(cfg: UnisonConfig) -> UnisonConfig:
    """Check the rules that the model relies on; raise :class:`ConfigError` naming the key."""
    m, lat, s = cfg.model, cfg.latent, cfg.stream

    def need(ok: bool, key: str, rule: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: {rule}")

    need(m.width % m.heads == 0, "model.width", f"must be divisible by model.heads={m.heads}")
    need((m.width // m.heads) % 2 == 0, "model.heads", "head width must be even for rotary")
    need(m.depth >= 1, "model.depth", "must be ≥ 1")
    need(
        cfg.media.height % (lat.video_downsample * lat.patch) == 0
        and cfg.media.width % (lat.video_downsample * lat.patch) == 0,
        "latent.patch",
        "frame size must be a multiple of video_downsample × patch",
    )
    per_chunk = cfg.chunk_seconds() * lat.audio_hz
    need(
        abs(per_chunk - round(per_chunk)) < 1e-6 and per_chunk >= 1,
        "latent.audio_hz",
        f"a chunk of {cfg.chunk_seconds():.3f} s must hold a whole number of audio latents "
        f"(got {per_chunk:.3f})",
    )
    need(m.av_window_frames % 2 == 1, "model.av_window_frames", "must be odd (centre kept)")
    need(s.window_chunks >= 1, "stream.window_chunks", "must be ≥ 1")
    need(s.chunk_latent_frames >= 1, "stream.chunk_latent_frames", "must be ≥ 1")
    need(s.commit in ("clean_pass", "last_step"), "stream.commit", "clean_pass or last_step")
    need(cfg.sampler.steps >= 1, "sampler.steps", "must be ≥ 1")
    need(cfg.sampler.lead in ("none", "audio", "video"), "sampler.lead", "none, audio or video")
    need(cfg.sampler.lead_steps >= 0, "sampler.lead_steps", "must be ≥ 0")
    need(cfg.sampler.shift > 0, "sampler.shift", "must be > 0")
    need(cfg.runtime.dtype in ("auto", "fp32", "bf16"), "runtime.dtype", "auto, fp32 or bf16")
    return cfg


def load_config(
    preset: str | Path = "tiny", overrides: list[str] | tuple[str, ...] = ()
) -> UnisonConfig:
    """Build a validated config: schema defaults → preset YAML → dotlist ``overrides``.

    ``preset`` is a name from :data:`PRESETS` or a path to a YAML file.
    """
    path = Path(preset)
    if str(preset) in PRESETS:
        path = CONFIG_DIR / f"{preset}.yaml"
    if not path.is_file():
        raise ConfigError(f"preset {preset!r}: no such preset ({', '.join(PRESETS)}) or file")
    schema = OmegaConf.structured(UnisonConfig)
    try:
        merged = OmegaConf.merge(
            schema, OmegaConf.load(path), OmegaConf.from_dotlist(list(overrides))
        )
    except Exception as e:  # omegaconf raises several types; all mean "bad key or value"
        raise ConfigError(f"bad config value: {e}") from e
    cfg = cast(UnisonConfig, OmegaConf.to_object(merged))
    return validate(cfg)


def to_dict(cfg: UnisonConfig) -> dict[str, Any]:
    """Plain nested dict of a config (for JSON logs and checkpoint metadata)."""
    return cast(dict[str, Any], OmegaConf.to_container(OmegaConf.structured(cfg)))
