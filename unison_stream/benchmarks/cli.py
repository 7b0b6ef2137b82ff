"""``unison-stream bench …``: benchmark commands that print figures (JSON).

Each benchmark reports ratios to a baseline measured in the same process, never absolute
pass/fail timings (the machines are noisy). Benchmarks live beside their component and are
listed here.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["register"]

BENCHMARKS: tuple[str, ...] = (
    "unison_stream.model.bench",
    "unison_stream.engine.bench",
    "unison_stream.codecs.bench",
    "unison_stream.server.bench",
    "unison_stream.cluster.bench",
)


def register(sub: Any) -> None:
    p = sub.add_parser("bench", help="benchmarks that print figures")
    bench_sub = p.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    for name in BENCHMARKS:
        importlib.import_module(name).register(bench_sub)
