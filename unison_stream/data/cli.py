"""``unison-stream data …``: generate the synthetic world and preview clips.

- ``data synth --n N --out DIR --seed S [--workers W] [--world states] [--kinds K=S,…]``
  writes shards + manifest (progress bar).
- ``data merge A B … --out DIR`` writes one manifest over several worlds (splits kept).
- ``data preview MANIFEST [--id ID | --index I] --out DIR`` writes ``<id>.mp4`` and ``<id>.png``.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["register"]

log = logging.getLogger(__name__)


def _synth(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from unison_stream.data.dataset import synth_dataset
    from unison_stream.data.synth.config import WORLD_PRESETS, parse_kinds

    cfg = WORLD_PRESETS[args.world]
    try:
        if args.kinds is not None:
            cfg = replace(cfg, kinds=parse_kinds(args.kinds))
        if args.look_share is not None:
            cfg = replace(cfg, look_share=args.look_share)
    except ValueError as e:
        log.error("%s", e)
        return 2
    report = synth_dataset(
        args.out,
        n=args.n,
        seed=args.seed,
        workers=args.workers,
        identities=args.identities,
        cfg=cfg,
    )
    log.info(
        "%d clips in %.1f s (%.2f clips/s on %d workers); splits %s",
        report["n"],
        report["seconds"],
        report["clips_per_s"],
        report["workers"],
        report["splits"],
    )
    log.info("seconds by kind: %s", report["seconds_by_kind"])
    return 0


def _merge(args: argparse.Namespace) -> int:
    from unison_stream.data.errors import ManifestError
    from unison_stream.data.merge import merge_manifests

    try:
        counts = merge_manifests([Path(p) for p in args.sources], Path(args.out))
    except (ManifestError, FileNotFoundError) as e:
        log.error("%s", e)
        return 2
    log.info("merged %s into %s", counts, Path(args.out) / "manifest.jsonl")
    return 0


def _preview(args: argparse.Namespace) -> int:
    from unison_stream.data.loader import ManifestDataset
    from unison_stream.data.preview import contact_sheet, write_mp4

    ds = ManifestDataset(args.manifest)
    index = args.index
    if args.id is not None:
        ids = [row["id"] for _, row in ds.rows]
        if args.id not in ids:
            log.error("no row with id %r in %s", args.id, args.manifest)
            return 2
        index = ids.index(args.id)
    if not 0 <= index < len(ds):
        log.error("index %d out of range: the manifest has %d rows", index, len(ds))
        return 2
    s = ds[index]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fps, sr = ds.media.fps, ds.media.sample_rate
    write_mp4(out / f"{s.id}.mp4", s.frames, s.audio, fps=fps, sample_rate=sr)
    contact_sheet(s, fps=fps, sample_rate=sr).save(out / f"{s.id}.png")
    log.info("wrote %s and %s", out / f"{s.id}.mp4", out / f"{s.id}.png")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``data`` command group to the ``unison-stream`` CLI."""
    from unison_stream.data.synth.config import WORLD_PRESETS

    p = subparsers.add_parser("data", help="synthetic training data: generate, preview")
    sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    s = sub.add_parser("synth", help="generate synthetic avatar clips (shards + manifest)")
    s.add_argument("--n", type=int, required=True, help="number of clips")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes")
    s.add_argument("--identities", type=int, default=1000, help="size of the identity pool")
    s.add_argument(
        "--world",
        choices=sorted(WORLD_PRESETS),
        default="classic",
        help="preset world: classic (speech clips) or states (+quiet, listening, rests, looks)",
    )
    s.add_argument(
        "--kinds",
        default=None,
        help="clip kind shares, e.g. speech=0.7,quiet=0.15,listening=0.15 (default: the preset's)",
    )
    s.add_argument(
        "--look-share",
        type=float,
        default=None,
        help="share of identities with free colours and accessories (default: the preset's)",
    )
    s.set_defaults(func=_synth)
    m = sub.add_parser(
        "merge", help="one manifest over several worlds (refs resolved, splits kept)"
    )
    m.add_argument("sources", nargs="+", help="world folders or manifest.jsonl files")
    m.add_argument("--out", required=True, help="output folder for manifest.jsonl")
    m.set_defaults(func=_merge)
    v = sub.add_parser("preview", help="write an mp4 with sound and a contact sheet of a clip")
    v.add_argument("manifest", help="manifest.jsonl")
    v.add_argument("--index", type=int, default=0, help="row index (default 0)")
    v.add_argument("--id", default=None, help="row id (overrides --index)")
    v.add_argument("--out", default="out/preview", help="output folder")
    v.set_defaults(func=_preview)
