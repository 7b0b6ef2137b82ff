"""Custom avatars: each source gives a picture at the model's framing; bad uploads and designs
raise the typed error a server turns into a 4xx (``docs/avatars.md``)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from unison_stream.avatars import (
    Avatar,
    BadColourError,
    CorruptImageError,
    FramingError,
    ImageTooLargeError,
    NotAnImageError,
    UnknownTraitError,
    from_design,
    from_identity,
    from_upload,
)
from unison_stream.avatars.errors import AvatarError
from unison_stream.avatars.framing import find_face
from unison_stream.avatars.image import MAX_BYTES
from unison_stream.data.synth.config import WorldConfig
from unison_stream.data.synth.face import FaceRenderer, FaceState
from unison_stream.data.synth.identity import sample_identity


def _portrait(n: int) -> np.ndarray:
    """The world's portrait of identity ``n`` as the engine draws it for ``identity=n``."""
    ident = sample_identity(np.random.default_rng(n))
    r = FaceRenderer(ident, width=128, height=128, supersample=WorldConfig().supersample, props=[])
    return r.render(FaceState(), draw_hands=False)


def _bytes(picture: np.ndarray, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_identity_source_is_the_engines_portrait() -> None:
    a = from_identity(5)
    assert a.source == "identity" and a.provenance == {"identity": 5} and a.seed == 5
    assert np.array_equal(a.picture, _portrait(5))
    assert not a.picture.flags.writeable


def test_design_source_names_traits_and_takes_free_colours() -> None:
    plain = from_design({"seed": 3, "hair": "bob", "hair_color": "pink"})
    free = from_design({"seed": 3, "hair": "bob", "hair_color": "pink", "skin": "#6ab04c"})
    assert plain.picture.shape == free.picture.shape == (128, 128, 3)
    # the cheek, left of the nose, is skin: exactly the free colour (within a level)
    assert np.abs(free.picture[60, 48].astype(int) - (0x6A, 0xB0, 0x4C)).max() <= 1
    # everything that is not skin is untouched: the background corner
    assert np.array_equal(free.picture[:4, :4], plain.picture[:4, :4])
    assert "pink bob hair" in free.caption
    assert free.provenance["design"]["skin"] == "#6ab04c"


def test_design_of_palette_colours_given_as_hex_draws_the_same_picture() -> None:
    named = from_design({"seed": 9, "skin": "olive", "eyes": "blue"})
    hexed = from_design({"seed": 9, "skin": "#c9a076", "eyes": "#3c6ebe"})
    assert np.abs(named.picture.astype(int) - hexed.picture).max() <= 2  # shades truncate


def test_upload_of_a_world_portrait_keeps_it_and_a_shifted_one_is_framed() -> None:
    picture = from_identity(7).picture
    a = from_upload(_bytes(picture))
    assert a.source == "upload" and np.array_equal(a.picture, picture)
    canvas = np.empty((300, 420, 3), np.uint8)
    canvas[:] = picture[0, 0]
    big = np.asarray(Image.fromarray(picture).resize((192, 192), Image.Resampling.BICUBIC))
    canvas[80:272, 30:222] = big
    b = from_upload(_bytes(canvas, "JPEG", quality=92))
    assert b.picture.shape == (128, 128, 3)
    assert 0 < b.provenance["scale"] < 1 and b.provenance["padded"] == 0.0
    assert abs(find_face(b.picture).centre[0] - 64) <= 1.5  # centred as the world's faces


def test_upload_webp_and_transparency() -> None:
    picture = from_identity(2).picture
    assert (
        np.abs(
            from_upload(_bytes(picture, "WEBP", lossless=True)).picture.astype(int) - picture
        ).max()
        == 0
    )
    rgba = np.dstack([picture, np.full(picture.shape[:2], 255, np.uint8)])
    assert np.array_equal(from_upload(_bytes(rgba)).picture, picture)


@pytest.mark.parametrize(
    ("data", "error", "words"),
    [
        (b"GIF89a" + bytes(100), NotAnImageError, "PNG, JPEG or WebP"),
        (b"hello, world", NotAnImageError, "not a PNG"),
        (b"\x89PNG\r\n\x1a\n" + bytes(50), CorruptImageError, "does not decode"),
        (b"\xff\xd8\xff" + bytes(MAX_BYTES), ImageTooLargeError, "limit is 4 MiB"),
    ],
)
def test_bad_uploads_raise_typed_errors(data: bytes, error: type[AvatarError], words: str) -> None:
    with pytest.raises(error, match=words) as e:
        from_upload(data)
    assert 400 <= e.value.status < 500


def test_truncated_and_huge_and_faceless_uploads() -> None:
    good = _bytes(from_identity(1).picture)
    with pytest.raises(CorruptImageError):
        from_upload(good[: len(good) // 2])
    huge = _bytes(np.zeros((4100, 4100, 3), np.uint8))  # small file, too many pixels
    with pytest.raises(ImageTooLargeError, match="megapixels"):
        from_upload(huge)
    with pytest.raises(FramingError, match="no face"):
        from_upload(_bytes(np.full((200, 200, 3), 128, np.uint8)))


@pytest.mark.parametrize(
    ("spec", "error", "words"),
    [
        ({"hair": "mohawk"}, UnknownTraitError, "bald, buzz"),
        ({"wings": "yes"}, UnknownTraitError, "unknown design keys"),
        ({"skin": "#12345"}, BadColourError, "#rrggbb"),
        ({"skin": "#5f0023"}, BadColourError, "inside an open mouth"),
        ({"accessories": ["monocle"]}, UnknownTraitError, "upload it instead"),
        ({"face": "#ffffff"}, UnknownTraitError, "oval"),
    ],
)
def test_bad_designs_raise_typed_errors(
    spec: dict[str, object], error: type[AvatarError], words: str
) -> None:
    with pytest.raises(error, match=words) as e:
        from_design(spec)
    assert e.value.status == 422


def test_avatar_round_trips_through_its_stored_form() -> None:
    a = from_design({"seed": 4, "clothes_color": "#ff00aa"})
    b = Avatar.from_stored(a.png(), a.meta())
    assert np.array_equal(a.picture, b.picture) and a.meta() == b.meta()
    assert Image.open(io.BytesIO(a.preview_png())).size == (256, 256)
