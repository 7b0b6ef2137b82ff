"""``unison-stream eval`` end to end on a small random model and a 3-clip test split: one JSON
object with every metric, ground-truth figures and counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.eval_support import SMALL_MODEL, tiny_states_world, tiny_world
from unison_stream.cli import main
from unison_stream.data.synth import speech as espeak
from unison_stream.eval.beyond import festival_available, flite_available

pytestmark = pytest.mark.skipif(
    not espeak.available(), reason="libespeak-ng not installed (Debian package libespeak-ng1)"
)
KEYS = {
    "clips",
    "events",
    "events_gt",
    "lipsync_offset_ms",
    "lipsync_corr_ratio",
    "lipsync_offset_ms_gt",
    "lipsync_corr_gt",
    "sfx_recall",
    "sfx_align_ms",
    "sfx_recall_gt",
    "sfx_align_ms_gt",
    "sfx_false_alarm",
    "sfx_by_class",
    "harmony_esr_error_db",
    "harmony_esr_db_gt",
    "harmony_speech_in_sfx_db",
    "harmony_sfx_in_speech_db_gt",
    "identity_drift",
    "identity_distance_first",
    "identity_distance_last",
    "identity_recognised",
    "identity_distance_gt",
    "identity_distance_other",
    "sentence_id_ratio",
    "sentence_id_accuracy",
    "sentence_id_accuracy_gt",
    "bars",
    # visual quality, model beside ground truth and the codec round trip
    "sharpness_ratio_face",
    "sharpness_ratio_frame",
    "sharpness_ratio_face_codec",
    "sharpness_face_gt",
    "fid_world",
    "fid_world_codec",
    "fid_world_ratio",
    "feature_visibility",
    "feature_visibility_gt",
    "feature_visibility_codec",
    "feature_visibility_stream",
    "identity_verified_clips_gt",
    "identity_windows",
    "identity_verified_all_windows",
    "visual_bars",
}


def test_eval_prints_every_metric_as_one_json_object(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    manifest = tiny_world()
    grid = tmp_path / "grid.png"
    argv = ["eval", "--json", "--checkpoint", "none", "--manifest", str(manifest)]
    argv += ["--limit", "3", "--stream-seconds", "2", "--no-progress", "--grid", str(grid)]
    argv += ["--states-scale", "0.04", "--states-manifest", str(tiny_states_world())]
    argv += SMALL_MODEL
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, "exactly one line on stdout: the JSON object"
    r = json.loads(out[0])
    assert set(r) >= KEYS, KEYS - set(r)
    assert r["clips"] == 3 and r["events"] == r["events_gt"] == 6
    # ground truth measured on the same clips: synced lips, every effect heard and seen
    assert r["lipsync_offset_ms_gt"] <= 40 and r["lipsync_corr_gt"] > 0.5
    assert r["sfx_recall_gt"] == 1.0 and r["sfx_align_ms_gt"] <= 40
    assert r["sentence_id_accuracy_gt"] == 1.0
    assert r["identity_distance_other"] > r["identity_distance_gt"]
    assert r["stream_seconds"] == pytest.approx(1.92)  # 6 chunks of 0.32 s
    assert set(r["bars"]) == {
        "lipsync_offset_ms",
        "lipsync_corr_ratio",
        "sfx_recall",
        "sfx_align_ms",
        "identity_recognised",
    }
    assert r["checkpoint"] == "none"
    # per-class action–sound figures and harmony, ground truth beside the model
    assert r["sfx_by_class_gt"] and all(c["recall"] == 1.0 for c in r["sfx_by_class_gt"].values())
    assert sum(c["events"] for c in r["sfx_by_class"].values()) == r["events"]
    assert r["harmony_sfx_in_speech_db_gt"] <= -40, (
        "the world's speech stem is silent under effects"
    )
    assert r["harmony_esr_db"] is not None and r["harmony_esr_error_db"] >= 0
    # beyond the grammar: as many out-of-grammar sentences as --limit, each in every set
    b = r["beyond_grammar"]
    assert b["sentences"] == 3 and b["sentence_candidates"] == 3 + 3
    sets = ["text", "espeak", "espeak_in", "noisy"]
    sets += ["flite", "flite_in"] if flite_available() else []
    sets += ["festival", "festival_in"] if festival_available() else []
    for name in sets:
        assert b[name]["clips"] == 3 and b[name]["offset_ms"] is not None, name
        assert b[name]["mouth_spread_ratio"] is not None, name
    # visual quality: ground truth finds its features and verifies as its own people
    assert r["feature_visibility_gt"] >= 0.9 and r["sharpness_face_gt"] > 0
    assert set(r["visual_bars"]) == {
        "sharpness_ratio_face",
        "sharpness_ratio_frame",
        "fid_world_ratio",
        "feature_visibility",
        "feature_visibility_stream",
        "identity_verified_all_windows",
    }
    if r["identity_verify_threshold"] is not None:  # the feature net's weights are bundled
        assert r["identity_verified_clips_gt"] == 1.0
        assert r["fid_world"] > r["fid_world_codec"] > 0, "random weights: far from the truth"
        assert [w["start_s"] for w in r["identity_windows"]] == [0.0]  # 2 s: one window
    assert r["sharpness_ratio_face"] is not None and r["sharpness_ratio_face_codec"] < 1.0
    # every state a viewer sees, each with the visual figures and its bars
    st = r["states"]
    for state in ("idle", "listening", "transitions", "session", "audio_driven"):
        assert st[state] is not None and st[state]["frames"] > 0, state
        assert set(st[state]["bars"]) == {
            "sharpness_ratio_face",
            "fid_world_ratio",
            "feature_visibility",
            "ghosting_ratio",
            "identity_verified_all_windows",
        }
        assert st[state]["ghosting_gt"] is not None and st[state]["sharpness_ratio_face"] > 0
    # idle and listening against the states world's quiet and listening clips, on their people
    assert st["idle"]["truth"] == "quiet clips" and st["listening"]["truth"] == "listening clips"
    assert st["transitions"]["truth"] == st["session"]["truth"] == "speech clips"
    assert st["idle"]["frames"] == 2 * 4 * 8  # 2 quiet people × 1.2 s: 4 chunks of 8 frames
    assert [p["frames"] for p in st["idle"]["people"]] == [32, 32], "each person's own figures"
    assert all(p["sharpness_ratio_face"] > 0 for p in st["idle"]["people"])
    assert st["session_shares"]["speaking"] > 0 and st["session_switches"] >= 2
    with Image.open(grid) as img:
        assert img.size[0] > 6 * 128 and img.size[1] > 8 * 128, "3 rows + a row per state"


def test_eval_without_a_checkpoint_says_how_to_get_one(tmp_path: object) -> None:
    from unison_stream.model.checkpoint import bundled_checkpoint

    if bundled_checkpoint("tiny") is not None:
        pytest.skip("the bundled checkpoint exists")
    with pytest.raises(SystemExit, match="--checkpoint none"):
        main(["eval", "--json", "--manifest", str(tiny_world())])


def test_eval_ablations_prints_one_row_per_exported_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from unison_stream.model.checkpoint import load_model, save_model

    root = tmp_path / "ablations"
    for name, extra in (("no_scg", ["model.ablation.scg=false"]), ("full", [])):
        (root / name).mkdir(parents=True)
        save_model(
            load_model(None, overrides=[*SMALL_MODEL, *extra]), root / name / "model.safetensors"
        )
    (root / "no_split").mkdir()  # not exported yet: left out with a warning
    argv = ["eval", "--json", "--ablations", str(root), "--manifest", str(tiny_world())]
    argv += ["--no-beyond"]
    assert main([*argv, "--limit", "1", "--stream-seconds", "1", "--no-progress"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(r["ablations"]) == ["full", "no_scg"], "the full model's row first"
    for row in r["ablations"].values():
        assert set(row) >= {"lipsync_offset_ms", "sfx_recall", "feature_visibility"}
    lines = r["table"].splitlines()
    assert lines[0].startswith("| variant | lipsync_offset_ms |") and len(lines) == 4
    assert lines[2].startswith("| full |") and lines[3].startswith("| no_scg |")
    assert r["seed_spread"] == {}, "one row per family: no spread yet"

    # a row evaluated before keeps its report (a second seed from another session, say), and
    # the models need not be there: the committed docs/ablations rows make the same table
    assert (root / "full" / "report.json").is_file()
    for name in ("full", "no_scg"):
        (root / name / "model.safetensors").unlink()
    seed1 = dict(
        r["ablations"]["full"], lipsync_offset_ms=r["ablations"]["full"]["lipsync_offset_ms"] + 7.0
    )
    (root / "full_s1").mkdir()
    (root / "full_s1" / "report.json").write_text(json.dumps(seed1))
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(again["ablations"]) == ["full", "full_s1", "no_scg"]
    assert again["ablations"]["no_scg"] == r["ablations"]["no_scg"], "reused, not re-evaluated"
    assert again["seed_spread"]["full"]["lipsync_offset_ms"] == pytest.approx(7.0)
