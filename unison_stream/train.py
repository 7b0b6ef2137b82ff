"""``unison-stream train …``: training commands (codecs, the model, the eval's feature net),
each beside its component."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["register"]

# Modules with `register(train_subparsers)`; each adds one `train <name>` command.
TRAINERS: tuple[str, ...] = (
    "unison_stream.training.codec",
    "unison_stream.training.cli",
    "unison_stream.eval.features_train",
)


def register(sub: Any) -> None:
    p = sub.add_parser("train", help="train the codecs, the model or the eval's feature net")
    train_sub = p.add_subparsers(dest="trainer", required=True, metavar="WHAT")
    for name in TRAINERS:
        importlib.import_module(name).register(train_sub)
