"""``unison-stream train frontend``: train, validate and export the speech front end
(:mod:`unison_stream.engine.speech_frontend`, ``docs/frontend.md``).

Data (:mod:`unison_stream.data.synth.voices`): augmented espeak-ng speech in many voices with
exact viseme labels, cached in ``<out>/data``. The net learns cross-entropy over visemes with
its look-ahead: the logits at step ``t + lookahead`` are scored against frame ``t``.

Validation, on the decoded track (energy gate and minimum segment applied):

- frame viseme accuracy on held-out espeak voices (accents and variants never trained on),
  augmented and clean, beside the majority-class baseline;
- mouth-opening correlation: per utterance, Pearson's r between the opening of each frame's
  viseme (``VISEME_POSES[v][0]``) and the speech's RMS envelope; for espeak with the truth too,
  so the figures compare with those of the unseen synthesisers.

Flite (slt, rms, awb, kal16) and Festival (kal_diphone) speak only in that last measurement:
they are never a training signal nor a model-selection criterion (the export takes the last
checkpoint).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as F
from tqdm import tqdm

from unison_stream.data.synth.measure import lagged_correlation
from unison_stream.data.synth.visemes import VISEME_POSES, VISEMES
from unison_stream.engine.speech_frontend import (
    WEIGHTS,
    FrontEndConfig,
    SpeechFrontEnd,
    VisemeNet,
    segment,
)
from unison_stream.training.frontend_data import (
    IGNORE,
    FrameSet,
    FrontEndTrainConfig,
    build_set,
    load_train_config,
    representative_phonemes,
    sources,
)

__all__ = ["FrontEndTrainConfig", "export", "load_train_config", "train"]

log = logging.getLogger(__name__)

# ---- metrics -------------------------------------------------------------------------------

OPENING = np.array([VISEME_POSES[v][0] for v in VISEMES], np.float32)  # (V,)


def decode(logits: np.ndarray, rms_db: np.ndarray, mcfg: FrontEndConfig) -> np.ndarray:
    """(F, V) logits already aligned to frames → (F,) visemes after gate and min segment."""
    v = logits.argmax(-1)
    v[rms_db < mcfg.gate_dbfs] = 0
    out = np.zeros(len(v), np.int64)
    for vis, a, b in segment(v, mcfg.min_segment):
        out[a:b] = vis
    return out


def score(
    pred: list[np.ndarray], fs: FrameSet, majority: int, gate_dbfs: float
) -> dict[str, float]:
    """Accuracy against truth (where known) and mouth-opening/envelope correlation; the
    gate-only baseline opens the mouth wherever the energy gate is open."""
    hits = total = base = 0
    r_pred, r_true, r_gate = [], [], []
    for u, p in zip(fs.utterances(), pred, strict=True):
        s = fs.span(u)
        lab, env = fs.labels[s].astype(np.int64), 10 ** (fs.rms_db[s] / 20)
        known = lab != IGNORE
        hits += int((p[known] == lab[known]).sum())
        base += int((lab[known] == majority).sum())
        total += int(known.sum())
        r_pred.append(lagged_correlation(OPENING[p], env, 0))
        r_gate.append(lagged_correlation((fs.rms_db[s] >= gate_dbfs).astype(np.float32), env, 0))
        if known.all():
            r_true.append(lagged_correlation(OPENING[lab], env, 0))
    out = {"mouth_r": float(np.mean(r_pred)), "mouth_r_gate_only": float(np.mean(r_gate))}
    if total:
        out.update(acc=hits / total, majority=base / total, mouth_r_truth=float(np.mean(r_true)))
    return out


@torch.no_grad()
def evaluate(net: VisemeNet, fs: FrameSet, mcfg: FrontEndConfig, majority: int) -> dict[str, float]:
    """Batch-free evaluation of the net on a normalised set (each utterance from its start)."""
    net.eval()
    d = mcfg.lookahead
    preds = []
    for u in fs.utterances():
        s = fs.span(u)
        x = torch.from_numpy(fs.feats[s].astype(np.float32))
        x = torch.cat([x, x.new_zeros(d, x.shape[1])])[None]  # (1, F+D, M)
        logits = net(x)[0, d:].numpy()  # (F, V): frame t read at step t + D
        preds.append(decode(logits, fs.rms_db[s], mcfg))
    net.train()
    return score(preds, fs, majority, mcfg.gate_dbfs)


# ---- training ------------------------------------------------------------------------------


def _batch(
    fs: FrameSet, cfg: FrontEndTrainConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T+D, M) features with SpecAugment and (B, T) labels of frames 0..T−1."""
    d, t = cfg.model.lookahead, cfg.seq_frames
    x = np.zeros((cfg.batch, t + d, cfg.model.n_mels), np.float32)
    y = np.full((cfg.batch, t), IGNORE, np.int64)
    for b in range(cfg.batch):
        s = fs.span(int(rng.integers(len(fs.offsets) - 1)))
        n = s.stop - s.start
        a = 0 if rng.random() < cfg.start_prob or n <= t else int(rng.integers(n - t))
        m = min(t + d, n - a)
        x[b, :m] = fs.feats[s.start + a : s.start + a + m]
        y[b, : min(t, n - a)] = fs.labels[s.start + a : s.start + a + min(t, n - a)]
        w = int(rng.integers(cfg.freq_mask + 1))
        f0 = int(rng.integers(cfg.model.n_mels - w + 1))
        x[b, :, f0 : f0 + w] = 0.0
    return torch.from_numpy(x), torch.from_numpy(y)


