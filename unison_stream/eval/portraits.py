"""The ``portraits`` eval set: pictures no training run saw, spoken through the engine
(``docs/eval.md``, "Portraits"; the avatar sources: ``docs/avatars.md``).

Training sees the world's people only: palette colours, no accessories, one drawing style, one
framing. Each portrait here leaves that in one way, and is built through the avatar sources
(:mod:`unison_stream.avatars`) as a user's would be:

* ``hue_green``, ``hue_purple``: a test person's portrait with every colour's hue turned
  120° / 240° (green and purple skin);
* ``free_colours``: a design with hex colours outside every palette;
* ``accessories``: glasses and a hat (the world's when its renderer draws them, else drawn here);
* ``offset_small``: the portrait small and off-centre on a wide canvas, found and framed by the
  avatars' framing rule; ``zoomed_tight``: drawn at 320 px and cropped close, framed likewise;
* ``cartoon``: a flat cartoon face with black outlines, drawn by :func:`draw_cartoon`.

``control`` is a test person's own world portrait, through the same path: the figures a
picture the model knows gets. Each portrait says one test clip's transcript (portrait *k*:
clip *k* of the split, cycled) and is measured with the eval's own figures: feature
visibility at the portrait's face layout; face sharpness (gradient energy of the generated
face ÷ that of the picture, divided by the same ratio of the world's ground truth: the said
clips' frames ÷ their people's portraits, so 1 is as sharp as the world); identity in the
feature net's space per 10 s window (reference: the picture; others: every other portrait and
the split's people, not the portrait's own source person); lip sync, whose correlation ratio
is over the ground truth of the same clips.
"""

from __future__ import annotations

import io
import logging
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from unison_stream.avatars import from_design
from unison_stream.avatars.framing import normalise
from unison_stream.avatars.world import options
from unison_stream.data.loader import ManifestDataset, Sample
from unison_stream.data.synth.face import Box, FaceLayout, face_layout
from unison_stream.data.synth.identity import Identity
from unison_stream.engine import Engine
from unison_stream.eval.generate import say_one
from unison_stream.eval.lipsync import lip_sync, summarise_lip_sync
from unison_stream.eval.quality import VisualQuality

__all__ = [
    "PORTRAITS",
    "PORTRAIT_BARS",
    "Portrait",
    "draw_cartoon",
    "hue_rotate",
    "portrait_set",
    "portraits_report",
    "with_glasses_and_hat",
]

log = logging.getLogger(__name__)

PORTRAITS = (
    "control",
    "hue_green",
    "hue_purple",
    "free_colours",
    "accessories",
    "offset_small",
    "zoomed_tight",
    "cartoon",
)
# (key, "<=" | ">=", value) over the unseen portraits; identity_verified_all_windows: true
PORTRAIT_BARS: tuple[tuple[str, str, float], ...] = (
    ("feature_visibility", ">=", 0.9),
    ("sharpness_ratio_face", ">=", 0.8),
    ("lipsync_corr_ratio", ">=", 0.7),
)
FREE_COLOURS = {  # none is a palette colour of the world
    "skin": "#9fc5e8",
    "hair_color": "#ff8c00",
    "eyes": "#d02090",
    "clothes_color": "#b5e61d",
    "background_color": "#5b3a29",
}


@dataclass(frozen=True)
class Portrait:
    """One picture of the set, at the model's framing, with where its face parts are."""

    name: str
    picture: np.ndarray  # (H, W, 3) uint8
    layout: FaceLayout  # its eyes, mouth and cheeks at rest (the figures read them)
    clip: int  # the split clip whose transcript it says
    source: int | None  # the split clip whose person it was drawn from (None: nobody's)
    caption: str


# ---- drawing ---------------------------------------------------------------------------------
def hue_rotate(picture: np.ndarray, degrees: float) -> np.ndarray:
    """``(H, W, 3)`` uint8 with every pixel's hue turned by ``degrees`` (HSV; greys stay)."""
    hsv = np.asarray(Image.fromarray(picture).convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int32) + round(degrees / 360 * 256)) % 256
    return np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"))


