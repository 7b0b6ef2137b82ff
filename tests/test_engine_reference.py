"""Engine.open_session(reference_frame=…): the identity sink is the picture, encoded by the
trained video codec (what training uses as the reference chunk), not a seeded latent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from tests.eval_support import SMALL_MODEL
from unison_stream.avatars import from_identity
from unison_stream.codecs import CodecUnavailableError, VideoEncoder, load_encoders
from unison_stream.config import load_config
from unison_stream.engine import Engine
from unison_stream.engine.planner import LetterTiming

CFG = load_config("tiny", SMALL_MODEL)
ENCODER: VideoEncoder | None
try:
    ENCODER = load_encoders(CFG)[0]
except CodecUnavailableError:  # pragma: no cover - the trained codec weights are bundled
    ENCODER = None
pytestmark = pytest.mark.skipif(ENCODER is None, reason="no trained video codec weights")


@pytest.fixture
def engine() -> Iterator[Engine]:
    torch.manual_seed(0)
    eng = Engine(CFG, timing=LetterTiming(), max_sessions=2)
    yield eng
    eng.close()


def _picture(seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    img = np.zeros((CFG.media.height, CFG.media.width, 3), np.uint8)
    img[:] = g.integers(0, 255, 3)  # a background colour
    img[32:96, 40:88] = g.integers(0, 255, 3)  # and a "face"
    return img


def test_reference_frame_becomes_the_sink_latent(engine: Engine) -> None:
    assert ENCODER is not None
    pic = _picture(1)
    s = engine.open_session(reference_frame=pic, caption="a person")
    ENCODER.reset()
    want = ENCODER.encode(np.stack([pic, pic])[None])[:, :1]  # (1, 1, C, h, w)
    ref = engine._streams[s.session_id].ref
    assert ref.shape == (1, 1, CFG.latent.video_channels, 16, 16)
    assert torch.allclose(ref, want.float(), atol=1e-5)
    other = engine.open_session(reference_frame=_picture(2))
    assert not torch.allclose(engine._streams[other.session_id].ref, ref)
    chunk = s.next_chunk(timeout=60)  # the stream runs from that sink
    assert chunk is not None and chunk.video.shape[1:] == (128, 128, 3)


def test_without_a_reference_frame_the_identity_seed_gives_its_portrait(engine: Engine) -> None:
    s = engine.open_session(identity=7)
    ref = engine._streams[s.session_id].ref
    torch.testing.assert_close(ref, engine.references.encode(from_identity(7).picture))
    other = engine.references.sink(from_identity(8))[0]
    assert (other - ref).abs().mean() > 1e-3, "another seed, another person"


def test_a_reference_frame_of_the_wrong_size_is_refused_before_taking_a_slot(
    engine: Engine,
) -> None:
    with pytest.raises(ValueError, match=r"reference_frame must be \(128, 128, 3\) uint8"):
        engine.open_session(reference_frame=np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        engine.open_session(reference_frame=np.zeros((128, 128, 3), np.float32))
    assert engine.sessions == 0


def test_the_picture_reaches_the_session_video_decoder(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each session's video decoder is given its person's picture (a decoder that reads one
    copies eyes, hair and outline from it), and a process replica keeps it to replay on a
    restart; a session of the world's portraits gets the portrait."""
    from unison_stream.engine import replica as replica_mod

    pic = _picture(3)
    s = engine.open_session(reference_frame=pic)
    kept = getattr(engine.replica, "_sessions", {}).get(s.session_id)
    if kept is not None:  # a process replica: (seed, picture) replayed after a restart
        assert np.array_equal(kept[1], pic)
    given: list[np.ndarray | None] = []
    real = replica_mod.load_decoders

    def spy(cfg: Any, batch: int) -> Any:
        video, speech, sfx = real(cfg, batch)
        monkeypatch.setattr(video, "set_reference", given.append)
        return video, speech, sfx

    monkeypatch.setattr(replica_mod, "load_decoders", spy)
    core = replica_mod.ReplicaCore.build(CFG, None, None)
    core.open("a", 0, pic)
    core.open("b", 0, from_identity(5).picture)
    assert len(given) == 2 and given[0] is pic
    assert given[1] is not None and np.array_equal(given[1], from_identity(5).picture)
