"""The synthetic avatar world (docs/data.md): procedural talking avatars with exact ground truth.

One module per component: :mod:`.identity` (traits), :mod:`.text` (grammar, tags, captions),
:mod:`.speech` (libespeak-ng with phoneme times), :mod:`.visemes` (phoneme → mouth pose),
:mod:`.gesture` (hands with known contact), :mod:`.face` (renderer), :mod:`.sfx` (effects),
:mod:`.ambience` (beds), :mod:`.clip` (assembly), :mod:`.measure` (checks from pixels/audio),
all driven by :class:`.config.WorldConfig`.
"""

from __future__ import annotations

from unison_stream.data.synth.clip import Clip, ClipSpec, EventTiming, make_clip, sample_spec
from unison_stream.data.synth.config import WorldConfig

__all__ = ["Clip", "ClipSpec", "EventTiming", "WorldConfig", "make_clip", "sample_spec"]
