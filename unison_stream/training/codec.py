"""``unison-stream train codec --kind video|audio``: train one codec on the synthetic world.

- Data: a cache of rendered clips (:mod:`unison_stream.codecs.data`), built on first use under
  ``data_dir``.
- Losses: video L1 on pixels (plus ``edge_weight`` × L1 of pixel differences,
  ``sharp_weight`` × L1 of local RMS gradients, the eyes' weights, and with ``adv_weight`` a
  patch discriminator's hinge loss, :mod:`.codec_discriminator`); audio
  multi-resolution STFT + mel L1 (the first latent frame of each crop is left out: the causal
  decoder has no history there and the overlap-add is incomplete). Both add a small latent L2
  and train the decoder on latents with Gaussian noise (σ relative to each channel's batch
  spread), so it tolerates the model's imperfect latents.
- Checkpoints (``<out>/<kind>/ckpt.safetensors``) hold the model, AdamW moments, step, RNG
  states and history: a restart resumes exactly where it stopped. Validation every
  ``val_every`` steps; ``loss.png`` plots train and val curves.
- At the end the latent statistics are measured on training crops and written into the
  normalisation buffers, and the codec is exported to the bundled weights directory
  (``--export``, default on).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from unison_stream.codecs import metrics, weights
from unison_stream.codecs.audio import AudioAE
from unison_stream.codecs.config import CodecTrainConfig, VideoCodecConfig
from unison_stream.codecs.data import CACHE_COUNTS, ClipStore, build_cache, load_split
from unison_stream.codecs.video import VideoAE
from unison_stream.config import LatentConfig, MediaConfig
from unison_stream.extras import require
from unison_stream.imaging import gaussian_blur, gradient_energy, local_gradient_rms
from unison_stream.training.codec_discriminator import (
    PatchDiscriminator,
    adaptive_weight,
    d_hinge,
    g_hinge,
    to_nchw,
)

__all__ = ["register", "train"]

log = logging.getLogger(__name__)


# ---- losses ---------------------------------------------------------------------------------
def _noisy(z: torch.Tensor, sigma: float, dims: tuple[int, ...]) -> torch.Tensor:
    spread = z.detach().std(dim=dims, keepdim=True)
    return z + sigma * spread * torch.randn_like(z)


def video_step(
    ae: VideoAE, store: ClipStore, rng: np.random.Generator, tc: CodecTrainConfig
) -> tuple[torch.Tensor, dict[str, float], tuple[torch.Tensor, torch.Tensor]]:
    """Reconstruction loss of one batch of crops, its parts, and (decoded, target) frames
    (B, T, c, c, 3) for the adversarial term."""
    s = ae.latent.video_time_stride
    ref, eyes = None, None
    if ae.ref_enc is None:
        crops = store.video_crops(rng, tc.batch, tc.clip_latents * s, tc.crop, s)
    else:  # another frame of the clip, left out (zeros) for a share of the batch
        crops, pic, eye_mask = store.video_crops_with_reference(
            rng, tc.batch, tc.clip_latents * s, tc.crop, s
        )
        eyes = torch.from_numpy(eye_mask)[:, None, :, :, None]  # (B, 1, c, c, 1)
        keep = torch.from_numpy(rng.random(tc.batch) >= tc.reference_drop).float()
        ref = ae.reference_features(torch.from_numpy(pic)).masked(keep)
    x = torch.from_numpy(crops).float() / 255.0  # (B, T, c, c, 3)
    z = ae.encode(x)  # (B, F, C, h, w)
    y = ae.decode(_noisy(z, tc.latent_noise, (0, 1, 3, 4)), reference=ref)
    err = (y - x).abs()  # (B, T, c, c, 3)
    if tc.detail_weight > 0:  # small parts (an iris, a pupil) weigh more than flat skin
        err = err * _detail_weights(x, tc.detail_weight)
    if tc.eye_weight > 0 and eyes is not None:  # the eyes, where the world's layout puts them
        err = err * (1 + tc.eye_weight * eyes)
    rec = err.mean()
    loss = rec + tc.latent_l2 * z.square().mean()
    parts = {"l1": float(rec.detach())}
    if tc.eye_blur_weight > 0 and eyes is not None and bool(eyes.any()):
        eye = _blurred_l1(y, x, eyes)
        loss = loss + tc.eye_blur_weight * eye
        parts["eye_blur"] = float(eye.detach())
    if tc.sharp_weight > 0:  # steep edges near where the truth has them (docs/codecs.md)
        sharp = _sharpness_l1(y, x)
        loss = loss + tc.sharp_weight * sharp
        parts["sharp"] = float(sharp.detach())
    if tc.edge_weight > 0:  # L1 alone is content with a blur; edges must match too
        edge = _edge_l1(y, x)
        loss = loss + tc.edge_weight * edge
        parts["edge"] = float(edge.detach())
    return loss, parts, (y, x)


class Adversary:
    """The patch discriminator of the video decoder and its optimizer (not exported)."""

    def __init__(self, ae: VideoAE, tc: CodecTrainConfig) -> None:
        self.disc = PatchDiscriminator(tc.disc_width)
        self.opt = torch.optim.AdamW(
            self.disc.parameters(), lr=tc.disc_lr, betas=(0.5, 0.9), weight_decay=0.0
        )
        convs = [m for m in ae.dec.modules() if isinstance(m, torch.nn.Conv2d)]
        self.last = convs[-1].weight  # the decoder's last layer: where the terms are balanced
        self.weight = tc.adv_weight

    def generator_term(
        self, rec: torch.Tensor, fake: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """adv_weight · λ · hinge loss of the decoded frames (B, T, H, W, 3), λ balancing it
        against ``rec`` at the decoder's last layer."""
        self.disc.requires_grad_(False)
        adv = g_hinge(self.disc(to_nchw(fake)))
        self.disc.requires_grad_(True)
        lam = adaptive_weight(rec, adv, self.last)
        return self.weight * lam * adv, {"g_adv": float(adv.detach()), "lambda": float(lam)}

    def critic_step(self, fake: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
        """One discriminator update on decoded (detached) and real frames."""
        loss = d_hinge(self.disc(to_nchw(real)), self.disc(to_nchw(fake.detach())))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"d_loss": float(loss.detach())}