def _lr(cfg: FrontEndTrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + np.cos(np.pi * min(p, 1.0)))


def _prepare(cfg: FrontEndTrainConfig, out: Path) -> tuple[dict[str, FrameSet], dict[str, Any]]:
    """All sets, normalised with the training prior; returns them and the prior/metadata."""
    sets = {n: build_set(n, cfg, out / "data" / f"{n}.npz") for n in _SETS}
    tr = sets["train"]
    speech = tr.rms_db >= cfg.model.gate_dbfs
    feats = tr.feats[speech].astype(np.float64)
    counts = np.bincount(tr.labels[tr.labels != IGNORE], minlength=len(VISEMES))
    prior = {
        "mean": feats.mean(0),
        "var": feats.var(0) + 1e-3,
        "majority": int(counts.argmax()),
        "phonemes": representative_phonemes(tr.meta["phoneme_counts"]),
    }
    for fs in sets.values():
        fs.normalise(cfg.model, prior["mean"], prior["var"])
    return sets, prior


_SETS = ("train", "heldout", "heldout_clean", "flite", "festival")


def train(cfg: FrontEndTrainConfig) -> Path:
    """Train (resuming from ``out_dir``'s last checkpoint); returns the run folder."""
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_data = time.perf_counter()
    sets, prior = _prepare(cfg, out)
    log.info("data ready in %.0f s: %d training frames", time.perf_counter() - t_data,
             len(sets["train"].labels))  # fmt: skip
    mcfg = replace(cfg.model, viseme_phonemes=prior["phonemes"])
    torch.manual_seed(cfg.seed)
    net = VisemeNet(mcfg)
    net.feat_mean.copy_(torch.from_numpy(prior["mean"]).float())
    net.feat_var.copy_(torch.from_numpy(prior["var"]).float())
    decay = [p for n, p in net.named_parameters() if p.ndim > 1]
    rest = [p for n, p in net.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0}],
        lr=cfg.lr,
    )
    step, rng = 0, np.random.default_rng([cfg.seed, 9])
    history: list[dict[str, Any]] = []
    ckpts = sorted(out.glob("ckpt-*.safetensors"))
    if ckpts:
        step, history = _load_ckpt(ckpts[-1], net, opt, rng)
        log.info("resumed from %s (step %d)", ckpts[-1], step)
    meta = {"train_config": json.dumps(asdict(cfg)), "model_config": mcfg.to_json()}
    logf = (out / "train_log.jsonl").open("a")
    bar = tqdm(total=cfg.steps, initial=step, desc="frontend", file=sys.stderr)
    t0 = time.perf_counter()
    d = mcfg.lookahead
    while step < cfg.steps:
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step)
        x, y = _batch(sets["train"], cfg, rng)
        logits = net(x)  # (B, T+D, V)
        loss = F.cross_entropy(
            logits[:, d:].reshape(-1, len(VISEMES)),
            y.reshape(-1),
            ignore_index=IGNORE,
            label_smoothing=cfg.label_smoothing,
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        rec: dict[str, Any] = {"step": step, "loss": loss.item(), "lr": _lr(cfg, step - 1)}
        if step % cfg.val_every == 0 or step == cfg.steps:
            for name in _SETS[1:]:
                for k, v in evaluate(net, sets[name], mcfg, prior["majority"]).items():
                    rec[f"{name}_{k}"] = round(v, 4)
        if step % cfg.log_every == 0 or len(rec) > 3:
            rec["wall_s"] = round(time.perf_counter() - t0, 1)
            history.append(rec)
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            _save_ckpt(out / f"ckpt-{step:06d}.safetensors", net, opt, rng, step, history, meta)
        bar.update(1)
        bar.set_postfix(loss=f"{rec['loss']:.3f}")
    bar.close()
    logf.close()
    log.info("trained: %s", json.dumps(history[-1]) if history else "{}")
    return out


def _save_ckpt(path: Path, net: VisemeNet, opt: torch.optim.Optimizer, rng: np.random.Generator,
               step: int, history: list[dict[str, Any]], meta: dict[str, str]) -> None:  # fmt: skip
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in net.state_dict().items()}
    for pid, st in opt.state_dict()["state"].items():
        for name, v in st.items():
            tensors[f"optim.{pid}.{name}"] = torch.as_tensor(v).contiguous()
    info = {**meta, "step": str(step), "history": json.dumps(history),
            "rng": json.dumps(rng.bit_generator.state)}  # fmt: skip
    save_file(tensors, str(path.with_suffix(".tmp")), metadata=info)
    path.with_suffix(".tmp").replace(path)


