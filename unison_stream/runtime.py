"""Where and in what precision the model runs: ``runtime.device`` / ``runtime.dtype`` = auto.

- device ``auto``: CUDA when available, else the CPU;
- dtype ``auto``: bf16 on CUDA; on a CPU bf16 only where the processor computes it natively
  (AVX512-BF16 or AMX: ~2× faster than fp32 on this project's machines, DESIGN.md §5),
  otherwise fp32 (emulated bf16 is slower than fp32).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from unison_stream.config import RuntimeConfig

__all__ = ["cpu_has_native_bf16", "resolve_device", "resolve_dtype"]


@functools.cache
def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_device(rt: RuntimeConfig) -> torch.device:
    if rt.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(rt.device)


def resolve_dtype(rt: RuntimeConfig, device: torch.device) -> torch.dtype:
    if rt.dtype == "fp32":
        return torch.float32
    if rt.dtype == "bf16":
        return torch.bfloat16
    if device.type == "cuda" or cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32
