"""Accessories a :class:`~.identity.Look` may wear: glasses, a hat or headband, earrings.

Drawn by :class:`~.face.FaceRenderer` on the moving head each frame, in the renderer's
supersampled pixels, from the same head geometry (centre ``cx, cy`` and half-axes ``a, b`` as
frame fractions). Every part stays outside the eye whites, the mouth and the cheeks of
:func:`~.face.face_layout`, so the measures read from pixels (mouth opening, eye openness,
feature contrast) see the same face with or without them.
"""

from __future__ import annotations

from collections.abc import Callable

from PIL import ImageDraw

from unison_stream.data.synth.identity import Look

__all__ = ["draw_earrings", "draw_glasses", "draw_headwear"]

RGB = tuple[int, int, int]
Box = tuple[float, float, float, float]
BoxFn = Callable[[float, float, float, float], Box]  # (cx, cy, rx, ry) frame fractions → pixels
PxFn = Callable[[float, float], tuple[float, float]]  # (x, y) frame fractions → pixels

LENS = (0.33, 0.25)  # lens half-size in (a, b): its inner edge clears the eye box (0.2 a, 0.12 b)


def _dim(c: RGB, f: float) -> RGB:
    return (int(c[0] * f), int(c[1] * f), int(c[2] * f))


def draw_glasses(
    d: ImageDraw.ImageDraw,
    look: Look,
    *,
    box: BoxFn,
    px: PxFn,
    cx: float,
    cy: float,
    a: float,
    b: float,
    eye_spacing: float,
    line: int,
) -> None:
    """Two lens rims around the eyes and a bridge between them (``line`` px thick)."""
    rx, ry = LENS[0] * a, LENS[1] * b
    ey = cy - 0.2 * b
    for s in (-1, 1):
        rim = box(cx + s * eye_spacing * a, ey, rx, ry)
        if look.glasses == "square":
            d.rounded_rectangle(
                rim, radius=0.3 * (rim[3] - rim[1]), outline=look.accessory, width=line
            )
        else:
            d.ellipse(rim, outline=look.accessory, width=line)
    inner = eye_spacing * a - rx
    d.line((*px(cx - inner, ey), *px(cx + inner, ey)), fill=look.accessory, width=line)


def draw_headwear(
    d: ImageDraw.ImageDraw,
    look: Look,
    *,
    box: BoxFn,
    px: PxFn,
    cx: float,
    cy: float,
    a: float,
    b: float,
    line: int,
) -> None:
    """A hat (crown and brim over the hair line) or a headband (a band ``4·line`` px thick
    across the top of the head, above the brows)."""
    colour = look.accessory
    if look.headwear == "hat":
        crown = (*px(cx - 0.95 * a, cy - 1.4 * b), *px(cx + 0.95 * a, cy - 0.72 * b))
        d.rounded_rectangle(crown, radius=0.2 * (crown[2] - crown[0]), fill=colour)
        band = (*px(cx - 0.95 * a, cy - 0.86 * b), *px(cx + 0.95 * a, cy - 0.76 * b))
        d.rectangle(band, fill=_dim(colour, 0.7))
        d.ellipse(box(cx, cy - 0.72 * b, 1.35 * a, 0.07 * b), fill=_dim(colour, 0.85))
    elif look.headwear == "headband":
        d.arc(box(cx, cy - 0.35 * b, 1.0 * a, 0.68 * b), 200, 340, fill=colour, width=4 * line)


def draw_earrings(
    d: ImageDraw.ImageDraw,
    look: Look,
    *,
    box: BoxFn,
    cx: float,
    cy: float,
    a: float,
) -> None:
    """A small stud with a drop under each ear."""
    for s in (-1, 1):
        x = cx + s * a * 0.98
        d.ellipse(box(x, cy + 0.05, 0.008, 0.008), fill=look.accessory)
        d.ellipse(
            box(x, cy + 0.07, 0.011, 0.014), fill=look.accessory, outline=_dim(look.accessory, 0.6)
        )
