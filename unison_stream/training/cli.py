"""``unison-stream train model`` (also runnable as ``python -m unison_stream.training.cli`` under
``torchrun``): train the dual-stream model with cross-modal forcing.

Overrides after the options go to the model config (``model.depth=6``, ``stream.…``) or to the
training config (``steps=500``, ``curriculum.lam=0.5``) by their first key.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from unison_stream.config import load_config
from unison_stream.model.dit import UnisonDiT
from unison_stream.training.batch import BatchSource, RandomLatentSource
from unison_stream.training.config import TrainConfig, load_train_config
from unison_stream.training.trainer import Trainer

__all__ = ["main", "register"]

_TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}


def split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(model overrides, training overrides) by the first key of each ``key=value``."""
    model: list[str] = []
    train: list[str] = []
    for o in overrides:
        (train if o.split("=", 1)[0].split(".", 1)[0] in _TRAIN_KEYS else model).append(o)
    return model, train


def make_source(
    data: str, cfg: Any, tcfg: TrainConfig, *, seed: int, split: str = "train"
) -> BatchSource:
    if data in ("", "random"):
        return RandomLatentSource(cfg, batch=tcfg.batch, chunks=tcfg.seq_chunks, seed=seed)
    from unison_stream.training.latents import LatentShardSource

    return LatentShardSource(
        Path(data),
        cfg,
        batch=tcfg.batch,
        chunks=tcfg.seq_chunks,
        seed=seed,
        split=split,
        event_prob=tcfg.event_window_prob if split == "train" else 0.0,
        generic_caption_prob=tcfg.generic_caption_prob if split == "train" else 0.0,
        generic_captions=tuple(tcfg.generic_captions),  # type: ignore[arg-type]
    )


def run(args: argparse.Namespace) -> int:
    model_over, train_over = split_overrides(list(args.overrides))
    tcfg = load_train_config(args.train, train_over)
    cfg = load_config(args.preset, [*tcfg.model_overrides, *model_over])
    rank = int(__import__("os").environ.get("RANK", "0"))
    source = make_source(tcfg.data, cfg, tcfg, seed=tcfg.seed * 100 + rank)
    val = make_source(tcfg.data, cfg, tcfg, seed=999, split="val")
    torch.manual_seed(tcfg.seed)  # identical initial weights on every rank
    model = UnisonDiT(cfg)
    stats = getattr(source, "stats", None)
    if stats is not None:  # latent normalisation from the training data
        for name, value in stats.items():
            getattr(model, name).copy_(value)
    if tcfg.init:
        load_init(model, Path(tcfg.init))
    trainer = Trainer(cfg, tcfg, source, val_source=val, model=model)
    out = Path(tcfg.out_dir)
    if args.dump_rank_weights and trainer.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
            str(out / "init.safetensors"),
        )
    trainer.fit()
    if args.dump_rank_weights:
        weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        save_file(weights, str(out / f"rank{trainer.rank}.safetensors"))
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return 0


