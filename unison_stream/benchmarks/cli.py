"""``unison-stream bench …``: benchmark commands that print figures (JSON).

Each benchmark reports ratios to a baseline measured in the same process, never absolute
pass/fail timings (the machines are noisy). Each is one module of this package with a
``register(subparsers)`` function, listed here in the order ``bench --help`` shows them.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["BENCHMARKS", "register"]

# imported only when the command line is built: each pulls in what it measures (torch, aiortc)
BENCHMARKS: tuple[str, ...] = (
    "unison_stream.benchmarks.model",
    "unison_stream.benchmarks.stream",
    "unison_stream.benchmarks.codec",
    "unison_stream.benchmarks.serve",
    "unison_stream.benchmarks.avatar",
    "unison_stream.benchmarks.soak",
    "unison_stream.benchmarks.faults",
    "unison_stream.benchmarks.load",
    "unison_stream.benchmarks.hostile",
    "unison_stream.benchmarks.cluster",
    "unison_stream.benchmarks.int8",
)


def register(sub: Any) -> None:
    """Called by ``unison_stream.cli`` for ``bench``."""
    p = sub.add_parser("bench", help="benchmarks that print figures")
    bench_sub = p.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    for name in BENCHMARKS:
        importlib.import_module(name).register(bench_sub)
