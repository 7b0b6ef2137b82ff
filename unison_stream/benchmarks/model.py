"""``unison-stream bench model``: speed of the model core, as figures and same-run ratios.

Figures (one JSON object):

- ``params``, ``tokens_per_chunk``, ``chunk_seconds``;
- ``chunk_forward_ms_fp32`` / ``chunk_forward_ms_bf16``: one model call on a chunk reading a
  full cache (sink + W chunks), median over repeats;
- ``chunk_ms_4steps_plus_commit`` (and ``_fp32``/``_bf16``): a whole ``CausalGenerator.step``,
  in the runtime dtype (``runtime.dtype``, auto → bf16 where the CPU has it);
- ``recompute_chunk_ms`` and ``cached_vs_recompute_speedup``: the same chunk computed without
  a cache, re-running the sink + last W chunks + the current one for every step, measured in
  the same process;
- ``model_rtf``: media seconds per wall second of the model alone (no decoders);
- the host (``runtime.host_info``: CPU model, ISA in use, threads), ``host_gflops`` (an fp32
  GEMM of the model's own MLP shape, same run), ``gflop_per_chunk_call`` (counted by
  ``torch.utils.flop_counter``), ``gflop_per_media_s`` (calls per chunk of the configured
  sampler, guidance excluded, ÷ chunk seconds) and ``host_rtf_bound`` (host_gflops ÷
  gflop_per_media_s: the rtf if every FLOP ran at GEMM speed), so a figure from one host can be
  read on another;
- ``split_vs_mixed_attention_speedup``: one chunk call with split attention (the streaming
  default) vs the widened single call (``UnisonDiT.split_attention = False``), same process.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from tqdm import tqdm

from unison_stream.config import UnisonConfig, load_config
from unison_stream.model.conditioning import Conditioning, TimedTrack
from unison_stream.model.dit import UnisonDiT
from unison_stream.model.generator import CausalGenerator, PlanSlice
from unison_stream.runtime import host_info, resolve_dtype
from unison_stream.vocab import PHONEMES, phoneme_id

__all__ = ["bench_model", "calls_per_chunk", "chunk_call_gflop", "host_gflops", "register"]


def _median_ms(fn: Callable[[], object], repeats: int, bar: tqdm) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
        bar.update(1)
    return statistics.median(times)


def synthetic_plan(cfg: UnisonConfig, batch: int = 1) -> PlanSlice:
    """A plan slice with the shapes of real use: 8 caption tokens, ~12 phonemes per chunk."""
    g = torch.Generator().manual_seed(0)
    cs, n = cfg.chunk_seconds(), 12
    ids = tuple(phoneme_id(PHONEMES[i % len(PHONEMES)]) for i in range(n))
    track = TimedTrack(
        ids, tuple(cs * i / n for i in range(n)), tuple(cs * (i + 1) / n for i in range(n))
    )
    cond = Conditioning.random(
        batch,
        text_dim=cfg.model.text_dim,
        caption_len=8,
        identity_shape=(cfg.tokens_per_frame(), cfg.latent.video_token_dim()),
        generator=g,
        tracks=[track] * batch,
    )
    return PlanSlice(cond=cond)


def _bench_dtype(model: UnisonDiT, plan: PlanSlice, repeats: int, bar: tqdm) -> dict[str, float]:
    """Per-call, per-chunk and no-cache timings of ``model`` in its current dtype."""
    cfg = model.cfg
    w, fc, nc = (
        cfg.stream.window_chunks,
        cfg.stream.chunk_latent_frames,
        cfg.audio_frames_per_chunk(),
    )
    s, p, dv, ca = (
        cfg.audio_streams(),
        cfg.tokens_per_frame(),
        cfg.latent.video_token_dim(),
        cfg.latent.audio_channels,
    )
    gen = CausalGenerator(model)
    for _ in range(w + 2):  # fill the sink and the whole window
        gen.step(plan)
    xv, xa = torch.randn(1, fc, p, dv), torch.randn(1, s, nc, ca)
    tv, ta = torch.full((1, fc), 0.5), torch.full((1, s, nc), 0.5)
    # no cache: every step re-runs the sink + W history chunks (clean) + the current chunk
    k = w + 2
    hv, ha = torch.randn(1, k * fc, p, dv), torch.randn(1, s, k * nc, ca)
    htv, hta = torch.zeros(1, k * fc), torch.zeros(1, s, k * nc)
    htv[:, -fc:], hta[:, :, -nc:] = 0.5, 0.5

    def one_call() -> None:
        model.forward_chunk(
            xv, xa, tv, ta, plan.cond, cache=gen.cache, chunk_index=gen.chunk_index, write=False
        )

    def recompute() -> None:
        for _ in range(cfg.sampler.steps):
            model(hv, ha, htv, hta, plan.cond)

    with torch.inference_mode():
        model.split_attention = False
        mixed_ms = _median_ms(one_call, repeats, bar)
        model.split_attention = True
        return {
            "chunk_forward_ms": _median_ms(one_call, repeats, bar),
            "chunk_forward_ms_mixed_attention": mixed_ms,
            "chunk_ms_4steps_plus_commit": _median_ms(lambda: gen.step(plan), repeats, bar),
            "recompute_chunk_ms": _median_ms(recompute, repeats, bar),
        }


def host_gflops(width: int, hidden: int, tokens: int, *, seconds: float = 1.0) -> float:
    """fp32 GEMM throughput of the model's MLP shape (tokens × width) @ (width × hidden)."""
    a, b = torch.randn(tokens, width), torch.randn(width, hidden)
    for _ in range(3):
        a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return 2 * tokens * width * hidden * n / (time.perf_counter() - t0) / 1e9


def chunk_call_gflop(model: UnisonDiT, plan: PlanSlice) -> float:
    """FLOPs of one streaming chunk call against a full cache (matmuls and attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = model.cfg
    gen = CausalGenerator(model)
    with torch.inference_mode():
        for _ in range(cfg.stream.window_chunks + 2):
            gen.step(plan)
        fc, nc = cfg.stream.chunk_latent_frames, cfg.audio_frames_per_chunk()
        xv = torch.randn(1, fc, cfg.tokens_per_frame(), cfg.latent.video_token_dim())
        xa = torch.randn(1, cfg.audio_streams(), nc, cfg.latent.audio_channels)
        tv, ta = torch.full((1, fc), 0.5), torch.full((1, cfg.audio_streams(), nc), 0.5)
        model.split_attention = False  # the counter knows SDPA, not the fused CPU kernel op
        with FlopCounterMode(display=False) as fcm:
            model.forward_chunk(
                xv, xa, tv, ta, plan.cond, cache=gen.cache, chunk_index=gen.chunk_index, write=False
            )
        model.split_attention = True
    # the widened call counts the doubled QK/V width of mixed groups; close enough for scale
    return fcm.get_total_flops() / 1e9


def calls_per_chunk(cfg: UnisonConfig) -> int:
    """Model calls per chunk of the configured sampler (without event guidance)."""
    return cfg.sampler.steps + (1 if cfg.stream.commit == "clean_pass" else 0)


def bench_model(cfg: UnisonConfig, *, repeats: int = 10) -> dict[str, Any]:
    """Measure the figures in the module docstring on the CPU (or ``runtime.device``)."""
    torch.manual_seed(cfg.runtime.seed)
    if cfg.runtime.threads > 0:
        torch.set_num_threads(cfg.runtime.threads)
    base = UnisonDiT(cfg).eval()
    plan = synthetic_plan(cfg)
    w = cfg.stream.window_chunks
    out: dict[str, Any] = {
        "preset": cfg.preset,
        "params": base.param_count(),
        "tokens_per_chunk": cfg.tokens_per_chunk(),
        "chunk_seconds": cfg.chunk_seconds(),
        "window_chunks": w,
        "steps": cfg.sampler.steps,
        "threads": torch.get_num_threads(),
    }
    out.update(host_info())
    m = cfg.model
    out["host_gflops"] = host_gflops(m.width, int(m.width * m.mlp_ratio), cfg.tokens_per_chunk())
    out["gflop_per_chunk_call"] = chunk_call_gflop(base, plan)
    out["calls_per_chunk"] = calls_per_chunk(cfg)
    out["gflop_per_media_s"] = (
        out["gflop_per_chunk_call"] * out["calls_per_chunk"] / cfg.chunk_seconds()
    )
    out["host_rtf_bound"] = out["host_gflops"] / out["gflop_per_media_s"]
    bar = tqdm(total=2 * 4 * repeats, desc="bench model", file=sys.stderr)
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        model = copy.deepcopy(base).to(dtype)
        out.update({f"{k}_{name}": v for k, v in _bench_dtype(model, plan, repeats, bar).items()})
    bar.close()
    rt_dtype = (
        "bf16" if resolve_dtype(cfg.runtime, torch.device("cpu")) == torch.bfloat16 else "fp32"
    )
    out["runtime_dtype"] = rt_dtype
    out["chunk_ms_4steps_plus_commit"] = out[f"chunk_ms_4steps_plus_commit_{rt_dtype}"]
    out["recompute_chunk_ms"] = out[f"recompute_chunk_ms_{rt_dtype}"]
    out["cached_vs_recompute_speedup"] = (
        out["recompute_chunk_ms"] / out["chunk_ms_4steps_plus_commit"]
    )
    out["bf16_vs_fp32_speedup"] = out["chunk_forward_ms_fp32"] / out["chunk_forward_ms_bf16"]
    out["chunk_forward_ms"] = out[f"chunk_forward_ms_{rt_dtype}"]
    out["split_vs_mixed_attention_speedup"] = (
        out[f"chunk_forward_ms_mixed_attention_{rt_dtype}"] / out["chunk_forward_ms"]
    )
    out["model_rtf"] = cfg.chunk_seconds() * 1000 / out["chunk_ms_4steps_plus_commit"]
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", help="preset name or YAML path")
    p.add_argument("--repeats", type=int, default=10, help="timed repeats per figure")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. model.depth=6")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.preset, args.overrides)
    res = bench_model(cfg, repeats=args.repeats)
    if args.json:
        sys.stdout.write(json.dumps(res) + "\n")
    else:
        for k, v in res.items():
            sys.stdout.write(f"{k:>36}: {v:.3f}\n" if isinstance(v, float) else f"{k:>36}: {v}\n")
    return 0


def register(sub: Any) -> None:
    """Called by ``unison_stream.benchmarks.cli`` for ``bench model``."""
    p = sub.add_parser("model", help="speed of the model core (JSON figures)")
    add_arguments(p)
    p.set_defaults(func=run)
