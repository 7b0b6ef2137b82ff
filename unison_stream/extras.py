"""Optional dependencies: import one, or fail with an error that names the extra to install.

A plain ``pip install unison-stream`` is what ``unison-stream serve`` needs. The rest lives in
extras (``[project.optional-dependencies]`` in pyproject.toml), and every import of one of their
packages goes through :func:`require`::

    pocketsphinx = require("pocketsphinx", "eval")

Without the package that raises :class:`~unison_stream.errors.MissingExtraError`:
"sentence identification (eval, bench codec) needs the 'eval' extra (No module named
'pocketsphinx'): pip install 'unison-stream[eval]'".
"""

from __future__ import annotations

import importlib
from types import ModuleType

from unison_stream.errors import MissingExtraError

__all__ = ["EXTRAS", "require"]

# extra → what it enables, as the error message says it; each is an extra of pyproject.toml
EXTRAS: dict[str, str] = {
    "eval": "sentence identification (eval, bench codec)",
    "train": "plotting the training curves (train model, train codec)",
    "mqtt": "the MQTT bridge (serve --mqtt-config)",
    "cluster": "running replicas on Ray Serve (serve --cluster ray, bench cluster)",
}


def require(module: str, extra: str) -> ModuleType:
    """``import module``, or raise :class:`MissingExtraError` naming ``extra``.

    Any ``ImportError`` counts (the module, or a dependency of it, is missing or broken); the
    original is chained and quoted in the message."""
    assert extra in EXTRAS, f"unknown extra {extra!r}: one of {sorted(EXTRAS)}"
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(
            f"{EXTRAS[extra]} needs the {extra!r} extra ({e}): "
            f"pip install 'unison-stream[{extra}]'",
            module=module,
            extra=extra,
        ) from e
