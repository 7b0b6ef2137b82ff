"""``unison-stream train codec --kind video|audio``: train one codec on the synthetic world.

- Data: a cache of rendered clips (:mod:`unison_stream.codecs.data`), built on first use under
  ``data_dir``.
- Losses: the registry of :mod:`.codec_losses`, weighted by ``losses`` (:mod:`.codec_config`):
  video L1 on pixels, audio multi-resolution STFT + mel L1, each with the terms a recipe turns
  on, and with ``losses.adv`` a patch discriminator's hinge loss. Both add a small latent L2 and
  train the decoder on latents with Gaussian noise (σ relative to each channel's batch spread),
  so it tolerates the model's imperfect latents.
- Checkpoints (``<out>/<kind>/ckpt.safetensors``) hold the model, AdamW moments, step, RNG
  states and history: a restart resumes exactly where it stopped. Validation every
  ``val_every`` steps; ``loss.png`` plots train and val curves.
- At the end the latent statistics are measured on training crops and written into the
  normalisation buffers, and the codec is exported to the bundled weights directory
  (``--no-export`` leaves them alone).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from unison_stream.codecs import metrics, weights
from unison_stream.codecs.audio import AudioAE
from unison_stream.codecs.config import VideoCodecConfig
from unison_stream.codecs.data import CACHE_COUNTS, ClipStore, build_cache, load_split
from unison_stream.codecs.video import VideoAE
from unison_stream.config import LatentConfig, MediaConfig
from unison_stream.extras import require
from unison_stream.imaging import gradient_energy
from unison_stream.training.codec_config import (
    CodecTrainConfig,
    load_codec_train_config,
    loss_weights,
)
from unison_stream.training.codec_losses import Adversary, Reconstruction, total

__all__ = ["register", "train"]

log = logging.getLogger(__name__)


# ---- one step ------------------------------------------------------------------------------
def _noisy(z: torch.Tensor, sigma: float, dims: tuple[int, ...]) -> torch.Tensor:
    spread = z.detach().std(dim=dims, keepdim=True)
    return z + sigma * spread * torch.randn_like(z)


def video_step(
    ae: VideoAE,
    store: ClipStore,
    rng: np.random.Generator,
    tc: CodecTrainConfig,
) -> tuple[torch.Tensor, dict[str, float], tuple[torch.Tensor, torch.Tensor]]:
    """Reconstruction loss of one batch of crops, its parts, and (decoded, target) frames
    (B, T, c, c, 3) for the adversarial term."""
    s = ae.latent.video_time_stride
    ref, eyes, mouth = None, None, None
    if ae.ref_enc is None:
        crops = store.video_crops(rng, tc.batch, tc.clip_latents * s, tc.crop, s)
    else:  # another frame of the clip, left out (zeros) for a share of the batch
        crops, pic, eye_mask, mouth_mask = store.video_crops_with_reference(
            rng, tc.batch, tc.clip_latents * s, tc.crop, s
        )
        eyes = torch.from_numpy(eye_mask)[:, None, :, :, None]  # (B, 1, c, c, 1)
        mouth = torch.from_numpy(mouth_mask)[:, None, :, :, None]  # (B, 1, c, c, 1)
        keep = torch.from_numpy(rng.random(tc.batch) >= tc.reference_drop).float()
        ref = ae.reference_features(torch.from_numpy(pic)).masked(keep)
    x = torch.from_numpy(crops).float() / 255.0  # (B, T, c, c, 3)
    z = ae.encode(x)  # (B, F, C, h, w)
    y = ae.decode(_noisy(z, tc.latent_noise, (0, 1, 3, 4)), reference=ref)
    loss, parts = total(Reconstruction("video", y, x, z, tc.losses, eyes, mouth))
    return loss, parts, (y, x)


def audio_step(
    ae: AudioAE,
    store: ClipStore,
    rng: np.random.Generator,
    tc: CodecTrainConfig,
    onsets: np.ndarray | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Reconstruction loss of one batch of crops (a share holding an effect onset) and its
    parts; the first latent frame of each crop is left out of it."""
    hop, samples = ae.hop, tc.audio_latents * ae.hop
    n_fx = 0
    if onsets is not None and len(onsets):
        n_fx = int(rng.binomial(tc.batch, tc.event_crop_prob))
    crops = [store.audio_crops(rng, tc.batch - n_fx, samples, hop, tc.stems)]
    if n_fx:
        crops.append(store.effect_crops(rng, n_fx, samples, hop, onsets))  # type: ignore[arg-type]
    x = torch.from_numpy(np.concatenate(crops))  # (B, S)
    z = ae.encode(x)  # (B, N, Ca)
    y = ae.decode(_noisy(z, tc.latent_noise, (0, 1)))
    return total(Reconstruction("audio", y[:, hop:], x[:, hop:], z, tc.losses))


