"""The framing rule's face check on the world's faces and on pictures unlike them: found where
one front-facing face is, refused otherwise (``docs/avatars.md``, "The framing rule")."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from unison_stream.avatars import FramingError, from_identity
from unison_stream.avatars.framing import CENTRE, EYE_MOUTH, find_face, normalise
from unison_stream.data.synth.face import face_layout
from unison_stream.data.synth.identity import sample_identity
from unison_stream.eval.portraits import draw_cartoon, hue_rotate, with_glasses_and_hat


def test_world_faces_are_found_at_their_place() -> None:
    found = 0
    for n in range(40):
        try:
            face = find_face(from_identity(n).picture)
        except FramingError:
            continue
        found += 1
        cx, cy = face.centre
        # the centre is read from the eyes and mouth: within a few pixels of the drawing's
        assert abs(cx - CENTRE[0] * 128) <= 1.5 and abs(cy - CENTRE[1] * 128) <= 5.0, n
        assert EYE_MOUTH[0] <= face.eye_mouth / 128 <= EYE_MOUTH[1], n
    assert found >= 37, f"only {found} of 40 world faces found"


def test_pictures_unlike_the_world_are_found() -> None:
    picture = from_identity(11).picture
    layout = face_layout(sample_identity(np.random.default_rng(11)), width=128, height=128)
    cartoon, _ = draw_cartoon(128, 128)
    for p in (hue_rotate(picture, 120), hue_rotate(picture, 240), cartoon):
        find_face(p)
    find_face(with_glasses_and_hat(picture, layout))


def test_a_photo_like_face_is_found() -> None:
    """The cartoon softened like a photograph: blurred, shaded top to bottom, sensor noise."""
    cartoon, _ = draw_cartoon(256, 256)
    soft = np.asarray(
        Image.fromarray(cartoon).filter(
            __import__("PIL.ImageFilter").ImageFilter.GaussianBlur(1.2)
        ),
        np.float32,
    )
    shade = np.linspace(1.08, 0.9, 256)[:, None, None]
    noise = np.random.default_rng(0).normal(0, 3, soft.shape)
    find_face(np.clip(soft * shade + noise, 0, 255).astype(np.uint8))


def test_no_face_two_faces_and_one_eye_are_refused() -> None:
    picture = from_identity(3).picture
    with pytest.raises(FramingError, match="no face"):
        find_face(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8))
    with pytest.raises(FramingError, match="2 faces"):
        find_face(np.concatenate([picture, picture], axis=1))
    one_eye = picture.copy()
    layout = face_layout(sample_identity(np.random.default_rng(3)), width=128, height=128)
    x0, y0, x1, y1 = (round(v) for v in layout.eyes[1])
    one_eye[y0 - 6 : y1 + 2, x0 - 2 : x1 + 2] = picture[60, 48]  # the right eye painted over
    with pytest.raises(FramingError):
        find_face(one_eye)


def test_normalise_frames_a_small_offset_face_and_refuses_a_tight_crop() -> None:
    picture = from_identity(7).picture
    canvas = np.empty((320, 480, 3), np.uint8)
    canvas[:] = picture[0, 0]
    canvas[150:278, 300:428] = picture  # small, low and right
    out, framing = normalise(canvas, width=128, height=128)
    cx, cy = framing.to_output(*framing.face.centre)
    assert abs(cx - 64) <= 1 and abs(cy - CENTRE[1] * 128) <= 1
    # a small face is scaled to the smallest the world draws, centred where the world's are
    face = find_face(out)
    assert abs(face.eye_mouth / 128 - EYE_MOUTH[0]) < 0.01 and abs(face.centre[0] - 64) <= 1.5
    with pytest.raises(FramingError, match="too close"):
        normalise(np.ascontiguousarray(picture[30:90, 25:105]), width=128, height=128)