def _detail_weights(x: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-pixel weights (B, T, H, W, 1) of frames (B, T, H, W, 3): 1 + ``weight`` × the
    pixel's distance to its 3×3 neighbourhood's mean, ÷ the batch's mean distance. Flat areas
    stay near 1; a 3-pixel iris against the white of the eye weighs several times more, so
    L1 no longer lets the decoder paint it the surrounding colour."""
    b, t, h, w, c = x.shape
    img = x.reshape(b * t, h, w, c).permute(0, 3, 1, 2)  # (B·T, 3, H, W)
    local = F.avg_pool2d(img, 3, stride=1, padding=1, count_include_pad=False)
    d = (img - local).abs().sum(1, keepdim=True)  # (B·T, 1, H, W)
    d = d / d.mean().clamp_min(1e-6)
    return (1 + weight * d).permute(0, 2, 3, 1).reshape(b, t, h, w, 1)


def _blurred_l1(y: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean L1 inside ``mask`` (B, 1, H, W, 1) between frames (B, T, H, W, 3) blurred by a
    Gaussian of σ 1.5 px. A 1-pixel iris ring whose place the latents give only to a pixel or so
    has, per pixel, no colour a majority of the time, so L1 paints it white or black; blurred,
    the ring's colour is there wherever it lands, and a decoder that leaves it out pays."""
    b, t, h, w, c = x.shape

    def blur(v: torch.Tensor) -> torch.Tensor:  # (B, T, H, W, 3) → (B·T, 3, H, W)
        return gaussian_blur(v.reshape(b * t, h, w, c).permute(0, 3, 1, 2))

    err = (blur(y) - blur(x)).abs().sum(1)  # (B·T, H, W)
    m = mask.expand(b, t, h, w, 1).reshape(b * t, h, w)
    return (err * m).sum() / (3 * m.sum()).clamp_min(1.0)


def _sharpness_l1(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 between the local RMS luminance gradients (:func:`~unison_stream.imaging.
    local_gradient_rms`, σ 2 px) of frames (B, T, H, W, 3). Where the latents give an edge's
    place only to a pixel or so, L1 of pixels, and of their signed differences, is least for a
    soft edge (per pixel the step is there only some of the time). Squared, a step spread over
    3 px has a third of a steep one's energy (what ``sharpness_ratio`` measures), and blurred,
    a steep edge a pixel off is nearly where the truth's is: this term charges a soft edge for
    its missing steepness, a steep one a pixel off little — and texture where the truth is
    flat."""
    return (local_gradient_rms(y) - local_gradient_rms(x)).abs().mean()


def _edge_l1(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 between the horizontal and vertical pixel differences of frames (B, T, H, W, 3)."""
    dy = (y[:, :, 1:] - y[:, :, :-1]) - (x[:, :, 1:] - x[:, :, :-1])
    dx = (y[:, :, :, 1:] - y[:, :, :, :-1]) - (x[:, :, :, 1:] - x[:, :, :, :-1])
    return dy.abs().mean() + dx.abs().mean()


def audio_step(
    ae: AudioAE,
    store: ClipStore,
    rng: np.random.Generator,
    tc: CodecTrainConfig,
    onsets: np.ndarray | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    hop, samples = ae.hop, tc.audio_latents * ae.hop
    n_fx = 0
    if onsets is not None and len(onsets):
        n_fx = int(rng.binomial(tc.batch, tc.event_crop_prob))
    crops = [store.audio_crops(rng, tc.batch - n_fx, samples, hop, tc.stems)]
    if n_fx:
        crops.append(store.effect_crops(rng, n_fx, samples, hop, onsets))  # type: ignore[arg-type]
    x = torch.from_numpy(np.concatenate(crops))
    z = ae.encode(x)  # (B, N, Ca)
    y = ae.decode(_noisy(z, tc.latent_noise, (0, 1)))
    sts = metrics.mr_stft(y[:, hop:], x[:, hop:])
    mel = metrics.mel_l1(y[:, hop:], x[:, hop:])
    loss = sts + mel + tc.latent_l2 * z.square().mean()
    parts = {"mr_stft": float(sts.detach()), "mel": float(mel.detach())}
    if tc.envelope_weight > 0:
        env = metrics.envelope_l1(y[:, hop:], x[:, hop:])
        loss = loss + tc.envelope_weight * env
        parts["envelope"] = float(env.detach())
    return loss, parts


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
    if tc.adv_weight > 0:
        if not isinstance(model, VideoAE):
            raise SystemExit("adv_weight: the adversarial term is for the video decoder")
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
    base = OmegaConf.structured(CodecTrainConfig(kind=args.kind))
    tc = OmegaConf.to_object(OmegaConf.merge(base, OmegaConf.from_dotlist(args.overrides)))
    assert isinstance(tc, CodecTrainConfig)
    train(tc, export=not args.no_export)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("codec", help="train the video or the audio codec on the synthetic world")
    p.add_argument("--kind", choices=("video", "audio"), required=True)
    p.add_argument("--no-export", action="store_true", help="do not write the bundled weights")
    p.add_argument("overrides", nargs="*", help="CodecTrainConfig overrides, e.g. steps=2000")
    p.set_defaults(func=_run)
