"""``unison-stream eval``: held-out metrics of a checkpoint as one JSON object (docs/eval.md).

The manifest defaults to the synthetic world in ``data/world``; when it is absent the world is
generated first with fixed arguments (400 clips, seed 0: 40 test clips whose identities and
sentences training never sees), so every machine evaluates on the same clips; the states
world of ``--states-manifest`` (``data/world_states``) likewise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["STATES_WORLD", "WORLD", "DefaultWorld", "register"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DefaultWorld:
    """A world the eval makes itself when its manifest is missing, with fixed arguments, so
    every machine evaluates on the same clips."""

    dir: Path
    clips: int
    seed: int
    preset: str  # ``data synth --world``

    @property
    def manifest(self) -> Path:
        return self.dir / "manifest.jsonl"


WORLD = DefaultWorld(Path("data/world"), 400, 0, "classic")  # → 40 test clips (10 %)
# the states world: quiet and listening clips of its own people, the ground truth of the idle
# and listening states (its ``test`` split: 7 quiet and 4 listening clips)
STATES_WORLD = DefaultWorld(Path("data/world_states"), 300, 1, "states")


def ensure_world(manifest: Path, world: DefaultWorld = WORLD) -> Path:
    """``manifest``, generating ``world`` when it is the one missing."""
    if manifest.is_file():
        return manifest
    if manifest.resolve() != world.manifest.resolve():
        raise FileNotFoundError(f"{manifest}: no such manifest")
    from unison_stream.data.dataset import synth_dataset
    from unison_stream.data.synth.config import WORLD_PRESETS

    log.info("no %s: generating it (%d clips, seed %d)", manifest, world.clips, world.seed)
    synth_dataset(
        world.dir,
        n=world.clips,
        seed=world.seed,
        cfg=WORLD_PRESETS[world.preset],
        workers=os.cpu_count() or 1,
    )
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
REPORT = "report.json"  # a row's evaluation, written beside its model (committed: docs/ablations)
# the figures of the printed ablation table (the JSON holds every figure of each report)
ABLATION_COLUMNS = (
    "lipsync_offset_ms",
    "lipsync_corr_ratio",
    "sfx_recall",
    "sfx_align_ms",
    "sfx_false_alarm",
    "harmony_esr_error_db",
    "harmony_speech_in_sfx_db",
    "harmony_sfx_in_speech_db",
    "sentence_id_accuracy",
    "identity_drift",
    "identity_recognised",
    "sharpness_ratio_face",
    "feature_visibility",
    "fid_world",
    "beyond_grammar.text.offset_ms",  # nested keys by dots: the out-of-grammar text mode
    "beyond_grammar.flite.offset_ms",  # … and the other synthesiser driving the avatar
)


def ablation_runs(root: Path) -> list[tuple[str, Path]]:
    """(variant, directory) of every row under ``root`` (``runs/ablations/<variant>``): a run
    with its exported model, or a row evaluated before (its ``report.json``, e.g. the committed
    ``docs/ablations/<variant>``); the full model first."""
    dirs = sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
    rows = [(d.name, d) for d in dirs if (d / ABLATION_MODEL).is_file() or (d / REPORT).is_file()]
    missing = [d.name for d in dirs if (d.name, d) not in rows]
    if missing:
        log.warning(
            "ablation runs without %s (export them: unison-stream train export --run DIR "
            "--out DIR/%s): %s", ABLATION_MODEL, ABLATION_MODEL, ", ".join(missing)
        )  # fmt: skip
    if not rows:
        raise SystemExit(f"no ablation run with {ABLATION_MODEL} or {REPORT} under {root}")
    return sorted(rows, key=lambda r: (not r[0].startswith("full"), r[0]))


def stale(run: Path) -> bool:
    """Whether a row must be evaluated: no report yet, or a model exported after it."""
    report, model = run / REPORT, run / ABLATION_MODEL
    if not report.is_file():
        return True
    return model.is_file() and model.stat().st_mtime > report.stat().st_mtime


def seed_spread(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per family of seeds (``full``, ``full_s1``, …): each column's max − min over its rows,
    for families with two rows or more: the noise a variant's difference must exceed."""
    families: dict[str, list[dict[str, Any]]] = {}
    for name, r in rows.items():
        families.setdefault(re.sub(r"_s\d+$", "", name), []).append(r)
    out: dict[str, dict[str, float]] = {}
    for family, members in families.items():
        if len(members) < 2:
            continue
        out[family] = {}
        for col in ABLATION_COLUMNS:
            vals = [float(v) for m in members if isinstance(v := _get(m, col), int | float)]
            if len(vals) >= 2:
                out[family][col] = max(vals) - min(vals)
    return out


