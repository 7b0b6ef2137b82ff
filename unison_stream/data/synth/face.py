"""The avatar renderer: a cartoon head and shoulders drawn with Pillow, anti-aliased.

Each frame is drawn at ``supersample``× the output size and box-filtered down, so every edge
is area-averaged (exact coverage anti-aliasing). What does not move (background, props, torso,
neck) is drawn once per clip; the head (with ``head_dx/dy`` offsets), eyes (blink), brows, mouth
(viseme pose, or a closed smile), gaze, accessories (:mod:`.accessories`) and hands are drawn
per frame. The mouth interior has its own colour
(:data:`~unison_stream.data.synth.identity.MOUTH_INTERIOR`) so its area can be measured.
:func:`portrait` draws one neutral frame of an identity at the model's framing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from unison_stream.data.synth.accessories import draw_earrings, draw_glasses, draw_headwear
from unison_stream.data.synth.gesture import PROPS, HandPose
from unison_stream.data.synth.identity import (
    BACKGROUNDS,
    CLOTHES,
    FACE_SHAPES,
    HAIR_STYLES,
    LIP_TINT,
    MOUTH_INTERIOR,
    Identity,
)

__all__ = ["FaceLayout", "FaceRenderer", "FaceState", "face_layout", "portrait"]

RGB = tuple[int, int, int]
HEAD_CENTRE = (0.5, 0.42)  # frame fractions
MOUTH_MAX_OPEN = 0.085  # interior height at full opening, as a fraction of the frame
HAND_R = (0.05, 0.06)  # palm half-width, half-height
LIP_THICKNESS = 0.012  # lip thickness around the mouth interior, frame fraction
GAZE_REACH = (0.45, 0.3)  # iris travel at |gaze| = 1, as fractions of the eye's half-axes
SMILE_LIFT = 0.02  # corner lift of a full closed smile, frame fraction
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in output pixels


@dataclass
class FaceState:
    """Everything that moves in one frame."""

    head_dx: float = 0.0  # output pixels
    head_dy: float = 0.0
    mouth: tuple[float, float, float] = (0.0, 0.5, 0.0)  # opening, width, rounding (0..1)
    blink: float = 0.0  # 0 open .. 1 closed
    brow: float = 0.0  # 0 rest .. 1 raised
    hands: list[HandPose] = field(default_factory=list)
    gaze: tuple[float, float] = (0.0, 0.0)  # iris offset x, y in -1..1 (0: at the camera)
    smile: float = 0.0  # 0 none .. 1 full; drawn only while the mouth is closed


@dataclass(frozen=True)
class FaceLayout:
    """Where :class:`FaceRenderer` puts one identity's face parts with the head at rest
    (``head_dx = head_dy = 0``): pixel boxes ``(x0, y0, x1, y1)`` at the output size.

    The geometry mirrors ``_head``, ``_eyes`` and ``_mouth`` (``tests/test_eval_visual.py``
    checks the renderer's pixels against it); a frame's head sways a few pixels off it.
    """

    head: Box  # the face ellipse (ears and hair outside)
    eyes: tuple[Box, Box]  # each eye's white, fully open; image-left eye first
    mouth: Box  # the widest and most open mouth any viseme makes, lips included
    cheeks: tuple[Box, Box]  # bare skin below each eye, beside nose and mouth


def face_layout(identity: Identity, *, width: int, height: int) -> FaceLayout:
    """The :class:`FaceLayout` of ``identity`` at ``width × height`` pixels."""
    _, a, b, _ = FACE_SHAPES[identity.face_shape]
    cx, cy = HEAD_CENTRE

    def box(x: float, y: float, rx: float, ry: float) -> Box:
        return (x - rx) * width, (y - ry) * height, (x + rx) * width, (y + ry) * height

    eye_y, eye_dx = cy - 0.2 * b, identity.eye_spacing * a
    # _mouth: half-width mouth_width·a·(0.75 + 0.5·width) at width 1 and rounding 0
    mouth_hw = identity.mouth_width * a * 1.25 + LIP_THICKNESS
    mouth_hh = 0.5 * MOUTH_MAX_OPEN + LIP_THICKNESS
    # the cheek: below the eyes' bottom (cy − 0.08 b), above the open mouth's top (≥ cy + 0.31 b),
    # outside the nose (cx ± 0.1 a)
    cheek = (0.5 * a, cy + 0.2 * b, 0.025, 0.02)
    return FaceLayout(
        head=box(cx, cy, a, b),
        eyes=(
            box(cx - eye_dx, eye_y, 0.2 * a, 0.12 * b),
            box(cx + eye_dx, eye_y, 0.2 * a, 0.12 * b),
        ),
        mouth=box(cx, cy + 0.55 * b, mouth_hw, mouth_hh),
        cheeks=(
            box(cx - cheek[0], cheek[1], cheek[2], cheek[3]),
            box(cx + cheek[0], cheek[1], cheek[2], cheek[3]),
        ),
    )


def _shade(c: RGB, f: float) -> RGB:
    return (min(255, int(c[0] * f)), min(255, int(c[1] * f)), min(255, int(c[2] * f)))


class FaceRenderer:
    """Draws frames of one identity; build once per clip, then call :meth:`render` per frame."""

    def __init__(
        self, identity: Identity, *, width: int, height: int, supersample: int, props: list[str]
    ) -> None:
        self.id = identity
        self.size = (width, height)
        self.ss = supersample
        self.W, self.H = width * supersample, height * supersample
        self.colours = identity.colours()
        self.skin = self.colours["skin"]
        self.hair = self.colours["hair"]
        self.lips: RGB = tuple(int(v) for v in np.array(self.skin) * LIP_TINT)  # type: ignore[assignment]
        _, self.a, self.b, self.round = FACE_SHAPES[identity.face_shape]
        self.static = self._static_layer(sorted(set(props)))

    # ---- helpers -----------------------------------------------------------------------------
    def _box(self, cx: float, cy: float, rx: float, ry: float) -> tuple[float, float, float, float]:
        """Pixel box of an ellipse given in frame fractions (x scaled by W, y by H)."""
        return (cx - rx) * self.W, (cy - ry) * self.H, (cx + rx) * self.W, (cy + ry) * self.H

    def _px(self, x: float, y: float) -> tuple[float, float]:
        return x * self.W, y * self.H

    # ---- static layer --------------------------------------------------------------------------
    def _static_layer(self, props: list[str]) -> Image.Image:
        ident = self.id
        bg = self.colours["background"]
        img = Image.new("RGB", (self.W, self.H), bg)
        d = ImageDraw.Draw(img)
        style = BACKGROUNDS[ident.background]
        rng = np.random.default_rng(31 * ident.background + ident.background_color)
        if style == "gradient":
            for y in range(0, self.H, self.ss):
                d.rectangle((0, y, self.W, y + self.ss), fill=_shade(bg, 1.1 - 0.35 * y / self.H))
        elif style == "stripes":
            step = self.W // 8
            for x in range(0, self.W, 2 * step):
                d.rectangle((x, 0, x + step, self.H), fill=_shade(bg, 0.88))
        elif style == "dots":
            step = self.W // 10
            for y in range(step // 2, self.H, step):
                for x in range(step // 2, self.W, step):
                    d.ellipse(
                        (x - step / 5, y - step / 5, x + step / 5, y + step / 5),
                        fill=_shade(bg, 0.8),
                    )
        elif style == "window":
            d.rectangle(
                self._box(0.2, 0.3, 0.14, 0.18),
                fill=(200, 225, 245),
                outline=_shade(bg, 0.6),
                width=3 * self.ss,
            )
            d.line(
                (*self._px(0.2, 0.12), *self._px(0.2, 0.48)),
                fill=_shade(bg, 0.6),
                width=2 * self.ss,
            )
            d.line(
                (*self._px(0.06, 0.3), *self._px(0.34, 0.3)),
                fill=_shade(bg, 0.6),
                width=2 * self.ss,
            )
        elif style == "bookshelf":
            for shelf in (0.25, 0.55, 0.85):
                bx = 0.0
                while bx < 1.0:
                    w = float(rng.uniform(0.03, 0.06))
                    r, g, b = (int(v) for v in rng.integers(60, 220, 3))
                    top = shelf - float(rng.uniform(0.12, 0.18))
                    d.rectangle((*self._px(bx, top), *self._px(bx + w, shelf)), fill=(r, g, b))
                    bx += w + 0.005
                d.rectangle((*self._px(0, shelf), *self._px(1, shelf + 0.02)), fill=(120, 80, 50))
        self._torso(d)
        for p in props:
            kind, x0, y0, x1, y1 = PROPS[p]
            if kind == "door":
                d.rectangle(
                    (*self._px(x0, y0), *self._px(x1, y1)),
                    fill=(140, 90, 50),
                    outline=(90, 55, 30),
                    width=2 * self.ss,
                )
            elif kind == "bell":
                d.rectangle(
                    (*self._px(x0 - 0.1, y1), *self._px(x1 + 0.2, 1.05)), fill=(150, 110, 70)
                )
                d.chord(
                    (*self._px(x0, y0), *self._px(x1, y1 + (y1 - y0))),
                    180,
                    360,
                    fill=(220, 180, 60),
                    outline=(150, 110, 30),
                    width=self.ss,
                )
                d.ellipse(self._box((x0 + x1) / 2, y0, 0.012, 0.012), fill=(150, 110, 30))
        return img

    def _torso(self, d: ImageDraw.ImageDraw) -> None:
        ident, (cx, cy) = self.id, HEAD_CENTRE
        cloth = self.colours["clothes"]
        style = CLOTHES[ident.clothes]
        neck_top, shoulder = cy + 0.6 * self.b, 0.86
        if style == "hoodie":
            d.ellipse(self._box(cx, shoulder - 0.01, 0.2, 0.09), fill=_shade(cloth, 0.75))
        d.rectangle(
            (*self._px(cx - 0.075, neck_top), *self._px(cx + 0.075, shoulder + 0.04)),
            fill=_shade(self.skin, 0.9),
        )
        d.rounded_rectangle(
            (*self._px(0.1, shoulder), *self._px(0.9, 1.4)), radius=0.12 * self.W, fill=cloth
        )
        if style == "striped top":
            for y in np.arange(shoulder + 0.03, 1.0, 0.05):
                d.rectangle(
                    (*self._px(0.1, float(y)), *self._px(0.9, float(y) + 0.02)),
                    fill=_shade(cloth, 0.7),
                )
        if style in ("t-shirt", "striped top"):
            d.chord(self._box(cx, shoulder, 0.08, 0.04), 0, 180, fill=_shade(self.skin, 0.9))
        elif style == "v-neck":
            d.polygon(
                [
                    self._px(cx - 0.08, shoulder),
                    self._px(cx + 0.08, shoulder),
                    self._px(cx, shoulder + 0.09),
                ],
                fill=_shade(self.skin, 0.9),
            )
        elif style == "collared shirt":
            for s in (-1, 1):
                d.polygon(
                    [
                        self._px(cx, shoulder + 0.04),
                        self._px(cx + s * 0.1, shoulder - 0.01),
                        self._px(cx + s * 0.09, shoulder + 0.07),
                    ],
                    fill=(245, 245, 245),
                )

    # ---- per-frame parts -------------------------------------------------------------------------
    def _hair(self, d: ImageDraw.ImageDraw, cx: float, cy: float, front: bool) -> None:
        style, a, b = HAIR_STYLES[self.id.hair_style], self.a, self.b
        if style == "bald":
            return
        if not front:
            if style in ("bob", "long", "curly"):
                bottom = cy + (1.6 * b if style == "long" else 0.45 * b)
                d.rounded_rectangle(
                    (*self._px(cx - 1.22 * a, cy - 1.1 * b), *self._px(cx + 1.22 * a, bottom)),
                    radius=0.5 * a * self.W,
                    fill=_shade(self.hair, 0.85),
                )
            if style == "bun":
                d.ellipse(self._box(cx, cy - 1.12 * b, 0.4 * a, 0.3 * b), fill=self.hair)
            return
        grow = {
            "buzz": 1.0,
            "short": 1.06,
            "bob": 1.1,
            "long": 1.1,
            "bun": 1.04,
            "spiky": 1.04,
            "curly": 1.12,
        }[style]
        d.chord(
            self._box(cx, cy - 0.45 * b, grow * 1.02 * a, 0.66 * b * grow), 180, 360, fill=self.hair
        )
        if style == "spiky":
            for k in range(-3, 4):
                x = cx + k * 0.28 * a
                d.polygon(
                    [
                        self._px(x - 0.15 * a, cy - 0.95 * b),
                        self._px(x, cy - 1.3 * b),
                        self._px(x + 0.15 * a, cy - 0.95 * b),
                    ],
                    fill=self.hair,
                )
        elif style == "curly":
            for k in range(-4, 5):
                ang = np.pi * (k + 4) / 8
                x, y = cx - 1.05 * a * np.cos(ang), cy - 0.45 * b - 0.7 * b * np.sin(ang)
                d.ellipse(self._box(float(x), float(y), 0.22 * a, 0.16 * b), fill=self.hair)

    def _head(self, d: ImageDraw.ImageDraw, cx: float, cy: float) -> None:
        a, b, skin = self.a, self.b, self.skin
        outline, ow = _shade(skin, 0.75), self.ss
        for s in (-1, 1):
            d.ellipse(
                self._box(cx + s * a * 0.98, cy, 0.03, 0.045), fill=skin, outline=outline, width=ow
            )
        box = self._box(cx, cy, a, b)
        if self.round >= 1.0:
            d.ellipse(box, fill=skin, outline=outline, width=ow)
        else:
            d.rounded_rectangle(
                box, radius=self.round * a * self.W, fill=skin, outline=outline, width=ow
            )
        if FACE_SHAPES[self.id.face_shape][0] == "heart":  # fuller cheeks, narrow chin
            d.ellipse(self._box(cx, cy - 0.1 * b, a * 1.04, b * 0.8), fill=skin)

    def _eyes(
        self,
        d: ImageDraw.ImageDraw,
        cx: float,
        cy: float,
        blink: float,
        brow: float,
        gaze: tuple[float, float],
    ) -> None:
        a, b = self.a, self.b
        iris = self.colours["eyes"]
        brow_col = self.hair if HAIR_STYLES[self.id.hair_style] != "bald" else (70, 50, 40)
        open_ = max(0.0, 1.0 - blink)
        for s in (-1, 1):
            ex, ey = cx + s * self.id.eye_spacing * a, cy - 0.2 * b
            rx, ry = 0.2 * a, 0.12 * b
            ix = ex + gaze[0] * GAZE_REACH[0] * rx  # iris centre
            iy = ey + gaze[1] * GAZE_REACH[1] * ry * open_
            if open_ > 0.15:
                d.ellipse(
                    self._box(ex, ey, rx, ry * open_),
                    fill=(250, 250, 250),
                    outline=_shade(self.skin, 0.55),
                    width=self.ss,
                )
                d.ellipse(
                    self._box(ix, iy, 0.5 * ry * 1.1, 0.5 * ry * open_ * 1.1 + 1e-4), fill=iris
                )
                d.ellipse(self._box(ix, iy, 0.22 * ry, 0.22 * ry * open_ + 1e-4), fill=(20, 20, 25))
            else:
                d.line(
                    (*self._px(ex - rx, ey), *self._px(ex + rx, ey)),
                    fill=_shade(self.skin, 0.5),
                    width=2 * self.ss,
                )
            by = ey - 0.22 * b - 0.1 * b * brow
            d.line(
                (*self._px(ex - rx, by + 0.02 * b), *self._px(ex + rx, by - s * 0.0)),
                fill=brow_col,
                width=3 * self.ss,
            )
        d.ellipse(self._box(cx, cy + 0.15 * b, 0.1 * a, 0.08 * b), fill=_shade(self.skin, 0.85))

    def _mouth(
        self,
        d: ImageDraw.ImageDraw,
        cx: float,
        cy: float,
        pose: tuple[float, float, float],
        smile: float,
    ) -> None:
        opening, width, rounding = pose
        my = cy + 0.55 * self.b
        hw = self.id.mouth_width * self.a * (0.75 + 0.5 * width) * (1.0 - 0.35 * rounding)
        hh = 0.5 * MOUTH_MAX_OPEN * max(0.0, min(1.0, opening))
        lip = LIP_THICKNESS
        d.ellipse(self._box(cx, my, hw + lip, hh + lip), fill=self.lips)
        if hh > 0.002:
            d.ellipse(self._box(cx, my, hw, hh), fill=MOUTH_INTERIOR)
        elif smile > 0.0:  # closed lips, wider, curving up at the corners (lowest point at my)
            lift = SMILE_LIFT * min(1.0, smile)
            hw *= 1.0 + 0.15 * min(1.0, smile)
            d.arc(
                self._box(cx, my - lift, hw + 0.5 * lip, lift + 0.5 * lip),
                10,
                170,
                fill=self.lips,
                width=round(lip * self.H),
            )
            d.arc(
                self._box(cx, my - lift, hw, lift),
                15,
                165,
                fill=_shade(self.lips, 0.6),
                width=self.ss,
            )
        else:
            d.line(
                (*self._px(cx - hw, my), *self._px(cx + hw, my)),
                fill=_shade(self.lips, 0.6),
                width=self.ss,
            )

    def _hand(self, d: ImageDraw.ImageDraw, h: HandPose) -> None:
        skin, outline, ow = self.skin, _shade(self.skin, 0.6), self.ss
        rx, ry = HAND_R
        if h.shape == "flat":
            for k in range(4):
                fx = h.x + (k - 1.5) * 0.42 * rx
                d.rounded_rectangle(
                    (*self._px(fx - 0.2 * rx, h.y - 2.0 * ry), *self._px(fx + 0.2 * rx, h.y)),
                    radius=0.2 * rx * self.W,
                    fill=skin,
                    outline=outline,
                    width=ow,
                )
        elif h.shape == "point":
            d.line(
                (*self._px(h.x, h.y), *self._px(h.x - h.side * 0.5 * rx, h.y + 1.6 * ry)),
                fill=outline,
                width=int(0.45 * rx * self.W),
            )
            d.line(
                (*self._px(h.x, h.y), *self._px(h.x - h.side * 0.5 * rx, h.y + 1.6 * ry)),
                fill=skin,
                width=int(0.3 * rx * self.W),
            )
        scale = 1.15 if h.shape == "fist" else 1.0
        d.ellipse(self._box(h.x, h.y, rx * scale, ry * scale), fill=skin, outline=outline, width=ow)
        d.ellipse(
            self._box(h.x - h.side * 0.9 * rx, h.y - 0.1 * ry, 0.35 * rx, 0.55 * ry),
            fill=skin,
            outline=outline,
            width=ow,
        )

    # ---- public ----------------------------------------------------------------------------------
    def render(self, state: FaceState, *, draw_hands: bool = True) -> np.ndarray:
        """One frame ``(H, W, 3)`` uint8."""
        img = self.static.copy()
        d = ImageDraw.Draw(img)
        cx = HEAD_CENTRE[0] + state.head_dx / self.size[0]
        cy = HEAD_CENTRE[1] + state.head_dy / self.size[1]
        self._hair(d, cx, cy, front=False)
        self._head(d, cx, cy)
        look = self.id.look
        if look is not None and look.earrings:
            draw_earrings(d, look, box=self._box, cx=cx, cy=cy, a=self.a)
        self._hair(d, cx, cy, front=True)
        if look is not None and look.headwear:
            draw_headwear(
                d, look, box=self._box, px=self._px, cx=cx, cy=cy, a=self.a, b=self.b, line=self.ss
            )
        self._eyes(d, cx, cy, state.blink, state.brow, state.gaze)
        if look is not None and look.glasses:
            draw_glasses(
                d,
                look,
                box=self._box,
                px=self._px,
                cx=cx,
                cy=cy,
                a=self.a,
                b=self.b,
                eye_spacing=self.id.eye_spacing,
                line=round(1.5 * self.ss),
            )
        self._mouth(d, cx, cy, state.mouth, state.smile)
        if draw_hands:
            for h in state.hands:
                self._hand(d, h)
        return np.asarray(img.resize(self.size, Image.Resampling.BOX))


def portrait(
    identity: Identity, *, width: int = 128, height: int = 128, supersample: int = 4
) -> np.ndarray:
    """One neutral frame ``(H, W, 3)`` uint8 of ``identity`` at the model's framing.

    Head at rest, eyes open and looking at the camera, mouth closed, no hands or props: the
    picture a session starts from. Works for palette and :class:`~.identity.Look` identities.
    """
    r = FaceRenderer(identity, width=width, height=height, supersample=supersample, props=[])
    return r.render(FaceState(), draw_hands=False)