def _scaled(box: Box, k: float, dx: float = 0.0, dy: float = 0.0) -> Box:
    return box[0] * k + dx, box[1] * k + dy, box[2] * k + dx, box[3] * k + dy


def _map_layout(layout: FaceLayout, k: float, dx: float, dy: float) -> FaceLayout:
    """``layout`` with every box scaled by ``k`` then shifted by ``(dx, dy)``."""
    return FaceLayout(
        head=_scaled(layout.head, k, dx, dy),
        eyes=(_scaled(layout.eyes[0], k, dx, dy), _scaled(layout.eyes[1], k, dx, dy)),
        mouth=_scaled(layout.mouth, k, dx, dy),
        cheeks=(_scaled(layout.cheeks[0], k, dx, dy), _scaled(layout.cheeks[1], k, dx, dy)),
    )


def with_glasses_and_hat(picture: np.ndarray, layout: FaceLayout) -> np.ndarray:
    """Round dark-rimmed glasses over the layout's eyes and a flat hat above its brows."""
    ss = 4
    h, w = picture.shape[:2]
    img = Image.fromarray(picture).resize((w * ss, h * ss), Image.Resampling.NEAREST)
    d = ImageDraw.Draw(img)
    rims = []
    for x0, y0, x1, y1 in layout.eyes:
        cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, 0.62 * (x1 - x0)
        rims.append((cx, cy, r))
        d.ellipse(
            ((cx - r) * ss, (cy - r) * ss, (cx + r) * ss, (cy + r) * ss),
            outline=(30, 30, 40),
            width=2 * ss,
        )
    (lx, ly, lr), (rx, _, rr) = rims
    d.line(((lx + lr) * ss, ly * ss, (rx - rr) * ss, ly * ss), fill=(30, 30, 40), width=2 * ss)
    hx0, hy0, hx1, hy1 = layout.head
    brim = hy0 + 0.2 * (hy1 - hy0)  # above the brows (0.29 of the head down)
    pad = 0.12 * (hx1 - hx0)
    d.rectangle(
        ((hx0 + pad) * ss, (hy0 - 0.25 * (hy1 - hy0)) * ss, (hx1 - pad) * ss, brim * ss),
        fill=(150, 40, 60),
    )
    d.rectangle(
        ((hx0 - pad) * ss, (brim - 0.05 * (hy1 - hy0)) * ss, (hx1 + pad) * ss, brim * ss),
        fill=(110, 25, 45),
    )
    return np.asarray(img.resize((w, h), Image.Resampling.BOX))


def draw_cartoon(width: int, height: int) -> tuple[np.ndarray, FaceLayout]:
    """A flat cartoon portrait — flat fills, thick black outlines, big round eyes, a smile
    line, a flat fringe, a two-tone wall — at the world's framing; and its face layout."""
    proportions = Identity(0, 0, 0, 0, 0, 0, 0, 0, 0, eye_spacing=0.45, mouth_width=0.40)
    layout = face_layout(proportions, width=width, height=height)
    ss = 4
    img = Image.new("RGB", (width * ss, height * ss), (255, 222, 89))
    d = ImageDraw.Draw(img)

    def s(*v: float) -> list[float]:
        return [x * ss for x in v]

    ink, skin, line = (20, 20, 20), (255, 196, 140), 2 * ss
    d.rectangle(s(0, 0.62 * height, width, height), fill=(250, 160, 60))
    hx0, hy0, hx1, hy1 = layout.head
    cx = (hx0 + hx1) / 2
    d.rounded_rectangle(
        s(0.12 * width, 0.84 * height, 0.88 * width, 1.3 * height),
        radius=14 * ss,
        fill=(40, 110, 220),
        outline=ink,
        width=line,
    )
    d.rectangle(
        s(cx - 0.07 * width, hy1 - 6, cx + 0.07 * width, 0.86 * height),
        fill=skin,
        outline=ink,
        width=line,
    )
    d.ellipse(s(hx0, hy0, hx1, hy1), fill=skin, outline=ink, width=line)
    d.chord(
        s(hx0 - 2, hy0 - 4, hx1 + 2, hy0 + 0.75 * (hy1 - hy0)),
        180,
        360,
        fill=(60, 30, 20),
        outline=ink,
        width=line,
    )
    for x0, y0, x1, y1 in layout.eyes:
        ex, ey = (x0 + x1) / 2, (y0 + y1) / 2
        r = 0.55 * (x1 - x0)
        d.ellipse(s(ex - r, ey - r, ex + r, ey + r), fill=(255, 255, 255), outline=ink, width=line)
        d.ellipse(s(ex - 0.45 * r, ey - 0.3 * r, ex + 0.45 * r, ey + 0.6 * r), fill=ink)
    mx0, my0, mx1, my1 = layout.mouth
    my = (my0 + my1) / 2
    d.arc(s(mx0 + 2, my - 5, mx1 - 2, my + 2), 20, 160, fill=ink, width=line)
    return np.asarray(img.resize((width, height), Image.Resampling.BOX)), layout