@torch.no_grad()
def validate(model: torch.nn.Module, kind: str, store: ClipStore) -> dict[str, float]:
    """Held-out figures on whole frames / whole clips (deterministic)."""
    model.eval()
    out: dict[str, float] = {}
    if kind == "video":
        assert isinstance(model, VideoAE)
        ps, ss, e_dec, e_gt = [], [], [], []
        for i in range(len(store)):
            fr = store.clip_frames(i)[:16]
            x = torch.from_numpy(fr).float()[None] / 255.0
            ref = None  # the clip's first frame, as the engine gives its portrait
            if model.ref_enc is not None:
                ref = model.reference_features(torch.from_numpy(fr[:1]))
            y = model.decode(model.encode(x), reference=ref).clamp(0, 1)
            y = (y * 255).round() / 255.0  # what a viewer gets (uint8)
            ps.append(float(metrics.psnr(y[0], x[0]).mean()))
            ss.append(float(metrics.ssim(y[0], x[0]).mean()))
            e_dec.append(gradient_energy((y[0] * 255).round().to(torch.uint8).numpy()).mean())
            e_gt.append(gradient_energy(fr).mean())
        out = {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss)),
               "sharpness_ratio": float(np.mean(e_dec) / np.mean(e_gt))}  # fmt: skip
    else:
        assert isinstance(model, AudioAE)
        st, me = [], []
        for i in range(len(store)):
            for stem in ("speech", "sfx"):
                a = store.clip_audio(i, stem)
                a = a[: len(a) // model.hop * model.hop]
                x = torch.from_numpy(a)[None]
                y = model.decode(model.encode(x))
                st.append(float(metrics.mr_stft(y, x)))
                me.append(float(metrics.mel_l1(y, x)))
        out = {"mr_stft": float(np.mean(st)), "mel_l1": float(np.mean(me))}
    model.train()
    return out


# ---- checkpoints ----------------------------------------------------------------------------
Trainee = tuple[str, torch.nn.Module, torch.optim.Optimizer]  # (key prefix, module, its optimizer)


def _save_ckpt(path: Path, trainees: list[Trainee], step: int, rng: np.random.Generator,
               history: dict[str, Any]) -> None:  # fmt: skip
    """Every trainee's weights (``<prefix>.*``) and AdamW moments (``<prefix>opt.<i>.*``; the
    codec's are ``model.*`` / ``opt.*``), the RNG states, the step and the history."""
    tensors: dict[str, torch.Tensor] = {}
    for prefix, model, opt in trainees:
        tensors.update({f"{prefix}.{k}": v.detach().clone() for k, v in model.state_dict().items()})
        o = _opt_prefix(prefix)
        for i, p in enumerate(model.parameters()):
            st = opt.state.get(p, {})
            for name in ("exp_avg", "exp_avg_sq"):
                if name in st:
                    tensors[f"{o}.{i}.{name}"] = st[name].clone()
            if "step" in st:
                step_t = torch.as_tensor(st["step"], dtype=torch.float32).reshape(1)
                tensors[f"{o}.{i}.step"] = step_t
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"step": str(step), "np_rng": json.dumps(rng.bit_generator.state),
            "history": json.dumps(history)}  # fmt: skip
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)


def _opt_prefix(prefix: str) -> str:
    return "opt" if prefix == "model" else f"{prefix}opt"


def _load_ckpt(path: Path, trainees: list[Trainee],
               rng: np.random.Generator) -> tuple[int, dict[str, Any]]:  # fmt: skip
    t = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    for prefix, model, opt in trainees:
        n = len(prefix) + 1
        own = {k[n:]: v for k, v in t.items() if k.startswith(prefix + ".")}
        if not own:
            raise SystemExit(f"{path}: no '{prefix}' tensors (was it trained without them?)")
        model.load_state_dict(own)
        o = _opt_prefix(prefix)
        for i, p in enumerate(model.parameters()):
            if f"{o}.{i}.exp_avg" in t:
                opt.state[p] = {
                    "step": t[f"{o}.{i}.step"].reshape(()),
                    "exp_avg": t[f"{o}.{i}.exp_avg"],
                    "exp_avg_sq": t[f"{o}.{i}.exp_avg_sq"],
                }
    torch.set_rng_state(t["rng.torch"])
    rng.bit_generator.state = json.loads(meta["np_rng"])
    return int(meta["step"]), json.loads(meta["history"])


