"""The framing rule, and a face check built for it (``docs/avatars.md``, "The framing rule").

**The rule.** One front-facing face, both eyes and the mouth visible. The picture is scaled
and cropped to the model's framing — the synthetic world's head and shoulders: the face's
centre at :data:`CENTRE` (fractions of the frame), the eye–mouth distance within
:data:`EYE_MOUTH` of the frame height when the whole picture is shown (the world's faces span
that range); a face outside it is scaled to the nearer end of it (the least change). Missing
borders are filled by repeating the edge pixels, at most :data:`MAX_PADDED` of the frame.

**The check** (no face detector ships with the project, and the world's feature net only knows
the world's palettes). A face is taken to be a region of one even colour — judged by
chromaticity, with brightness counting less, so soft shading stays one region — that is
roughly elliptical once holes are filled and thin parts (neck, ears) are opened away, and
whose holes hold two eye regions left and right of its centre at one height and a mouth
region below, centred between them. Candidate colours are sampled on a grid. The eye and
mouth positions give the scale (eye–mouth distance) and the centre, so hair that covers the
forehead, or has the skin's colour, does not move the framing.

Limits, measured in ``tests/test_avatar_framing.py``: every sampled world face, hue-rotated
and flat cartoon faces, glasses and shifted or zoomed pictures pass; a blank, noise, a
profile-like face with one eye, and two faces side by side fail. It is a heuristic: it will
not find faces under strong side light, beards that hide the mouth, or dark glasses, and it
cannot tell a face from a face-like drawing. Photographs were not available to test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from unison_stream.avatars.errors import FramingError

__all__ = [
    "CENTRE",
    "EYE_MOUTH",
    "MAX_PADDED",
    "Face",
    "Framing",
    "find_face",
    "normalise",
]

CENTRE = (0.5, 0.42)  # the face's centre in the frame (the world's HEAD_CENTRE)
# Calibrated with this check on 300 world portraits (identities 1000–1299; 293 found): the
# eye–mouth distance it measures spans these fractions of the frame height (1st–99th
# percentile; the eye's hole takes in the brow, so it reads a little longer than the drawing),
# and the face's centre lies this many eye–mouth distances below the eye line (median).
EYE_MOUTH = (0.16, 0.225)
EYE_TO_CENTRE = 0.31
MAX_PADDED = 0.3  # share of the frame that may be filled by repeating edges
WORK_SIDE = 256  # the check runs on a copy at most this many pixels a side
GRID = 14  # candidate colours: the median of a patch at GRID × GRID points
COLOUR_TOLERANCE = 22.0  # a pixel is the face's colour within this distance (see _distance)
EDGE_STEP = 14.0  # a pixel next to a step this steep (levels, any channel) is an outline
MIN_EYE_MOUTH_PX = 9.0  # at the working size: a smaller face has too few pixels to check
CENTRE_TOLERANCE_PX = 2.0  # a picture already at the framing within this is left untouched


@dataclass(frozen=True)
class Face:
    """A face found in a picture, in that picture's pixels."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1 of the face region (holes filled)
    eyes: tuple[tuple[float, float], tuple[float, float]]  # (x, y) image-left eye first
    mouth: tuple[float, float]  # (x, y)

    @property
    def eye_mouth(self) -> float:
        """Vertical distance from the eye line to the mouth."""
        return self.mouth[1] - 0.5 * (self.eyes[0][1] + self.eyes[1][1])

    @property
    def centre(self) -> tuple[float, float]:
        """The face's centre: between the eyes, :data:`EYE_TO_CENTRE` eye–mouth distances down."""
        ey = 0.5 * (self.eyes[0][1] + self.eyes[1][1])
        return 0.5 * (self.eyes[0][0] + self.eyes[1][0]), ey + EYE_TO_CENTRE * self.eye_mouth


@dataclass(frozen=True)
class Framing:
    """How a picture was brought to the framing: output = source scaled by ``scale``, then
    shifted by ``offset`` (output pixels); ``padded`` is the share of repeated-edge pixels."""

    face: Face
    scale: float
    offset: tuple[float, float]
    padded: float

    def to_output(self, x: float, y: float) -> tuple[float, float]:
        """A source pixel position in the normalised picture."""
        return x * self.scale + self.offset[0], y * self.scale + self.offset[1]


