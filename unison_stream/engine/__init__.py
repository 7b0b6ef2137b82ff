"""The streaming engine (``docs/engine.md``): planner, worker, sessions, benchmark.

``Engine`` owns one model replica and one worker thread; ``EngineSession`` is a session's
thread-safe handle; chunks come out as :class:`MediaChunk` and utterance life as
:class:`UtteranceEvent`. The contract is written down in ``docs/engine.md``.
"""

from unison_stream.engine.engine import Engine
from unison_stream.engine.planner import Planner, TimingProvider, UtterancePlan
from unison_stream.engine.session import EngineSession
from unison_stream.engine.types import (
    EngineClosedError,
    EngineError,
    EngineFullError,
    MediaChunk,
    UtteranceEvent,
)

__all__ = [
    "Engine",
    "EngineClosedError",
    "EngineError",
    "EngineFullError",
    "EngineSession",
    "MediaChunk",
    "Planner",
    "TimingProvider",
    "UtteranceEvent",
    "UtterancePlan",
]
