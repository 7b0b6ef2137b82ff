"""Errors that cross package lines, in a module free of torch so that the server (and its fake
engine) can name them without loading the model stack.

    EngineError                 the engine refused a request or could not serve it
    ├── EngineClosedError       the engine or the session is closed
    └── EngineFullError         every session slot of the replica is taken

    MissingExtraError           an optional dependency is not installed (an ``ImportError``);
                                the message names the extra that brings it
"""

from __future__ import annotations

__all__ = ["EngineClosedError", "EngineError", "EngineFullError", "MissingExtraError"]


class EngineError(RuntimeError):
    """The engine refused a request or could not serve it."""


class EngineClosedError(EngineError):
    """The engine or the session is closed."""


class EngineFullError(EngineError):
    """Every batch slot of this replica is taken (``max_sessions``)."""


class MissingExtraError(ImportError):
    """``module`` cannot be imported; ``pip install 'unison-stream[<extra>]'`` brings it.

    An ``ImportError``, so a caller that already handles a missing module keeps working."""

    def __init__(self, message: str, *, module: str, extra: str) -> None:
        super().__init__(message, name=module)
        self.extra = extra
