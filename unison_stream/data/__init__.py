"""Training data: the synthetic avatar world, the manifest format and its loader.

The world, the manifest schema and the loader are described in ``docs/data.md``.

- :mod:`unison_stream.data.synth` renders procedural talking-avatar clips with exact ground truth.
- :mod:`unison_stream.data.dataset` writes them as tar shards plus a JSONL manifest, with splits.
- :mod:`unison_stream.data.loader` reads a manifest of synthetic *or* real clips into one batch
  structure.

See ``docs/data.md`` for the manifest schema and the measured figures.
"""

from __future__ import annotations

from unison_stream.data.errors import DataError, ManifestError, SpeechUnavailableError

__all__ = ["DataError", "ManifestError", "SpeechUnavailableError"]
