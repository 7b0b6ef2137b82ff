"""Merge the manifests of several worlds into one, so a run trains on all of them.

``merge_manifests([A, B], C)`` writes ``C/manifest.jsonl``: every row of ``A`` then of ``B``,
unchanged except that each media reference (``video``, ``audio``, ``stems``) is rewritten
relative to ``C`` (a shard ref keeps its ``::member`` part; absolute paths stay absolute). No
media is copied. Split labels are kept as each source wrote them: the worlds hold identities
and sentences out by content hash, so a merged test split still never shares a person or a
sentence with train. Two rows with one ``id`` are an error (worlds made with one seed share
ids: generate them with different seeds). ``C/dataset.json`` lists the sources and counts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from unison_stream.data.errors import ManifestError

__all__ = ["merge_manifests"]


def _manifest_of(source: Path) -> Path:
    """A world folder's ``manifest.jsonl``, or the manifest file itself."""
    path = source / "manifest.jsonl" if source.is_dir() else source
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path}: give a world folder or its manifest.jsonl")
    return path


def _rebase(ref: str, src_root: Path, out_root: Path) -> str:
    """``ref`` (relative to ``src_root``) as a path relative to ``out_root``."""
    file, sep, member = ref.partition("::")
    if os.path.isabs(file):
        return ref
    rel = os.path.relpath(os.path.abspath(src_root / file), os.path.abspath(out_root))
    return rel + sep + member


def _rebase_row(row: dict[str, Any], src_root: Path, out_root: Path) -> dict[str, Any]:
    out = dict(row)
    for key in ("video", "audio"):
        if out.get(key):
            out[key] = _rebase(str(out[key]), src_root, out_root)
    if out.get("stems"):
        out["stems"] = {k: _rebase(str(v), src_root, out_root) for k, v in out["stems"].items()}
    return out


def merge_manifests(sources: list[Path], out: Path) -> dict[str, dict[str, int]]:
    """Write ``out/manifest.jsonl`` over ``sources``; returns clips per split per source."""
    if not sources:
        raise ValueError("merge needs at least one source world")
    out.mkdir(parents=True, exist_ok=True)
    seen: dict[str, str] = {}  # id → the manifest that holds it
    counts: dict[str, dict[str, int]] = {}
    lines: list[str] = []
    for source in sources:
        manifest = _manifest_of(source)
        per_split: dict[str, int] = {}
        with manifest.open() as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ManifestError(str(manifest), line_no, "?", f"not JSON ({e})") from e
                row_id = str(row.get("id", "?"))
                if row_id in seen:
                    raise ManifestError(
                        str(manifest),
                        line_no,
                        row_id,
                        f"id also in {seen[row_id]}; make the worlds with different seeds",
                    )
                seen[row_id] = str(manifest)
                lines.append(json.dumps(_rebase_row(row, manifest.parent, out), ensure_ascii=False))
                split = str(row.get("split", "none"))
                per_split[split] = per_split.get(split, 0) + 1
        counts[str(manifest)] = per_split
    (out / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    report = {"merged_from": [str(_manifest_of(s)) for s in sources], "clips": counts}
    (out / "dataset.json").write_text(json.dumps(report, indent=2) + "\n")
    return counts