def _load_ckpt(path: Path, net: VisemeNet, opt: torch.optim.Optimizer,
               rng: np.random.Generator) -> tuple[int, list[dict[str, Any]]]:  # fmt: skip
    from safetensors import safe_open

    t = load_file(str(path))
    net.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
    state = opt.state_dict()
    state["state"] = {}
    for k, v in t.items():
        if k.startswith("optim."):
            pid, name = k[6:].split(".", 1)
            state["state"].setdefault(int(pid), {})[name] = v
    opt.load_state_dict(state)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    rng.bit_generator.state = json.loads(meta["rng"])
    return int(meta["step"]), json.loads(meta["history"])


# ---- export --------------------------------------------------------------------------------


def export(run: Path, weights: Path = WEIGHTS) -> dict[str, Any]:
    """Bundle the run's last checkpoint (fp32 weights + JSON config) and measure it through
    the streaming path on every validation set; returns the figures (also in the JSON)."""
    from safetensors import safe_open

    torch.set_num_threads(1)  # the measurement streams run in NumPy; nothing needs more
    ckpts = sorted(run.glob("ckpt-*.safetensors"))
    if not ckpts:
        raise SystemExit(f"{run}: no ckpt-*.safetensors to export")
    with safe_open(str(ckpts[-1]), framework="pt") as f:
        meta = f.metadata() or {}
    mcfg = FrontEndConfig.from_json(meta["model_config"])
    net = VisemeNet(mcfg)
    t = load_file(str(ckpts[-1]))
    net.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
    tcfg = load_train_config([], json.loads(meta["train_config"]))
    figures = measure(SpeechFrontEnd(mcfg, net), run, tcfg)
    figures.update(step=int(meta["step"]), mflops_per_s=net.flops_per_frame() * 100 / 1e6)
    mcfg = replace(mcfg, extra={"source": ckpts[-1].name, "figures": figures})
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    weights.with_suffix(".json").write_text(mcfg.to_json() + "\n")
    (run / "export_figures.json").write_text(json.dumps(figures, indent=1) + "\n")
    log.info("exported %s to %s: %s", ckpts[-1].name, weights, json.dumps(figures))
    return figures


def measure(fe: SpeechFrontEnd, run: Path, cfg: FrontEndTrainConfig) -> dict[str, Any]:
    """Figures of the whole streaming path (``fe.track``) on the cached validation sets."""
    cfg = replace(cfg, model=fe.cfg)
    out: dict[str, Any] = {}
    train_labels = FrameSet.load(run / "data" / "train.npz").labels
    majority = int(np.bincount(train_labels[train_labels != IGNORE]).argmax())
    ids = {i: v for v, i in enumerate(fe.cfg.track_ids())}
    hop_s = fe.cfg.hop / fe.cfg.sample_rate
    for name in _SETS[1:]:
        fs = build_set(name, cfg, run / "data" / f"{name}.npz")
        preds = []
        for u, (pcm, rate, _, _) in zip(fs.utterances(), sources(name, cfg), strict=True):
            n = fs.span(u).stop - fs.span(u).start
            track = fe.track(pcm, rate)
            p = np.zeros(n, np.int64)
            for i, a, b in zip(track.ids, track.start, track.end, strict=True):
                p[round(a / hop_s) : round(b / hop_s)] = ids[i]
            preds.append(p)
        out[name] = {
            k: round(v, 4) for k, v in score(preds, fs, majority, fe.cfg.gate_dbfs).items()
        }
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m unison_stream.training.frontend [--export] [key=value ...]``."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = list(sys.argv[1:] if argv is None else argv)
    cfg = load_train_config([a for a in args if a != "--export"])
    os.environ.setdefault("OMP_NUM_THREADS", str(cfg.threads))
    if "--export" in args:
        export(Path(cfg.out_dir))
    else:
        train(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
