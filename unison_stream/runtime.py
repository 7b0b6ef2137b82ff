"""Where and in what precision the model runs: ``runtime.device`` / ``runtime.dtype`` = auto.

- device ``auto``: CUDA when available, else the CPU;
- dtype ``auto``: bf16 on CUDA; on a CPU bf16 only where the processor computes it natively
  *and* PyTorch is allowed to use it, otherwise fp32 (emulated bf16 is ~2.5× slower than fp32
  on an AVX2-only host; ``docs/performance.md``). Native means AVX512-BF16 or AMX in
  ``/proc/cpuinfo``, ATen's kernels built for AVX512 (``ATEN_CPU_CAPABILITY`` not capped below)
  and oneDNN not capped below AVX512-BF16 (``ONEDNN_MAX_CPU_ISA``): the same two variables
  emulate an ordinary AVX2 laptop on a faster host, so ``auto`` picks what that laptop would.

:func:`host_info` names what a benchmark ran on (CPU model, ISA in use, threads), so a figure
from one host can be read on another.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
from pathlib import Path
from typing import Any

import torch

from unison_stream.config import RuntimeConfig

__all__ = ["cpu_has_native_bf16", "host_info", "resolve_device", "resolve_dtype"]

log = logging.getLogger(__name__)

# oneDNN ISA names below which bf16 is emulated (ONEDNN_MAX_CPU_ISA caps)
_ONEDNN_NO_BF16 = {
    "SSE41",
    "AVX",
    "AVX2",
    "AVX2_VNNI",
    "AVX2_VNNI_2",
    "AVX512_CORE",
    "AVX512_CORE_VNNI",
}


def _cpu_flags() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True where bf16 matmuls run natively on this CPU under the current ISA caps."""
    flags = _cpu_flags()
    hw = "avx512_bf16" in flags or "amx_bf16" in flags
    aten = torch.backends.cpu.get_cpu_capability()  # "AVX2", "AVX512", … (after the env cap)
    onednn_cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    return hw and aten.startswith("AVX512") and onednn_cap not in _ONEDNN_NO_BF16


def resolve_device(rt: RuntimeConfig) -> torch.device:
    if rt.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(rt.device)


def resolve_dtype(rt: RuntimeConfig, device: torch.device) -> torch.dtype:
    if rt.dtype == "fp32":
        return torch.float32
    if rt.dtype == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16
    native = cpu_has_native_bf16()
    log.info(
        "runtime.dtype=auto on %s (%s): %s",
        _cpu_model(),
        torch.backends.cpu.get_cpu_capability(),
        "bf16 (native)" if native else "fp32 (no native bf16)",
    )
    return torch.bfloat16 if native else torch.float32


def _cpu_model() -> str:
    for line in _cpu_flags().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def host_info() -> dict[str, Any]:
    """The host a figure was measured on: CPU model, the ISA ATen dispatches to, oneDNN's
    cap, native bf16 (as ``runtime.dtype=auto`` sees it), torch threads and cores."""
    flags = _cpu_flags()
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "isa_aten": torch.backends.cpu.get_cpu_capability(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        "cpu_flags_avx512_bf16": "avx512_bf16" in flags,
        "cpu_flags_amx": "amx_bf16" in flags,
        "native_bf16": cpu_has_native_bf16(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
