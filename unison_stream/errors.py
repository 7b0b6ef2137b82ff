"""Engine errors, in a module free of torch so that the server (and its fake engine) can name
them without loading the model stack.

    EngineError                 the engine refused a request or could not serve it
    ├── EngineClosedError       the engine or the session is closed
    └── EngineFullError         every session slot of the replica is taken
"""

from __future__ import annotations

__all__ = ["EngineClosedError", "EngineError", "EngineFullError"]


class EngineError(RuntimeError):
    """The engine refused a request or could not serve it."""


class EngineClosedError(EngineError):
    """The engine or the session is closed."""


class EngineFullError(EngineError):
    """Every batch slot of this replica is taken (``max_sessions``)."""