def _distance(pixels: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """``(…, 3)`` float pixels → ``(…)`` distance to ``colour``: chromaticity differences
    (× 300) and a third of the luminance difference, so shading moves it less than hue."""

    def split(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        total = x.sum(-1, keepdims=True) + 30.0  # + 30: dark pixels' chromaticity is noisy
        return 300.0 * x / total, x @ np.array([0.299, 0.587, 0.114], np.float32)

    chroma, lum = split(pixels)
    c0, l0 = split(colour)
    return np.sqrt(((chroma - c0) ** 2).sum(-1) + (0.33 * (lum - l0)) ** 2)


def _holes(mask: np.ndarray) -> list[tuple[float, float, float]]:
    """(area, x, y) of each connected component of ``mask``."""
    labels, n = ndimage.label(mask)
    out = []
    for k in range(1, n + 1):
        ys, xs = np.nonzero(labels == k)
        out.append((float(len(xs)), float(xs.mean()), float(ys.mean())))
    return out


def _face_in(component: np.ndarray) -> Face | None:
    """The face a candidate region ``(H, W)`` bool makes, or None when it is not one.

    The face's rows are those around the widest row (the cheeks) whose span stays at least
    half the widest (the neck and shoulders below are cut off); each row is filled between its
    outermost pixels, so eyes and mouth become holes even where they touch the hairline. The
    eyes are the largest hole on each side above the widest row, the mouth the largest
    centred hole below it."""
    ys, xs = np.nonzero(component)
    rows = np.arange(ys.min(), ys.max() + 1)
    lo = ndimage.minimum(xs, ys, rows)  # (R,) each row's leftmost pixel (nan: none)
    hi = ndimage.maximum(xs, ys, rows)
    span = np.nan_to_num(np.asarray(hi) - np.asarray(lo) + 1, nan=0.0)
    widest = float(span.max())
    mid = int(np.median(np.nonzero(span >= 0.97 * widest)[0]))
    top, bottom = mid, mid
    while top > 0 and span[top - 1] >= 0.5 * widest:
        top -= 1
    while bottom + 1 < len(rows) and span[bottom + 1] >= 0.5 * widest:
        bottom += 1
    h, w = float(bottom - top + 1), widest
    if not 0.45 <= h / w <= 2.0 or w < 12:
        return None
    yy, xx = np.mgrid[0 : component.shape[0], 0 : component.shape[1]]
    r = yy - rows[0]
    inside = (r >= top) & (r <= bottom)
    inside &= xx >= np.asarray(lo)[np.clip(r, 0, len(rows) - 1)]
    inside &= xx <= np.asarray(hi)[np.clip(r, 0, len(rows) - 1)]
    holes = inside & ~component
    area = float(inside.sum())
    if holes.sum() > 0.5 * area:
        return None
    cx = float(0.5 * (lo[mid] + hi[mid]))
    y_mid = float(rows[mid])
    min_area = 0.004 * area
    # holes open to the left, right or bottom of the face are not features (a gap in hair)
    edge = ndimage.binary_dilation(~inside) & inside
    edge[: rows[top] + 1] = False  # an eye may touch a fringe of hair above it
    labels, _ = ndimage.label(holes)
    holes &= ~np.isin(labels, np.unique(labels[edge & holes]))
    upper = holes & (yy < y_mid)
    left = [c for c in _holes(upper & (xx < cx - 0.06 * w)) if c[0] >= min_area]
    right = [c for c in _holes(upper & (xx > cx + 0.06 * w)) if c[0] >= min_area]
    pairs = [
        (a, b)
        for a in left
        for b in right
        if abs((cx - a[1]) - (b[1] - cx)) <= 0.15 * w and abs(a[2] - b[2]) <= 0.06 * w
    ]  # level, and as far from the middle on each side: a face turned to the camera
    if not pairs:
        return None
    el, er = max(pairs, key=lambda p: p[0][2] + p[1][2])  # the lowest: brows, hair are above
    eye_x, eye_y = 0.5 * (el[1] + er[1]), 0.5 * (el[2] + er[2])
    lower = holes & (yy > max(y_mid, eye_y + 0.15 * w)) & (np.abs(xx - cx) < 0.3 * w)
    mouths = [c for c in _holes(lower) if c[0] >= min_area and abs(c[1] - eye_x) <= 0.1 * w]
    if not mouths:
        return None
    m = max(mouths)
    if not 0.25 <= (m[2] - eye_y) / w <= 0.7:  # eye–mouth over face width: a face's proportion
        return None
    box = (float(lo[mid]), float(rows[top]), float(hi[mid]) + 1, float(rows[bottom]) + 1)
    return Face(box, ((el[1], el[2]), (er[1], er[2])), (m[1], m[2]))


def _faces(work: np.ndarray) -> list[Face]:
    """Every face found in ``work (H, W, 3)`` float32, one per distinct region."""
    h, w = work.shape[:2]
    smooth = ndimage.uniform_filter(work, size=(3, 3, 1))  # candidate colours only
    step = np.zeros((h, w), np.float32)  # the largest channel step to a 4-neighbour
    dx, dy = np.abs(np.diff(work, axis=1)).max(-1), np.abs(np.diff(work, axis=0)).max(-1)
    step[:, :-1], step[:, 1:] = np.maximum(step[:, :-1], dx), np.maximum(step[:, 1:], dx)
    step[:-1], step[1:] = np.maximum(step[:-1], dy), np.maximum(step[1:], dy)
    even = step < EDGE_STEP
    found: list[Face] = []
    seen: set[tuple[int, int, int]] = set()
    for gy in np.linspace(0.05 * h, 0.95 * h, GRID).astype(int):
        for gx in np.linspace(0.05 * w, 0.95 * w, GRID).astype(int):
            colour = smooth[gy, gx]
            key = tuple(int(v) // 12 for v in colour)
            if key in seen:
                continue
            seen.add(key)  # type: ignore[arg-type]
            labels, n = ndimage.label(even & (_distance(work, colour) < COLOUR_TOLERANCE))
            sizes = np.bincount(labels.ravel(), minlength=n + 1)
            for k in np.nonzero((sizes >= 0.01 * h * w) & (sizes <= 0.7 * h * w))[0]:
                if k == 0:
                    continue
                comp = labels == k
                ys, xs = np.nonzero(comp)
                if ys.min() == 0 or xs.min() == 0 or ys.max() == h - 1 or xs.max() == w - 1:
                    continue  # touches the border: background, or a face cut off
                face = _face_in(comp)
                if face is not None and not any(_same(face, f) for f in found):
                    found.append(face)
    return found


def _same(a: Face, b: Face) -> bool:
    """Whether two finds are one face (their centres within a quarter face of each other)."""
    (ax, ay), (bx, by) = a.centre, b.centre
    return bool(np.hypot(ax - bx, ay - by) < 0.5 * max(a.eye_mouth, b.eye_mouth))


def find_face(image: np.ndarray) -> Face:
    """The one front-facing face of ``image (H, W, 3)`` uint8, in its pixels; FramingError
    (saying what to change) when there is none, or more than one."""
    h, w = image.shape[:2]
    k = min(1.0, WORK_SIDE / max(h, w))
    small = Image.fromarray(image).resize(
        (max(1, round(w * k)), max(1, round(h * k))), Image.Resampling.BOX
    )
    faces = _faces(np.asarray(small, np.float32))
    if not faces:
        raise FramingError(
            "no face found: use a front-facing picture of one face with both eyes and the mouth "
            "visible, evenly lit, with some room around the head"
        )
    if len(faces) > 1:
        raise FramingError(f"{len(faces)} faces found: crop the picture to one person")
    f = faces[0]
    if f.eye_mouth < MIN_EYE_MOUTH_PX:
        raise FramingError(
            "the face is too small: crop the picture closer, so the face is at least a fifth "
            "of its height"
        )
    s = 1.0 / k
    return Face(
        (f.box[0] * s, f.box[1] * s, f.box[2] * s, f.box[3] * s),
        ((f.eyes[0][0] * s, f.eyes[0][1] * s), (f.eyes[1][0] * s, f.eyes[1][1] * s)),
        (f.mouth[0] * s, f.mouth[1] * s),
    )


def normalise(image: np.ndarray, *, width: int, height: int) -> tuple[np.ndarray, Framing]:
    """``image (H, W, 3)`` uint8 → the picture at the framing ``(height, width, 3)`` uint8 and
    how it was framed. A picture already at the framing is returned unchanged."""
    face = find_face(image)
    h, w = image.shape[:2]
    fit = min(width / w, height / h)  # the whole picture shown
    frac = float(np.clip(face.eye_mouth * fit / height, *EYE_MOUTH))
    scale = frac * height / face.eye_mouth
    cx, cy = face.centre
    ox, oy = CENTRE[0] * width - cx * scale, CENTRE[1] * height - cy * scale
    if (
        (w, h) == (width, height)
        and abs(scale - 1) < 1e-6
        and np.hypot(ox, oy) <= CENTRE_TOLERANCE_PX
    ):
        return image.copy(), Framing(face, 1.0, (0.0, 0.0), 0.0)
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    scaled = np.asarray(Image.fromarray(image).resize((sw, sh), Image.Resampling.LANCZOS))
    ix, iy = round(ox), round(oy)
    # output pixel (x, y) shows scaled pixel (x − ix, y − iy); outside it, the nearest edge
    left, top = max(0, ix), max(0, iy)
    right, bottom = max(0, width - (ix + sw)), max(0, height - (iy + sh))
    padded = 1.0 - (width - min(width, left + right)) * (height - min(height, top + bottom)) / (
        width * height
    )
    if padded > MAX_PADDED:
        raise FramingError(
            f"the picture is cut too close to the face ({padded:.0%} of the frame would be "
            "made up): the model shows head and shoulders, so leave about a face's height of "
            "room above the head and below the chin"
        )
    grown = np.pad(scaled, ((top, bottom), (left, right), (0, 0)), mode="edge")
    x, y = left - ix, top - iy  # where output (0, 0) lies in the grown picture
    picture = np.ascontiguousarray(grown[y : y + height, x : x + width])
    return picture, Framing(face, scale, (float(ix), float(iy)), padded)