def load_init(model: UnisonDiT, path: Path) -> None:
    """Start from ``path``: an exported model (``train export``) or a run checkpoint, whose
    EMA weights are taken. Fine-tuning keeps the latent normalisation stored in the weights."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise SystemExit(f"init: {path} is not a file")
    tensors = load_file(str(path))
    if any(k.startswith("ema.") for k in tensors):
        tensors = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
    own = model.state_dict()
    try:
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items() if k in own})
    except RuntimeError as e:
        raise SystemExit(f"init: {path} does not fit this model preset: {e}") from e
    logging.getLogger(__name__).info("initialised from %s", path)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", help="model preset or YAML")
    p.add_argument(
        "--train", default="tiny", help="training preset (configs/train_<name>.yaml) or YAML"
    )
    p.add_argument(
        "--dump-rank-weights",
        action="store_true",
        help="write each rank's weights to out_dir/rank<N>.safetensors (DDP consistency check)",
    )
    p.add_argument(
        "overrides", nargs="*", default=[], help="model or training overrides, key=value"
    )


def run_prepare(args: argparse.Namespace) -> int:
    from unison_stream.training.latents import prepare_latents

    cfg = load_config(args.preset, args.overrides)
    counts = prepare_latents(Path(args.manifest), Path(args.out), cfg)
    logging.getLogger(__name__).info("prepared %s in %s", counts, args.out)
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Bundle a run's EMA (or raw) weights, bf16, with its config, training log and curves."""
    import json
    import shutil

    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    from unison_stream.model.checkpoint import save_model

    run_dir, out = Path(args.run), Path(args.out)
    ckpts = sorted(run_dir.glob("ckpt-*.safetensors"))
    if not ckpts:
        raise SystemExit(f"{run_dir}: no ckpt-*.safetensors to export")
    ckpt = ckpts[-1]
    with safe_open(str(ckpt), framework="pt") as f:
        meta = f.metadata() or {}
    from omegaconf import OmegaConf

    from unison_stream.config import UnisonConfig, validate

    cfg = validate(
        OmegaConf.to_object(  # type: ignore[arg-type]  # structured merge → UnisonConfig
            OmegaConf.merge(OmegaConf.structured(UnisonConfig), json.loads(meta["config"]))
        )
    )
    model = UnisonDiT(cfg)
    prefix = f"{args.weights}."
    model.load_state_dict(
        {k[len(prefix) :]: v for k, v in load_file(str(ckpt)).items() if k.startswith(prefix)}
    )
    model = model.to(torch.bfloat16 if args.dtype == "bf16" else torch.float32)
    save_model(
        model,
        out,
        extra={"source": ckpt.name, "step": meta.get("step", "?"), "weights": args.weights},
    )
    for name in ("train_log.jsonl", "curves.png"):
        if (run_dir / name).is_file():
            shutil.copy(run_dir / name, out.with_name(f"{out.stem}_{name}"))
    (out.with_name(f"{out.stem}_train_config.json")).write_text(meta.get("train_config", "{}"))
    logging.getLogger(__name__).info("exported %s (step %s) to %s", ckpt, meta.get("step"), out)
    return 0


