"""The console entry point: render writes a playable file; bench prints its JSON figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.helpers import TEST_OVERRIDES
from unison_stream.cli import main
from unison_stream.config import ConfigError
from unison_stream.engine.planner import LetterTiming, Planner
from unison_stream.media import probe_duration
from unison_stream.vocab import event_id


def letters_track(text: str):
    plan = Planner(timing=LetterTiming(), tail_s=0.0).plan(text)
    return plan.track, plan.transcript


def test_letters_track_times_tags_and_rejects_unknown_tags() -> None:
    track, transcript = letters_track("Hi <wave> you <clap>")
    assert transcript == "Hi <whoosh> you <clap>", "canonical tags inline, as training saw"
    assert event_id("wave") in track.ids and event_id("clap") in track.ids
    assert all(b >= a for a, b in zip(track.start, track.start[1:], strict=False))
    assert track.end[-1] > track.start[0]
    with pytest.raises(ValueError, match="unknown event tag <dance>"):
        letters_track("Hi <dance>")


@pytest.mark.slow
def test_render_writes_a_playable_mp4_whose_duration_matches_the_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "hi.mp4"
    code = main(["render", "Hi <clap>", "-o", str(out), *TEST_OVERRIDES])
    assert code == 0
    chunk = 0.16  # the test config's chunk
    plan = Planner().plan("Hi <clap>")  # the planner render uses (espeak-ng timings)
    expected = (plan.num_chunks(chunk) + math.ceil(0.5 / chunk - 1e-9)) * chunk  # plan + tail
    dur = probe_duration(out)
    assert abs(dur["video"] - expected) < 0.041, dur
    assert abs(dur["audio"] - expected) < 0.07, dur  # AAC pads to whole 1024-sample frames


def test_bench_model_prints_the_figures(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "model", "--json", "--repeats", "1", *TEST_OVERRIDES])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    for key in (
        "params",
        "tokens_per_chunk",
        "chunk_forward_ms_fp32",
        "chunk_forward_ms_bf16",
        "chunk_ms_4steps_plus_commit",
        "cached_vs_recompute_speedup",
        "host_gflops",
        "gflop_per_chunk_call",
        "gflop_per_media_s",
        "split_vs_mixed_attention_speedup",
    ):
        assert key in res and res[key] > 0, key
    assert res["tokens_per_chunk"] == 2 * 16 + 2 * 4
    assert res["isa_aten"] and res["cpu_model"] and res["threads"] >= 1


def test_bad_override_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"model\.depth"):
        main(["bench", "model", "--json", "model.depth=0"])
