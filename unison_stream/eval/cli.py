"""``unison-stream eval``: held-out metrics of a checkpoint as one JSON object (issue 5).

The manifest defaults to the synthetic world in ``data/world``; when it is absent the world is
generated first with fixed arguments (400 clips, seed 0: 40 test clips whose identities and
sentences training never sees), so every machine evaluates on the same clips.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch

__all__ = ["WORLD_DIR", "register"]

log = logging.getLogger(__name__)

WORLD_DIR = Path("data/world")
WORLD_CLIPS = 400  # → 40 test clips (10 %)
WORLD_SEED = 0


def ensure_world(manifest: Path) -> Path:
    """``manifest``, generating the default world when it is the one missing."""
    if manifest.is_file():
        return manifest
    if manifest.resolve() != (WORLD_DIR / "manifest.jsonl").resolve():
        raise FileNotFoundError(f"{manifest}: no such manifest")
    from unison_stream.data.dataset import synth_dataset

    log.info("no %s: generating the world (%d clips, seed %d)", manifest, WORLD_CLIPS, WORLD_SEED)
    synth_dataset(WORLD_DIR, n=WORLD_CLIPS, seed=WORLD_SEED, workers=os.cpu_count() or 1)
    return manifest


def _engine(args: argparse.Namespace) -> Any:
    from unison_stream.config import load_config
    from unison_stream.engine import Engine
    from unison_stream.model.checkpoint import bundled_checkpoint, default_model, load_model

    if args.checkpoint == "none":
        torch.manual_seed(args.seed)  # random weights, the same ones on every run
        model = load_model(None, preset=args.preset, overrides=args.overrides)
        log.warning("evaluating an untrained model (--checkpoint none)")
    else:
        path = Path(args.checkpoint) if args.checkpoint else bundled_checkpoint(args.preset)
        if path is None or not path.is_file():
            raise SystemExit(
                f"no checkpoint at {path or f'the bundled weights of preset {args.preset!r}'}; "
                "pass --checkpoint PATH, or --checkpoint none for random weights"
            )
        if args.checkpoint:  # its stored config, then the overrides
            model = load_model(path, overrides=args.overrides)
        else:  # the bundled weights as the server runs them: the preset's config
            model = default_model(load_config(args.preset, args.overrides))
        log.info("evaluating %s", path)
    return Engine(model.cfg, model=model, max_sessions=2, max_ahead=2)


ABLATION_MODEL = "model.safetensors"  # the exported model a run of the ablation table holds
# the figures of the printed ablation table (the JSON holds every figure of each report)
ABLATION_COLUMNS = (
    "lipsync_offset_ms",
    "lipsync_corr_ratio",
    "sfx_recall",
    "sfx_align_ms",
    "sfx_false_alarm",
    "sentence_id_accuracy",
    "identity_drift",
    "identity_recognised",
    "sharpness_ratio_face",
    "feature_visibility",
    "fid_world",
)


def ablation_runs(root: Path) -> list[tuple[str, Path]]:
    """(variant, exported model) of every run under ``root`` (``runs/ablations/<variant>``),
    the full model first."""
    runs = sorted(
        (d.name, d / ABLATION_MODEL) for d in root.iterdir() if (d / ABLATION_MODEL).is_file()
    )
    missing = sorted(
        d.name for d in root.iterdir() if d.is_dir() and not (d / ABLATION_MODEL).is_file()
    )
    if missing:
        log.warning(
            "ablation runs without %s (export them: unison-stream train export --run DIR "
            "--out DIR/%s): %s", ABLATION_MODEL, ABLATION_MODEL, ", ".join(missing)
        )  # fmt: skip
    if not runs:
        raise SystemExit(f"no ablation run with {ABLATION_MODEL} under {root}")
    return sorted(runs, key=lambda r: (not r[0].startswith("full"), r[0]))


def ablation_table(rows: dict[str, dict[str, Any]]) -> str:
    """A markdown table: one row per variant, the :data:`ABLATION_COLUMNS` it has."""
    cols = [c for c in ABLATION_COLUMNS if any(c in r for r in rows.values())]
    lines = ["| variant | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, r in rows.items():
        cells = [_cell(r.get(c)) for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "–" if v is None else str(v).lower()
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _evaluate(engine: Any, manifest: Path, args: argparse.Namespace, grid: Path | None) -> Any:
    """``evaluate`` with the command's options; closes ``engine``."""
    from unison_stream.eval.evaluate import evaluate

    try:
        return evaluate(
            engine,
            manifest,
            split=args.split,
            limit=args.limit,
            stream_seconds=args.stream_seconds,
            progress=not args.no_progress,
            grid=grid,
        )
    finally:
        engine.close()


def _run_ablations(args: argparse.Namespace) -> int:
    """``eval --ablations DIR``: every exported run under DIR on the same clips."""
    from unison_stream.engine import Engine
    from unison_stream.model.checkpoint import load_model

    manifest = ensure_world(Path(args.manifest))
    rows: dict[str, dict[str, Any]] = {}
    for name, path in ablation_runs(Path(args.ablations)):
        log.info("ablation row %s: %s", name, path)
        model = load_model(path, overrides=args.overrides)
        engine = Engine(model.cfg, model=model, max_sessions=2, max_ahead=2)
        rows[name] = _evaluate(engine, manifest, args, grid=None)
    out = json.dumps({"ablations": rows, "table": ablation_table(rows)}) if args.json else None
    sys.stdout.write((out or ablation_table(rows)) + "\n")  # the command's output
    return 0


def _run(args: argparse.Namespace) -> int:

    if args.ablations:
        return _run_ablations(args)
    manifest = ensure_world(Path(args.manifest))
    report = _evaluate(_engine(args), manifest, args, grid=Path(args.grid) if args.grid else None)
    report["checkpoint"] = args.checkpoint or f"bundled {args.preset}"
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:28s} {value}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="held-out metrics: lip sync, effects, identity, intelligibility, visual quality",
    )
    p.add_argument("--split", default="test", help="manifest split (default: test)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="safetensors checkpoint; default the bundled one; 'none' = random weights",
    )
    p.add_argument("--preset", default="tiny")
    p.add_argument("--manifest", default=str(WORLD_DIR / "manifest.jsonl"))
    p.add_argument(
        "--limit", type=int, default=0, help="clips evaluated (default 0: the whole split)"
    )
    p.add_argument("--stream-seconds", type=float, default=60.0, help="identity stream length")
    p.add_argument("--seed", type=int, default=0, help="random weights' seed (--checkpoint none)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--grid",
        default=None,
        metavar="PATH",
        help="write a PNG of generated beside ground-truth frames (text, audio-driven, stream)",
    )
    p.add_argument(
        "--ablations",
        default=None,
        metavar="DIR",
        help="evaluate every run under DIR (runs/ablations/<variant>/model.safetensors) "
        "and print the ablation table",
    )
    p.add_argument(
        "overrides", nargs="*", default=[], help="config overrides, e.g. sampler.steps=2"
    )
    p.set_defaults(func=_run)
