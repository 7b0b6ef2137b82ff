"""Tiny synthetic worlds for the eval tests: 6 speech clips, 3 of them relabelled ``test``;
4 quiet and listening clips, all ``test``."""

from __future__ import annotations

import functools
import json
import tempfile
from dataclasses import replace
from pathlib import Path

from unison_stream.data.dataset import synth_dataset
from unison_stream.data.synth.config import WORLD_PRESETS

# A small model that keeps the tiny preset's media and latent shapes, so the trained codecs
# (and the video encoder the reference frame needs) apply; random weights.
SMALL_MODEL = [
    "model.width=64",
    "model.depth=2",
    "model.heads=2",
    "model.scg_hidden=16",
    "runtime.dtype=fp32",
]


@functools.lru_cache(maxsize=1)
def tiny_world() -> Path:
    """Manifest of a 6-clip world (made once per test process) whose first 3 clips with an
    event-bearing one first are the ``test`` split."""
    out = Path(tempfile.mkdtemp(prefix="eval-world-"))
    synth_dataset(out, n=6, seed=5, progress=False)
    manifest = out / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows.sort(key=lambda r: -len(r.get("events") or []))  # clips with events first
    for k, row in enumerate(rows):
        row["split"] = "test" if k < 3 else "train"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


@functools.lru_cache(maxsize=1)
def tiny_states_world() -> Path:
    """Manifest of a 4-clip states world (made once per test process), two quiet and two
    listening clips, every one in the ``test`` split: the idle and listening references."""
    out = Path(tempfile.mkdtemp(prefix="eval-states-"))
    cfg = replace(WORLD_PRESETS["states"], kinds=(("quiet", 0.5), ("listening", 0.5)))
    synth_dataset(out, n=4, seed=5, cfg=cfg, progress=False)
    manifest = out / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for row in rows:
        row["split"] = "test"
    assert sorted(r["kind"] for r in rows) == ["listening", "listening", "quiet", "quiet"]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest
