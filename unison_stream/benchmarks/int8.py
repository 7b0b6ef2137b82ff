"""``unison-stream bench int8``: same-process A/B of int8 dynamic quantization of the bundled
model's linear layers (docs/engine.md, "int8 dynamic quantization": measured, not kept).

One ``CausalGenerator.step`` of the bundled default (the configured sampler) with fp32 weights
against the same model after ``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear``
(int8 weights, activations quantized per call), in alternating rounds so a slow spell of the
host lands on both. Figures (one JSON object with ``--json``): the host, median ms per step of
each, their ratio, and how far the int8 step's latents are from the fp32 ones (same noise,
same plan)::

    unison-stream bench int8 --rounds 6 --steps 8 --json

fbgemm (the int8 kernels) picks its ISA from cpuinfo, not from ``ATEN_CPU_CAPABILITY``, so
the ordinary-CPU emulation does not reach it: run it on the host as it is and read the figure
with the host's ISA.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from typing import Any

import torch
from torch import nn

from unison_stream.benchmarks.model import synthetic_plan
from unison_stream.config import UnisonConfig, load_config
from unison_stream.model.checkpoint import default_model
from unison_stream.model.generator import CausalGenerator
from unison_stream.runtime import host_info

__all__ = ["bench_int8", "register"]


def bench_int8(cfg: UnisonConfig, *, rounds: int = 6, steps: int = 8) -> dict[str, Any]:
    """The figures in the module docstring for the bundled model of ``cfg``'s preset."""
    fp32 = default_model(cfg).eval()
    # every linear layer but the two whose weight dtype the model reads (video_in, the
    # timestep MLP's fc1): the time embedding and the input projection, a small share
    names = {
        n
        for n, m in fp32.named_modules()
        if isinstance(m, nn.Linear) and not n.endswith(("video_in", "fc1"))
    }
    int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), names, torch.qint8)
    plan = synthetic_plan(cfg)
    gens = {"fp32": CausalGenerator(fp32), "int8": CausalGenerator(int8)}
    for g in gens.values():  # warm: a full cache window
        for _ in range(cfg.stream.window_chunks + 1):
            g.step(plan)
    ms: dict[str, list[float]] = {k: [] for k in gens}
    for _ in range(rounds):
        for name, g in gens.items():
            for _ in range(steps):
                t0 = time.perf_counter()
                g.step(plan)
                ms[name].append(1000 * (time.perf_counter() - t0))
    # fidelity: the same noise and plan through both, from empty caches
    outs = []
    for g in gens.values():
        g.reset(seed=1)
        outs.append([g.step(plan) for _ in range(4)])
    dv = max(float((a.video - b.video).abs().max()) for a, b in zip(*outs, strict=True))
    da = max(float((a.audio - b.audio).abs().max()) for a, b in zip(*outs, strict=True))
    ref = torch.cat([c.video.flatten() for c in outs[0]])
    mv = float((torch.cat([c.video.flatten() for c in outs[1]]) - ref).abs().mean())
    scale = float(ref.std())
    return {
        **host_info(),
        "threads": torch.get_num_threads(),
        "quantized_engine": torch.backends.quantized.engine,
        "linear_layers_int8": len(names),
        "step_ms_fp32": statistics.median(ms["fp32"]),
        "step_ms_int8": statistics.median(ms["int8"]),
        "int8_vs_fp32_step_ratio": statistics.median(ms["int8"]) / statistics.median(ms["fp32"]),
        "max_abs_diff_video_latent": dv,
        "max_abs_diff_audio_latent": da,
        "mean_abs_diff_video_latent": mv,
        "video_latent_std": scale,
    }


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    res = bench_int8(load_config(args.preset), rounds=args.rounds, steps=args.steps)
    if args.json:
        sys.stdout.write(json.dumps(res) + "\n")
    else:
        for k, v in res.items():
            sys.stdout.write(f"{k}: {v}\n")
    return 0


def register(sub: Any) -> None:
    """Called by ``unison_stream.benchmarks.cli`` for ``bench int8``."""
    p = sub.add_parser("int8", help="int8 dynamic quantization vs fp32, one process")
    p.add_argument("--preset", default="tiny", help="whose bundled weights")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps", type=int, default=8, help="chunks per round and variant")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)
