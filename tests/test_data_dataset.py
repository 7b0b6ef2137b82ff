"""Dataset writer: deterministic shards + manifest, held-out splits, loader round trip, CLI."""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from unison_stream.data.dataset import SPLITS, _draw, _identity_pool, split_of, synth_dataset
from unison_stream.data.errors import ManifestError
from unison_stream.data.loader import ManifestDataset, collate
from unison_stream.data.merge import merge_manifests
from unison_stream.data.synth import speech
from unison_stream.data.synth.config import WORLD_PRESETS, WorldConfig
from unison_stream.data.synth.identity import identity_key
from unison_stream.data.synth.states import kind_of
from unison_stream.vocab import PAD_ID, SILENCE_ID, TRACK_VOCAB, UNK_ID, event_id

pytestmark = pytest.mark.skipif(
    not speech.available(), reason="libespeak-ng not installed (Debian package libespeak-ng1)"
)
CFG = WorldConfig()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "a"
    synth_dataset(out, n=5, seed=11, progress=False, cfg=WorldConfig(shard_size=2))
    return out


def test_same_seed_same_bytes_other_seed_differs(dataset: Path, tmp_path: Path) -> None:
    again = tmp_path / "b"
    synth_dataset(again, n=5, seed=11, progress=False, cfg=WorldConfig(shard_size=2))
    files = sorted(p.relative_to(dataset) for p in dataset.rglob("*") if p.is_file())
    assert [str(p) for p in files if "shard" in str(p)] == [
        "shards/shard-00000.tar",
        "shards/shard-00001.tar",
        "shards/shard-00002.tar",
    ]
    for rel in files:
        if rel.name != "dataset.json":  # holds the wall-clock timing
            assert (dataset / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = tmp_path / "c"
    synth_dataset(other, n=2, seed=12, progress=False)
    first = json.loads((dataset / "manifest.jsonl").read_text().splitlines()[0])
    first_other = json.loads((other / "manifest.jsonl").read_text().splitlines()[0])
    assert first["transcript"] != first_other["transcript"] or first["id"] != first_other["id"]


def test_splits_hold_out_identities_and_sentences() -> None:
    pool = _identity_pool(0, 300)
    pools = {
        s: [i for i in pool if split_of(identity_key(i), CFG.split_fractions) == s] for s in SPLITS
    }
    ids: dict[str, set[str]] = {s: set() for s in SPLITS}
    sentences: dict[str, set[str]] = {s: set() for s in SPLITS}
    for index in range(400):  # drawing is cheap: no rendering or speech
        split, identity, script, _ = _draw(CFG, 0, index, pools)
        ids[split].add(identity_key(identity))
        sentences[split].add(script.sentence_key())
    for a in SPLITS:
        assert ids[a] and sentences[a], f"split {a} is empty"
        for b in SPLITS:
            if a < b:
                assert not ids[a] & ids[b], f"identity shared by {a} and {b}"
                assert not sentences[a] & sentences[b], f"sentence shared by {a} and {b}"
    assert len(ids["train"]) > 100 and len(sentences["train"]) > 250


def test_manifest_rows_and_loader_batches(dataset: Path) -> None:
    rows = [json.loads(x) for x in (dataset / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and [r["id"] for r in rows] == [f"syn-11-{i:07d}" for i in range(5)]
    ds = ManifestDataset(dataset / "manifest.jsonl")
    spf = CFG.samples_per_frame()
    samples = [ds[i] for i in range(len(ds))]
    for row, s in zip(rows, samples, strict=True):
        assert s.frames.shape == (row["num_frames"], 128, 128, 3) and s.frames.dtype == np.uint8
        assert s.audio.shape == (row["num_frames"] * spf,) and s.audio.dtype == np.float32
        assert set(s.stems) == {"speech", "sfx", "ambience"}
        np.testing.assert_allclose(s.audio, s.stems["speech"] + s.stems["sfx"], atol=1e-6)
        assert (s.track_ids != UNK_ID).all() and (s.track_ids < len(TRACK_VOCAB)).all()
        assert (np.diff(s.track_times[:, 0]) >= 0).all()
        for e in row["events"]:
            assert event_id(e["name"]) in s.track_ids
            assert e["contact_frame"] == round(e["audio_onset"] * CFG.fps)
        assert s.transcript == row["transcript"] and s.caption
    batch = collate(samples[:3])
    f = max(len(s.frames) for s in samples[:3])
    assert batch["frames"].shape == (3, f, 128, 128, 3) and batch["frames"].dtype == torch.uint8
    assert batch["audio"].shape == (3, f * spf) and batch["audio"].dtype == torch.float32
    assert batch["stems"]["speech"].shape == (3, f * spf) and batch["stem_mask"]["sfx"].all()
    assert batch["track_ids"].dtype == torch.long
    assert (batch["track_ids"][~batch["track_mask"]] == PAD_ID).all()
    assert batch["frame_mask"].sum(1).tolist() == [len(s.frames) for s in samples[:3]]


def test_cli_synth_and_preview(tmp_path: Path) -> None:
    import argparse

    import av

    from unison_stream.data.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["data", "synth", "--n", "2", "--out", str(tmp_path), "--workers", "1"]
    )
    assert args.func(args) == 0
    report = json.loads((tmp_path / "dataset.json").read_text())
    assert report["n"] == 2 and report["clips_per_s"] > 0
    args = parser.parse_args(
        ["data", "preview", str(tmp_path / "manifest.jsonl"), "--out", str(tmp_path / "p")]
    )
    assert args.func(args) == 0
    (mp4,) = (tmp_path / "p").glob("*.mp4")
    (png,) = (tmp_path / "p").glob("*.png")
    with av.open(str(mp4)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.audio[0].codec_context.name == "aac"
        n = sum(1 for _ in c.decode(video=0))
    rows = [json.loads(x) for x in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert n == rows[0]["num_frames"]
    assert png.stat().st_size > 10_000


# ---- the classic world is unchanged; the states world; merging worlds --------------------------
# sha256 (first 16 hex) of the first two manifest lines and shard members of
# `data synth --n 8 --seed 0`, made by the generator before the states world existed.
CLASSIC_ROWS = ("e3e58d52f2170ecc", "5f5b5e41e10d1f4f")
CLASSIC_MEMBERS = ("7970bf38b0f418ff", "4cd7f6852e413372")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def test_classic_world_keeps_its_bytes(tmp_path: Path) -> None:
    synth_dataset(tmp_path, n=2, seed=0, progress=False)
    rows = (tmp_path / "manifest.jsonl").read_bytes().splitlines()
    with tarfile.open(tmp_path / "shards" / "shard-00000.tar") as tar:
        members = [tar.extractfile(m).read() for m in tar.getmembers()]  # type: ignore[union-attr]
    hint = (
        "the classic world changed; if libespeak-ng, numpy or Pillow were upgraded, remake "
        "these hashes with the generator of the commit before the states world"
    )
    assert tuple(_sha(r) for r in rows) == CLASSIC_ROWS, hint
    assert tuple(_sha(m) for m in members) == CLASSIC_MEMBERS, hint
    assert "kind" not in json.loads(rows[0]) and "look" not in json.loads(rows[0])["identity"]


def _small_states() -> WorldConfig:
    return replace(WORLD_PRESETS["states"], quiet_s=(1.0, 3.0), quiet_mean_s=2.0, shard_size=3)


def test_states_world_is_deterministic_and_labels_every_clip(tmp_path: Path) -> None:
    cfg = _small_states()
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        synth_dataset(out, n=7, seed=4, progress=False, cfg=cfg, identities=40)
    for rel in ("manifest.jsonl", "shards/shard-00000.tar", "shards/shard-00002.tar"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    rows = [json.loads(x) for x in (a / "manifest.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows] == [kind_of(i, cfg) for i in range(7)]
    assert {r["kind"] for r in rows} == {"speech", "quiet", "listening"}
    for r in rows:
        if r["kind"] == "speech":
            assert r["transcript"] and any(r["rest"]) and r["voice"] is not None
            continue
        assert r["transcript"] == "" and r["sentence_key"] == "" and r["voice"] is None
        assert [p["label"] for p in r["phonemes"]] == ["_"] and r["events"] == []
        assert r["phonemes"][0]["end"] == r["duration"] and max(r["mouth_open"]) == 0.0
    report = json.loads((a / "dataset.json").read_text())
    assert set(report["seconds_by_kind"]) == {"speech", "quiet", "listening"}
    ds = ManifestDataset(a / "manifest.jsonl")
    quiet = next(i for i, (_, r) in enumerate(ds.rows) if r["kind"] == "quiet")
    sample = ds[quiet]
    assert sample.transcript == "" and sample.track_ids.tolist() == [SILENCE_ID]
    assert not sample.stems["speech"].any()


def test_look_identities_are_held_out_by_split() -> None:
    cfg = replace(WORLD_PRESETS["states"], look_share=0.5)
    pool = _identity_pool(9, 300, cfg)
    looks = [i for i in pool if i.look is not None]
    assert 0.35 * len(pool) < len(looks) < 0.65 * len(pool)
    assert _identity_pool(9, 300, cfg) == pool, "the pool is deterministic"
    assert _identity_pool(9, 300) == _identity_pool(9, 300, WorldConfig())  # classic: no looks
    assert all(i.look is None for i in _identity_pool(9, 300))
    keys = {identity_key(i) for i in pool}
    assert len(keys) == len(pool)
    pools = {
        s: {identity_key(i) for i in pool if split_of(identity_key(i), cfg.split_fractions) == s}
        for s in SPLITS
    }
    assert all(any(k.startswith("L-") for k in p) for p in pools.values())
    assert not (pools["train"] & pools["test"]) and not (pools["train"] & pools["val"])


def test_merge_keeps_rows_and_splits_and_resolves_media(tmp_path: Path) -> None:
    classic, states = tmp_path / "w" / "classic", tmp_path / "w" / "states"
    synth_dataset(classic, n=3, seed=21, progress=False)
    synth_dataset(states, n=3, seed=22, progress=False, cfg=_small_states(), identities=40)
    out = tmp_path / "merged" / "all"
    counts = merge_manifests([classic, states / "manifest.jsonl"], out)
    assert sum(sum(c.values()) for c in counts.values()) == 6
    merged = ManifestDataset(out / "manifest.jsonl")
    sources = [
        ManifestDataset(classic / "manifest.jsonl"),
        ManifestDataset(states / "manifest.jsonl"),
    ]
    originals = [(ds, i) for ds in sources for i in range(len(ds))]
    assert len(merged) == len(originals)
    for k, (ds, i) in enumerate(originals):
        row, src = merged.rows[k][1], ds.rows[i][1]
        assert row["id"] == src["id"] and row["split"] == src["split"]
        assert row["video"].startswith("../../w/") and "::" in row["video"]
        np.testing.assert_array_equal(merged[k].frames, ds[i].frames)
        np.testing.assert_array_equal(merged[k].stems["speech"], ds[i].stems["speech"])
    with pytest.raises(ManifestError, match="id also in"):
        merge_manifests([classic, classic], tmp_path / "dup")
    with pytest.raises(FileNotFoundError, match="no manifest"):
        merge_manifests([tmp_path / "nowhere"], tmp_path / "none")


def test_cli_states_world_and_merge(tmp_path: Path) -> None:
    import argparse

    from unison_stream.data.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    world = tmp_path / "q"
    args = parser.parse_args(
        ["data", "synth", "--n", "2", "--out", str(world), "--workers", "1", "--seed", "3",
         "--world", "states", "--kinds", "quiet=1", "--identities", "40"]
    )  # fmt: skip
    assert args.func(args) == 0
    rows = [json.loads(x) for x in (world / "manifest.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["quiet", "quiet"]
    bad = parser.parse_args(
        ["data", "synth", "--n", "1", "--out", str(tmp_path / "x"), "--kinds", "naps=1"]
    )
    assert bad.func(bad) == 2  # unknown kind: an error naming the kinds, no world
    assert not (tmp_path / "x").exists()
    args = parser.parse_args(["data", "merge", str(world), "--out", str(tmp_path / "m")])
    assert args.func(args) == 0
    assert len(ManifestDataset(tmp_path / "m" / "manifest.jsonl")) == 2
    dup = parser.parse_args(["data", "merge", str(world), str(world), "--out", str(tmp_path / "d")])
    assert dup.func(dup) == 2
