"""The ``portraits`` eval set is deterministic, every picture is at the framing with its face
where its layout says, and each leaves the world as it claims (``docs/eval.md``)."""

from __future__ import annotations

import numpy as np

from tests.eval_support import tiny_world
from unison_stream.data.loader import ManifestDataset
from unison_stream.data.synth.identity import SKIN_TONES
from unison_stream.data.synth.measure import features_visible, skin_colour
from unison_stream.eval.portraits import PORTRAITS, portrait_set


def _rows() -> list[dict[str, object]]:
    return [row for _, row in ManifestDataset(tiny_world(), split="test").rows]


def test_portrait_set_is_deterministic_and_measurable() -> None:
    rows = _rows()
    a, b = portrait_set(rows, width=128, height=128), portrait_set(rows, width=128, height=128)
    assert [p.name for p in a] == list(PORTRAITS)
    for p, q in zip(a, b, strict=True):
        assert np.array_equal(p.picture, q.picture) and p.layout == q.layout
        assert p.picture.shape == (128, 128, 3)
        assert features_visible(p.picture[None], p.layout)[0], p.name
    by = {p.name: p for p in a}
    palette = np.array([c for _, c in SKIN_TONES], np.float32)
    for name in ("hue_green", "hue_purple", "free_colours", "cartoon"):
        skin = skin_colour(by[name].picture[None], by[name].layout)[0]
        assert np.linalg.norm(palette - skin, axis=1).min() > 30, name  # no palette skin
    assert by["cartoon"].source is None and by["control"].source is not None
