"""``bench int8`` on the small test config: every figure present, the int8 model really
quantized (its linear layers counted), both variants timed in the same run."""

from __future__ import annotations

import math

from tests.helpers import small_config
from unison_stream.benchmarks.int8 import bench_int8


def test_bench_int8_times_both_variants_and_compares_their_latents() -> None:
    r = bench_int8(small_config(), rounds=1, steps=1)
    assert r["linear_layers_int8"] > 0
    for key in ("step_ms_fp32", "step_ms_int8", "int8_vs_fp32_step_ratio", "video_latent_std"):
        assert isinstance(r[key], float) and r[key] > 0, key
    for key in ("max_abs_diff_video_latent", "max_abs_diff_audio_latent"):
        assert math.isfinite(r[key]) and r[key] >= 0, key
    assert r["mean_abs_diff_video_latent"] <= r["max_abs_diff_video_latent"]
    assert "cpu" in r or "cpu_model" in r