# ---- the set ---------------------------------------------------------------------------------
def _spec(row: dict[str, Any]) -> tuple[dict[str, Any], Identity]:
    """A design spec drawing the person of a manifest row, and their identity."""
    ident = Identity.from_json(row["identity"])
    spec: dict[str, Any] = dict(ident.describe())
    spec.update(eye_spacing=round(ident.eye_spacing, 4), mouth_width=round(ident.mouth_width, 4))
    return spec, ident


def _framed(
    canvas: np.ndarray, layout: FaceLayout, width: int, height: int
) -> tuple[np.ndarray, FaceLayout]:
    """A picture as a user uploads it: PNG bytes → the avatars' framing; and its layout."""
    buf = io.BytesIO()
    Image.fromarray(canvas).save(buf, format="PNG")
    raw = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    picture, framing = normalise(raw, width=width, height=height)
    return picture, _map_layout(layout, framing.scale, *framing.offset)


def portrait_set(rows: list[dict[str, Any]], *, width: int, height: int) -> list[Portrait]:
    """The :data:`PORTRAITS`, drawn from the people of the split's ``rows`` (portrait *k*
    from row *k*, cycled). Deterministic: the same rows give the same pixels."""
    n = len(rows)
    out: list[Portrait] = []

    def person(k: int) -> tuple[dict[str, Any], Identity, FaceLayout]:
        spec, ident = _spec(rows[k % n])
        return spec, ident, face_layout(ident, width=width, height=height)

    for k, name in enumerate(PORTRAITS):
        spec, ident, layout = person(k)
        source: int | None = k % n
        if name in ("control", "hue_green", "hue_purple"):
            picture = from_design(spec, width=width, height=height).picture
            if name != "control":
                picture = hue_rotate(picture, 120 if name == "hue_green" else 240)
        elif name == "free_colours":
            picture = from_design({**spec, **FREE_COLOURS}, width=width, height=height).picture
        elif name == "accessories":
            worn = [a for a in ("glasses", "hat") if a in options()["accessories"]]
            picture = from_design({**spec, "accessories": worn}, width=width, height=height).picture
            if len(worn) < 2:  # the world does not draw them yet: drawn here
                picture = with_glasses_and_hat(picture, layout)
        elif name == "offset_small":
            small = from_design(spec, width=width, height=height).picture
            big = np.asarray(
                Image.fromarray(small).resize(
                    (width * 3 // 2, height * 3 // 2), Image.Resampling.BICUBIC
                )
            )
            canvas = np.empty((height * 5 // 2, width * 3, 3), np.uint8)
            canvas[:] = big[0, 0]
            dx, dy = width // 3, height // 2
            canvas[dy : dy + big.shape[0], dx : dx + big.shape[1]] = big
            picture, layout = _framed(canvas, _map_layout(layout, 1.5, dx, dy), width, height)
        elif name == "zoomed_tight":
            big = from_design(spec, width=width * 5 // 2, height=height * 5 // 2).picture
            m = width * 5 // 2 * 3 // 40  # 7.5 % cropped off each side
            canvas = np.ascontiguousarray(big[m:-m, m:-m])
            layout = face_layout(ident, width=width * 5 // 2, height=height * 5 // 2)
            picture, layout = _framed(canvas, _map_layout(layout, 1.0, -m, -m), width, height)
        else:  # cartoon
            picture, layout = draw_cartoon(width, height)
            source = None
        caption = "a person talking in a quiet room"
        out.append(Portrait(name, picture, layout, k % n, source, caption))
    return out


# ---- the figures -----------------------------------------------------------------------------
def portraits_report(
    engine: Engine, ds: ManifestDataset, visual: VisualQuality, *, progress: bool = True
) -> dict[str, Any]:
    """Say a test sentence from each portrait and measure it (module docstring): per portrait
    and over the unseen ones (every portrait but ``control``), with ``bars``."""
    cfg = engine.cfg
    sr, fps = cfg.media.sample_rate, cfg.media.fps
    rows = [row for _, row in ds.rows]
    portraits = portrait_set(rows, width=cfg.media.width, height=cfg.media.height)
    people = sorted({p.clip for p in portraits})
    samples: dict[int, Sample] = {k: ds[k] for k in people}
    own = {k: from_design(_spec(rows[k])[0]).picture for k in people}  # each person's portrait
    refs = {f"person{k}": own[k] for k in people} | {p.name: p.picture for p in portraits}
    truth, truth_sync = [], {}
    for k in people:
        s = samples[k]
        layout = face_layout(
            Identity.from_json(rows[k]["identity"]), width=cfg.media.width, height=cfg.media.height
        )
        truth.append(
            visual.face_energy(s.frames, layout) / visual.face_energy(own[k][None], layout)
        )
        truth_sync[k] = lip_sync(s.frames, s.stems.get("speech", s.audio), sr, fps)
    truth_ratio = float(np.mean(truth))
    figures: dict[str, dict[str, Any]] = {}
    syncs = {}
    for i, p in enumerate(
        tqdm(portraits, desc="portraits", unit="picture", disable=not progress, file=sys.stderr)
    ):
        s = samples[p.clip]
        u = say_one(engine, text=s.transcript, reference_frame=p.picture, caption=p.caption, seed=i)
        others = [r for key, r in refs.items() if key not in (p.name, f"person{p.source}")]
        f = visual.picture_figures(u.frames, picture=p.picture, layout=p.layout, others=others)
        f["sharpness_ratio_face"] = f.pop("face_energy_ratio") / truth_ratio
        syncs[p.name] = lip_sync(u.frames, u.speech, sr, fps)
        f["lipsync_corr"] = syncs[p.name].corr
        f["lipsync_offset_ms"] = syncs[p.name].offset_ms if syncs[p.name].lag is not None else None
        figures[p.name] = f
    unseen = [p for p in portraits if p.name != "control"]
    gen = summarise_lip_sync([syncs[p.name] for p in unseen])["corr"]
    gt = summarise_lip_sync([truth_sync[p.clip] for p in unseen])["corr"]
    report: dict[str, Any] = {
        "portraits": figures,
        "identity_verified_all_windows": all(figures[p.name]["identity_verified"] for p in unseen)
        if all(figures[p.name]["identity_verified"] is not None for p in unseen)
        else None,
        "feature_visibility": float(
            np.mean([figures[p.name]["feature_visibility"] for p in unseen])
        ),
        "sharpness_ratio_face": float(
            np.mean([figures[p.name]["sharpness_ratio_face"] for p in unseen])
        ),
        "lipsync_corr": gen,
        "lipsync_corr_gt": gt,
        "lipsync_corr_ratio": None if not gen or not gt else gen / gt,
        "sharpness_truth_ratio": truth_ratio,
    }
    bars: dict[str, bool | None] = {
        key: None if report[key] is None else bool(report[key] >= value)
        for key, _, value in PORTRAIT_BARS
    }
    bars["identity_verified_all_windows"] = report["identity_verified_all_windows"]
    report["bars"] = bars
    return report
