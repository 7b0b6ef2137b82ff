#!/usr/bin/env python3
"""Same-process A/B of int8 dynamic quantization of the bundled model's linear layers (issue 13).

One ``CausalGenerator.step`` of the bundled default (the configured sampler) with fp32 weights
against the same model after ``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear``
(int8 weights, activations quantized per call), in alternating rounds so a slow spell of the
host lands on both. Prints one JSON object: the host, median ms per step of each, their ratio,
and how far the int8 step's latents are from the fp32 ones (same noise, same plan).

    .venv/bin/python scripts/ab_int8.py --rounds 6 --steps 8

fbgemm (the int8 kernels) picks its ISA from cpuinfo, not from ``ATEN_CPU_CAPABILITY``, so
the ordinary-CPU emulation does not reach it: run it on the host as it is and read the figure
with the host's ISA.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
from torch import nn

from unison_stream.config import load_config
from unison_stream.model.bench import synthetic_plan
from unison_stream.model.checkpoint import default_model
from unison_stream.model.generator import CausalGenerator
from unison_stream.runtime import host_info


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps", type=int, default=8, help="chunks per round and variant")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config("tiny")
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
    for _ in range(args.rounds):
        for name, g in gens.items():
            for _ in range(args.steps):
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
    out = {
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
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