def _plot(history: dict[str, Any], path: Path) -> None:
    matplotlib = require("matplotlib", "train")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    steps, loss = history["train_step"], history["train_loss"]
    if steps:
        k = max(1, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax[0].plot(steps[k - 1 :], smooth)
    ax[0].set(title="train loss", xlabel="step", yscale="log")
    for key, vals in history["val"].items():
        ax[1].plot(history["val_step"], vals, marker="o", label=key)
    ax[1].set(title="validation", xlabel="step")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---- the loop -------------------------------------------------------------------------------
def _load_fitting(
    model: torch.nn.Module, state: dict[str, torch.Tensor], need_encoder: bool
) -> set[str]:
    """Load every tensor of ``state`` whose shape fits ``model`` (all of them for the same
    architecture); with ``need_encoder`` every encoder tensor must fit. Returns the names of
    the model's tensors ``state`` did not give (its new parts)."""
    own = model.state_dict()
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in fits]
    if need_encoder and any(k.startswith("enc") or k.startswith("latent_") for k in missing):
        raise SystemExit("init=bundled: the bundled encoder does not fit this codec config")
    model.load_state_dict(fits, strict=False)
    if missing:
        log.info("init: %d bundled tensors loaded; new: %s", len(fits), ", ".join(missing))
    return set(missing)


