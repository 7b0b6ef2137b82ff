"""``bench stream`` end to end on the small test config: every figure present and sane, the
streamed-input speech bit-exact (figures themselves are for the host, not asserted)."""

from __future__ import annotations

from tests.helpers import TEST_OVERRIDES
from unison_stream.benchmarks.stream import bench_stream
from unison_stream.config import load_config


def test_bench_stream_prints_every_figure() -> None:
    cfg = load_config("tiny", [*TEST_OVERRIDES, "runtime.dtype=fp32"])
    r = bench_stream(cfg, seconds=2.0, trials=1)
    for key in (
        "rtf",
        "first_media_ms",
        "interrupt_ms",
        "speech_input_latency_ms_p50",
        "speech_input_latency_ms_max",
        "student_vs_teacher_chunk_ratio",
        "batched_sessions_throughput_gain",
    ):
        assert isinstance(r[key], float) and r[key] > 0, key
    assert r["interrupt_leak_chunks"] == 0
    assert r["speech_input_bit_exact"] is True
    assert r["speech_input_latency_ms_p50"] <= r["speech_input_latency_ms_max"]
    assert "cpu" in r or "cpu_model" in r
