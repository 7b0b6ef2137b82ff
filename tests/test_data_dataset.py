"""Dataset writer: deterministic shards + manifest, held-out splits, loader round trip, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from unison_stream.data.dataset import SPLITS, _draw, _identity_pool, split_of, synth_dataset
from unison_stream.data.loader import ManifestDataset, collate
from unison_stream.data.synth import speech
from unison_stream.data.synth.config import WorldConfig
from unison_stream.data.synth.identity import identity_key
from unison_stream.vocab import PAD_ID, TRACK_VOCAB, UNK_ID, event_id

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