def run_distill(args: argparse.Namespace) -> int:
    """The few-step stage on a trained model (``init``: the teacher, the student's start)."""
    import json
    import time
    from dataclasses import replace

    from safetensors import safe_open
    from safetensors.torch import load_file
    from tqdm import tqdm

    from unison_stream.config import to_dict
    from unison_stream.training.distill import FewStepDistiller
    from unison_stream.training.trainer import _train_dict

    model_over, train_over = split_overrides(list(args.overrides))
    tcfg = load_train_config(args.train, train_over)
    cfg = load_config(args.preset, [*tcfg.model_overrides, *model_over])
    if not tcfg.init:
        raise SystemExit("distill: set init to the trained model (the teacher)")
    source = make_source(tcfg.data, cfg, tcfg, seed=tcfg.seed)
    val = make_source(tcfg.data, cfg, tcfg, seed=999, split="val").next_batch()
    d = tcfg.distill
    s = cfg.sampler
    teacher_sampler = replace(
        s,
        event_guidance=s.event_guidance
        if d.teacher_event_guidance is None
        else d.teacher_event_guidance,
        event_guidance_video=s.event_guidance_video
        if d.teacher_event_guidance_video is None
        else d.teacher_event_guidance_video,
        event_guidance_min_t=s.event_guidance_min_t
        if d.teacher_event_guidance_min_t is None
        else d.teacher_event_guidance_min_t,
    )
    teacher = UnisonDiT(replace(cfg, sampler=teacher_sampler))  # guided_call reads cfg.sampler
    load_init(teacher, Path(tcfg.init))
    student = UnisonDiT(cfg)
    load_init(student, Path(d.student_init or tcfg.init))
    logging.getLogger(__name__).info(
        "teacher event guidance %.1f / video %.1f",
        teacher_sampler.event_guidance,
        teacher_sampler.event_guidance_video,
    )
    distiller = FewStepDistiller(teacher, student, tcfg.distill, lr=tcfg.lr)
    out = Path(tcfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(tcfg.seed)
    step, history = 0, []
    ckpts = sorted(out.glob("ckpt-*.safetensors"))
    if ckpts:  # resume: student, optimizer moments, noise RNG, data position
        t = load_file(str(ckpts[-1]))
        student.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
        opt = distiller.opt.state_dict()
        opt["state"] = {}
        for k, v in t.items():
            if k.startswith("optim."):
                pid, name = k[6:].split(".", 1)
                opt["state"].setdefault(int(pid), {})[name] = v
        distiller.opt.load_state_dict(opt)
        g.set_state(t["rng.noise"])
        source.restore({"rng": t["source.rng"]})
        with safe_open(str(ckpts[-1]), framework="pt") as f:
            meta = f.metadata() or {}
        step, history = int(meta["step"]), json.loads(meta["history"])
    bf16 = tcfg.precision == "bf16"

    def evaluate() -> dict[str, float]:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return {f"val_{k}": v for k, v in distiller.evaluate(val).items()}

    if step == 0:
        history.append({"step": 0, **evaluate()})
    logf = (out / "train_log.jsonl").open("a")
    bar = tqdm(total=tcfg.steps, initial=step, desc="distill", file=sys.stderr)
    t0 = time.perf_counter()
    while step < tcfg.steps:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            rec: dict[str, float] = dict(distiller.train_step(source.next_batch(), g))
        step += 1
        rec.update(step=step, wall_s=time.perf_counter() - t0)
        if step % tcfg.val_every == 0 or step == tcfg.steps:
            rec.update(evaluate())
        if step % tcfg.log_every == 0 or any(k.startswith("val_") for k in rec):
            history.append(rec)
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
        if step % tcfg.ckpt_every == 0 or step == tcfg.steps:
            tensors = {
                f"model.{k}": v.detach().contiguous() for k, v in student.state_dict().items()
            }
            for pid, st in distiller.opt.state_dict()["state"].items():
                for name, v in st.items():
                    tensors[f"optim.{pid}.{name}"] = torch.as_tensor(v).contiguous()
            tensors["rng.noise"] = g.get_state()
            tensors["source.rng"] = source.state()["rng"]
            meta = {
                "config": json.dumps(to_dict(cfg)),
                "train_config": json.dumps(_train_dict(tcfg)),
                "step": str(step),
                "history": json.dumps(history),
            }
            path = out / f"ckpt-{step:06d}.safetensors"
            save_file(tensors, str(path.with_suffix(".tmp")), metadata=meta)
            path.with_suffix(".tmp").replace(path)
        bar.update(1)
        bar.set_postfix({k: f"{rec[k]:.4f}" for k in ("video", "speech", "sfx")})
    bar.close()
    logf.close()
    logging.getLogger(__name__).info("distilled: %s", json.dumps(history[-1]))
    return 0


def run_frontend(args: argparse.Namespace) -> int:
    """Train the speech front end (``--export``: bundle its last checkpoint)."""
    from unison_stream.training.frontend import export, load_train_config, train

    over = [*args.overrides, f"out_dir={args.out}"]
    if args.steps is not None:
        over.append(f"steps={args.steps}")
    cfg = load_train_config(over)
    if args.export:
        export(Path(cfg.out_dir))
    else:
        train(cfg)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("model", help="train the dual-stream model (torchrun-ready)")
    add_arguments(p)
    p.set_defaults(func=run)
    q = sub.add_parser("prepare", help="encode a manifest's clips into a latent dataset")
    q.add_argument("--manifest", required=True, help="manifest.jsonl (synthetic or real clips)")
    q.add_argument("--out", required=True, help="output folder for <split>.safetensors")
    q.add_argument("--preset", default="tiny")
    q.add_argument("overrides", nargs="*", default=[])
    q.set_defaults(func=run_prepare)
    e = sub.add_parser("export", help="bundle a run's EMA weights as the default model")
    e.add_argument("--run", required=True, help="training run folder (out_dir)")
    e.add_argument("--out", default="unison_stream/model/weights/tiny.safetensors")
    e.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    e.add_argument(
        "--weights",
        choices=("ema", "model"),
        default="ema",
        help="the EMA (default) or the raw weights (better when a short run's EMA still lags)",
    )
    e.set_defaults(func=run_export)
    d = sub.add_parser("distill", help="few-step stage: distil a trained model's sampler")
    add_arguments(d)
    d.set_defaults(func=run_distill)
    f = sub.add_parser("frontend", help="train the speech → viseme-track front end")
    f.add_argument("--steps", type=int, default=None, help="training steps (default 5000)")
    f.add_argument("--out", default="runs/frontend", help="run folder (data cache, checkpoints)")
    f.add_argument(
        "--export",
        action="store_true",
        help="bundle the run's last checkpoint as unison_stream/engine/weights/frontend.*",
    )
    f.add_argument("overrides", nargs="*", default=[], help="training overrides, key=value")
    f.set_defaults(func=run_frontend)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    p = argparse.ArgumentParser(prog="python -m unison_stream.training.cli")
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
