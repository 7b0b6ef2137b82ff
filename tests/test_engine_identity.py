"""With trained codecs a session's identity is a synthetic-world portrait; its sink is silent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unison_stream.avatars import from_identity
from unison_stream.codecs import CodecUnavailableError, load_encoders
from unison_stream.config import load_config
from unison_stream.engine import Engine


def test_identity_sink_is_the_encoded_portrait_and_the_silence_latent() -> None:
    cfg = load_config("tiny")
    try:
        venc, aenc = load_encoders(cfg)
    except CodecUnavailableError:
        pytest.skip("no trained codec weights fit the tiny config")
    a, b = from_identity(0).picture, from_identity(1).picture
    assert a.shape == (128, 128, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 5, "identities differ"
    engine = Engine(cfg, max_sessions=1)
    try:
        ref, picture = engine.references.sink(from_identity(0))
        assert picture is not None and np.array_equal(picture, a)
        venc.reset()
        want = venc.encode(np.repeat(a[None, None], 2, axis=1))[:, :1]
        torch.testing.assert_close(ref, want.float())
        aenc.reset()
        silent = aenc.encode(np.zeros((1, 8 * 640), np.float32))[0][2:-2].mean(0)
        torch.testing.assert_close(engine.silence, silent.float())
        assert float(engine.silence.abs().sum()) > 0, "the silence latent is not all zeros"
    finally:
        engine.close()
