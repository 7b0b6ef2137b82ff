"""Exceptions of the data package.

::

    DataError                  anything the data pipeline cannot do
    ├── ManifestError          a manifest row is broken (names file, line and row id)
    └── SpeechUnavailableError libespeak-ng cannot be loaded (install ``libespeak-ng1``)
"""

from __future__ import annotations

__all__ = ["DataError", "ManifestError", "SpeechUnavailableError"]


class DataError(RuntimeError):
    """The data pipeline cannot proceed; the message says what to fix."""


class ManifestError(DataError):
    """A manifest row is broken. The message names the manifest, line number and row id."""

    def __init__(self, manifest: str, line: int, row_id: str, problem: str) -> None:
        self.manifest = manifest
        self.line = line
        self.row_id = row_id
        self.problem = problem
        super().__init__(f"{manifest}:{line}: row {row_id!r}: {problem}")


class SpeechUnavailableError(DataError):
    """libespeak-ng is missing; speech cannot be synthesised."""