def ablation_table(rows: dict[str, dict[str, Any]]) -> str:
    """A markdown table: one row per variant, the :data:`ABLATION_COLUMNS` it has."""
    cols = [c for c in ABLATION_COLUMNS if any(_get(r, c) is not None for r in rows.values())]
    lines = ["| variant | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, r in rows.items():
        cells = [_cell(_get(r, c)) for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _get(report: dict[str, Any], key: str) -> Any:
    """``report[key]``, ``a.b.c`` reading nested dicts; None where any level is missing."""
    v: Any = report
    for part in key.split("."):
        v = v.get(part) if isinstance(v, dict) else None
    return v


def _cell(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "–" if v is None else str(v).lower()
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _evaluate(
    engine: Any, manifest: Path, args: argparse.Namespace, grid: Path | None, *, states: bool
) -> Any:
    """``evaluate`` with the command's options (``states``: drive every state a viewer sees,
    scaled by ``--states-scale``); closes ``engine``."""
    from unison_stream.eval.evaluate import evaluate
    from unison_stream.eval.states import StatesConfig

    d = StatesConfig()
    scale = args.states_scale
    plan = StatesConfig(
        idle_s=d.idle_s * scale,
        listening_s=d.listening_s * scale,
        session_s=d.session_s * scale,
        first_reply_s=d.first_reply_s * min(1.0, scale * 4),
    )

    try:
        return evaluate(
            engine,
            manifest,
            split=args.split,
            limit=args.limit,
            stream_seconds=args.stream_seconds,
            progress=not args.no_progress,
            grid=grid,
            beyond=not args.no_beyond,
            states=plan if states and not args.no_states else None,
            portraits=not args.no_portraits,
            states_truth=_states_truth(args) if states and not args.no_states else None,
        )
    finally:
        engine.close()


def _states_truth(args: argparse.Namespace) -> Path | None:
    """The states world's manifest (``--states-manifest``; ``none``: measure idle and
    listening against the test clips, who speak)."""
    if args.states_manifest == "none":
        return None
    return ensure_world(Path(args.states_manifest), STATES_WORLD)


def _run_ablations(args: argparse.Namespace) -> int:
    """``eval --ablations DIR``: every exported run under DIR on the same clips. A row keeps
    the report it was evaluated to (``DIR/<variant>/report.json``) until its model is exported
    again or ``--reevaluate`` is given, so rows trained in different sessions make one table."""
    from unison_stream.engine import Engine
    from unison_stream.model.checkpoint import load_model

    rows: dict[str, dict[str, Any]] = {}
    for name, run in ablation_runs(Path(args.ablations)):
        if not (args.reevaluate or stale(run)) or not (run / ABLATION_MODEL).is_file():
            log.info("ablation row %s: the report in %s", name, run / REPORT)
            rows[name] = json.loads((run / REPORT).read_text())
            continue
        log.info("ablation row %s: evaluating %s", name, run / ABLATION_MODEL)
        model = load_model(run / ABLATION_MODEL, overrides=args.overrides)
        engine = Engine(model.cfg, model=model, max_sessions=2, max_ahead=2)
        manifest = ensure_world(Path(args.manifest))
        rows[name] = _evaluate(engine, manifest, args, grid=None, states=False)
        (run / REPORT).write_text(json.dumps(rows[name], indent=1) + "\n")
    table = ablation_table(rows)
    spread = seed_spread(rows)
    out = json.dumps({"ablations": rows, "seed_spread": spread, "table": table})
    sys.stdout.write((out if args.json else table) + "\n")  # the command's output
    return 0


def _run(args: argparse.Namespace) -> int:

    if args.ablations:
        return _run_ablations(args)
    manifest = ensure_world(Path(args.manifest))
    grid = Path(args.grid) if args.grid else None
    report = _evaluate(_engine(args), manifest, args, grid=grid, states=True)
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
    p.add_argument("--manifest", default=str(WORLD.manifest))
    p.add_argument(
        "--states-manifest",
        default=str(STATES_WORLD.manifest),
        help="the states world, whose quiet and listening clips are the ground truth of idle "
        "and listening (generated when the default is missing; none: the test clips)",
    )
    p.add_argument(
        "--limit", type=int, default=0, help="clips evaluated (default 0: the whole split)"
    )
    p.add_argument("--stream-seconds", type=float, default=60.0, help="identity stream length")
    p.add_argument("--seed", type=int, default=0, help="random weights' seed (--checkpoint none)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--no-beyond",
        action="store_true",
        help="skip the out-of-grammar and other-voice figures (report key beyond_grammar)",
    )
    p.add_argument(
        "--no-states",
        action="store_true",
        help="skip the figures of idle, listening, transitions and a conversation (key states)",
    )
    p.add_argument(
        "--no-portraits",
        action="store_true",
        help="skip the pictures no training run saw: custom avatars (key portraits)",
    )
    p.add_argument(
        "--states-scale",
        type=float,
        default=1.0,
        help="scale the states' lengths (30 s idle, 30 s listening, 5 min conversation)",
    )
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
        "and print the ablation table; a row's report.json is reused until its model changes",
    )
    p.add_argument(
        "--reevaluate", action="store_true", help="with --ablations: evaluate every row again"
    )
    p.add_argument(
        "overrides", nargs="*", default=[], help="config overrides, e.g. sampler.steps=2"
    )
    p.set_defaults(func=_run)