def train(tc: CodecTrainConfig, *, export: bool = True, stop_at: int | None = None) -> Path:
    """Train (or resume) one codec; returns the run directory.

    ``stop_at`` ends this process early at that step (after its checkpoint): an interruption
    on purpose, resumed by calling again.
    """
    tc = replace(tc, losses=loss_weights(tc.losses))  # every term's weight, checked and saved
    torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    latent, media = LatentConfig(), MediaConfig()
    data_dir = Path(tc.data_dir)
    if not (data_dir / "test.npz").exists():
        build_cache(data_dir, CACHE_COUNTS)
    train_set, val_set = load_split(data_dir, "train"), load_split(data_dir, "val")
    codec_cfg = tc.audio_codec if tc.kind == "audio" else weights.default_codec_cfg(tc.kind)
    if isinstance(codec_cfg, VideoCodecConfig):
        codec_cfg.reference = tc.video_reference
        codec_cfg.reference_attention = tc.video_reference_attention
    model = weights.build(tc.kind, codec_cfg, latent, media)
    fresh: set[str] = set()  # parts the init did not give
    if tc.init == "bundled":
        bundled = weights.load(tc.kind, latent, media)
        if bundled is None:
            raise SystemExit(f"init=bundled: no bundled {tc.kind} codec fits the latent config")
        fresh = _load_fitting(model, bundled.state_dict(), tc.freeze_encoder)
    elif tc.init:
        raise SystemExit(f"init: 'bundled' or empty, not {tc.init!r}")
    if tc.freeze_encoder:  # the latents stay exactly those a DiT was trained on
        for name, p in model.named_parameters():
            p.requires_grad_(not name.startswith("enc"))
    trainable = [p for p in model.parameters() if p.requires_grad]
    # what a fine-tune adds (a reference path, its attention) learns at reference_lr while the
    # rest is fine-tuned at lr
    new = {id(p) for n, p in model.named_parameters() if n in fresh}
    groups = [
        {"params": [p for p in trainable if id(p) not in new], "base_lr": tc.lr},
        {"params": [p for p in trainable if id(p) in new], "base_lr": tc.reference_lr},
    ]
    opt = torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=tc.lr, weight_decay=tc.weight_decay
    )
    trainees: list[Trainee] = [("model", model, opt)]
    adversary = None
    if tc.losses["adv"] > 0:
        if not isinstance(model, VideoAE):
            raise SystemExit("losses.adv: the adversarial term is for the video decoder")
        adversary = Adversary(model, tc)
        trainees.append(("disc", adversary.disc, adversary.opt))
    onsets = train_set.effect_onsets() if tc.event_crop_prob > 0 else None
    run = Path(tc.out_dir) / tc.kind
    run.mkdir(parents=True, exist_ok=True)
    (run / "train_config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(tc)))
    ckpt = run / "ckpt.safetensors"
    history: dict[str, Any] = {"train_step": [], "train_loss": [], "val_step": [], "val": {}}
    step = 0
    if ckpt.exists():
        step, history = _load_ckpt(ckpt, trainees, rng)
        log.info("resumed %s codec from %s at step %d", tc.kind, ckpt, step)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("%s codec: %.2f M parameters, %d steps", tc.kind, n_params / 1e6, tc.steps)
    model.train()
    bar = tqdm(total=tc.steps, initial=step, desc=f"codec {tc.kind}")
    t0 = time.time()
    while step < tc.steps:
        scale = min(1.0, (step + 1) / tc.warmup) * 0.5 * (1 + math.cos(math.pi * step / tc.steps))
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * scale
        frames = None
        critic = adversary if step >= tc.adv_start else None  # (set only for a video codec)
        if isinstance(model, VideoAE):
            loss, parts, frames = video_step(model, train_set, rng, tc)
            if critic is not None:
                adv, adv_parts = critic.generator_term(loss, frames[0])
                loss = loss + adv
                parts.update(adv_parts)
        else:
            assert isinstance(model, AudioAE)
            loss, parts = audio_step(model, train_set, rng, tc, onsets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        if adversary is not None and frames is not None:  # the critic learns from step 0
            parts.update(adversary.critic_step(*frames))
        step += 1
        history["train_step"].append(step)
        history["train_loss"].append(float(loss.detach()))
        bar.update()
        bar.set_postfix(
            loss=f"{float(loss.detach()):.4f}", **{k: f"{v:.4f}" for k, v in parts.items()}
        )
        if step % tc.val_every == 0 or step == tc.steps:
            val = validate(model, tc.kind, val_set)
            history["val_step"].append(step)
            for k, v in val.items():
                history["val"].setdefault(k, []).append(v)
            log.info("step %d val %s (%.0f s)", step, json.dumps(val), time.time() - t0)
            _plot(history, run / "loss.png")
        if step % tc.ckpt_every == 0 or step == tc.steps:
            _save_ckpt(ckpt, trainees, step, rng, history)
        if stop_at is not None and step >= stop_at:
            bar.close()
            return run
    bar.close()
    if export:
        assert isinstance(model, VideoAE | AudioAE)
        if not tc.freeze_encoder:  # a frozen encoder keeps its normalisation (and latents)
            _calibrate(model, train_set, rng, tc)
        history["final_val"] = validate(model, tc.kind, val_set)
        history["train_config"] = OmegaConf.to_container(OmegaConf.structured(tc))
        weights.export(model, tc.kind, latent, media, history)
    return run


@torch.no_grad()
def _calibrate(model: VideoAE | AudioAE, store: ClipStore, rng: np.random.Generator,
               tc: CodecTrainConfig) -> None:  # fmt: skip
    """Set the latent normalisation buffers to the per-channel mean/std of training latents."""
    model.eval()
    if isinstance(model, VideoAE):
        s = model.latent.video_time_stride
        x = torch.from_numpy(store.video_crops(rng, 64, 2 * s, 128, s)).float() / 255.0
        z = model.encode(x)  # (B, F, C, h, w), current buffers are identity
        mean, std = z.mean((0, 1, 3, 4)), z.std((0, 1, 3, 4))
    else:
        assert isinstance(model, AudioAE)
        x = torch.from_numpy(store.audio_crops(rng, 64, 25 * model.hop, model.hop, tc.stems))
        z = model.encode(x)  # (B, N, Ca)
        mean, std = z.mean((0, 1)), z.std((0, 1))
    # encode() already used the old buffers: fold them in (new raw stats = old ∘ measured)
    old_m, old_s = model.latent_mean.clone(), model.latent_std.clone()
    model.latent_mean.copy_(old_m + old_s * mean)
    model.latent_std.copy_(old_s * std.clamp_min(1e-4))
    log.info("latent stats: mean |μ| %.3f, σ range %.3f..%.3f",
             float(model.latent_mean.abs().mean()), float(model.latent_std.min()),
             float(model.latent_std.max()))  # fmt: skip


# ---- CLI ------------------------------------------------------------------------------------
def _run(args: argparse.Namespace) -> int:
    train(load_codec_train_config(args.kind, args.overrides), export=not args.no_export)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("codec", help="train the video or the audio codec on the synthetic world")
    p.add_argument("--kind", choices=("video", "audio"), required=True)
    p.add_argument("--no-export", action="store_true", help="do not write the bundled weights")
    p.add_argument(
        "overrides", nargs="*", help="CodecTrainConfig overrides, e.g. steps=2000 losses.edge=1"
    )
    p.set_defaults(func=_run)
