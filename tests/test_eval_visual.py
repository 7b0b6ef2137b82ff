"""Visual-quality figures (docs/eval.md) on frames rendered by the world's own renderer: the face
layout agrees with the renderer, eyes and mouth are found on real frames and not on faded ones,
blur lowers sharpness, the Fréchet distance grows with a shift, the feature net tells people
apart, identity verification and the grid picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from unison_stream.config import load_config
from unison_stream.data.synth.config import WorldConfig
from unison_stream.data.synth.face import FaceLayout, FaceRenderer, FaceState, face_layout
from unison_stream.data.synth.identity import (
    MOUTH_INTERIOR,
    SKIN_TONES,
    Identity,
    sample_identity,
)
from unison_stream.data.synth.measure import (
    SCLERA,
    SWAY_X,
    SWAY_Y,
    feature_contrast,
    features_visible,
    skin_colour,
)
from unison_stream.data.synth.visemes import VISEME_POSES, VISEMES
from unison_stream.eval.features import WorldFeatureNet, embed, identity_embedding, load_features
from unison_stream.eval.generate import CodecRoundTrip
from unison_stream.eval.grid import CAPTION_H, GAP, PAD, TITLE_H, GridCell, GridRow, write_grid
from unison_stream.eval.visual import (
    feature_visibility,
    frechet_distance,
    ghosting,
    gradient_energy,
    identity_windows,
    sharpness,
    verification_threshold,
    verify,
    window_spans,
)

CFG = WorldConfig()


def _render(identity: Identity, n: int, seed: int, *, still: bool = False) -> np.ndarray:
    """``n`` frames of ``identity`` in random states: visemes, blinks (a tenth shut), sway."""
    rng = np.random.default_rng(seed)
    r = FaceRenderer(
        identity, width=CFG.width, height=CFG.height, supersample=CFG.supersample, props=[]
    )
    frames = []
    for _ in range(n):
        state = FaceState()
        if not still:
            state = FaceState(
                head_dx=float(rng.uniform(-SWAY_X, SWAY_X)),
                head_dy=float(rng.uniform(SWAY_X / 2 - SWAY_Y, SWAY_Y)),
                mouth=VISEME_POSES[VISEMES[int(rng.integers(len(VISEMES)))]],
                blink=float(
                    rng.choice([0.0, 0.0, 0.0, 0.5, 0.8, 1.0], p=[0.4, 0.2, 0.2, 0.05, 0.05, 0.1])
                ),
            )
        frames.append(r.render(state))
    return np.stack(frames)


def _people(n: int, seed: int = 0) -> list[Identity]:
    rng = np.random.default_rng(seed)
    return [sample_identity(rng) for _ in range(n)]


def _layout(identity: Identity) -> FaceLayout:
    return face_layout(identity, width=CFG.width, height=CFG.height)


def _faded(frames: np.ndarray, identity: Identity, keep: float = 0.0) -> np.ndarray:
    """Eyes and mouth painted over with the skin colour (``keep`` of their contrast left)."""
    layout = _layout(identity)
    out = frames.astype(np.float32)
    skin = skin_colour(frames, layout)[:, None, None]  # (F, 1, 1, 3)
    for x0, y0, x1, y1 in (*layout.eyes, layout.mouth):
        ys = slice(int(y0 - SWAY_Y - 1), int(y1 + SWAY_Y + 2))
        xs = slice(int(x0 - SWAY_X - 1), int(x1 + SWAY_X + 2))
        out[:, ys, xs] = skin + keep * (out[:, ys, xs] - skin)
    return out.round().clip(0, 255).astype(np.uint8)


def _blur(frames: np.ndarray, sigma: float) -> np.ndarray:
    x = ndimage.gaussian_filter(frames.astype(np.float32), (0, sigma, sigma, 0))
    return x.round().clip(0, 255).astype(np.uint8)


def _inside(mask: np.ndarray, boxes: tuple[tuple[float, float, float, float], ...]) -> bool:
    """Every True pixel of ``mask (H, W)`` lies in one of ``boxes`` (1 px of anti-aliasing)."""
    ys, xs = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]]
    ok = np.zeros_like(mask)
    for x0, y0, x1, y1 in boxes:
        ok |= (xs >= x0 - 1) & (xs < x1 + 1) & (ys >= y0 - 1) & (ys < y1 + 1)
    return bool((mask <= ok).all())


# ---- the world's measures ---------------------------------------------------------------------
def test_face_layout_holds_the_renderers_eyes_mouth_and_bare_cheeks() -> None:
    for identity in _people(12, seed=1):
        layout = _layout(identity)
        r = FaceRenderer(identity, width=CFG.width, height=CFG.height, supersample=4, props=[])
        frame = r.render(FaceState(mouth=(1.0, 1.0, 0.0)))  # the widest, most open mouth
        f = frame.astype(np.float32)
        ys, xs = np.mgrid[0 : CFG.height, 0 : CFG.width]
        x0, y0, x1, y1 = layout.head
        cx, cy, a, b = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        below_fringe = ys >= cy - 0.42 * b  # the fringe ends 0.45 b over the centre
        in_head = (((xs - cx) / a) ** 2 + ((ys - cy) / b) ** 2 < 0.9) & below_fringe
        white = (np.linalg.norm(f - np.array(SCLERA), axis=-1) < 30) & in_head
        interior = np.linalg.norm(f - np.array(MOUTH_INTERIOR), axis=-1) < 10
        assert white.sum() >= 8 and interior.sum() >= 50, "eyes and an open mouth are drawn"
        assert _inside(white, layout.eyes), "every eye-white pixel lies in an eye box"
        assert _inside(interior, (layout.mouth,)), "the mouth interior lies in the mouth box"
        skin = np.array(SKIN_TONES[identity.skin][1], np.float32)
        for cx0, cy0, cx1, cy1 in layout.cheeks:
            patch = f[int(cy0) : int(cy1), int(cx0) : int(cx1)]
            assert np.linalg.norm(patch - skin, axis=-1).max() < 3, "a cheek patch is bare skin"


def test_eyes_and_mouth_are_found_on_world_frames_and_not_on_a_flat_face() -> None:
    people = _people(8, seed=2)
    clips = [(_render(p, 12, seed=k), _layout(p)) for k, p in enumerate(people)]
    visible = feature_visibility(clips)
    assert visible is not None and visible >= 0.95, "rendered frames pass, blinks included"
    flat = [(_faded(f, p), layout) for (f, layout), p in zip(clips, people, strict=True)]
    assert feature_visibility(flat) == 0.0, "a face of one colour shows no eyes and no mouth"
    half = [(_faded(f, p, keep=0.4), layout) for (f, layout), p in zip(clips, people, strict=True)]
    c_half = np.concatenate([feature_contrast(f, layout) for f, layout in half])
    c_full = np.concatenate([feature_contrast(f, layout) for f, layout in clips])
    np.testing.assert_allclose(c_half, 0.4 * c_full, atol=0.03)  # contrast is linear in fading
    upside_down = _render(people[0], 4, seed=0)[:, ::-1]  # eyes where the layout has no eyes
    assert not features_visible(upside_down, clips[0][1]).any()
    rng = np.random.default_rng(0)  # smooth colour noise, as a model with random weights makes
    noise = _blur(rng.integers(0, 256, (24, CFG.height, CFG.width, 3), dtype=np.uint8), 1.5)
    noisy = feature_visibility([(noise, layout) for _, layout in clips])
    assert noisy is not None and noisy < 0.1, "noise is not eyes and mouth"


def test_blur_lowers_sharpness_on_the_face_and_the_frame() -> None:
    p = _people(1, seed=3)[0]
    frames, layout = _render(p, 6, seed=0), _layout(p)
    sharp = sharpness([(frames, layout)]), sharpness([(frames, None)])
    for sigma in (0.7, 1.5):
        blurred = _blur(frames, sigma)
        soft = sharpness([(blurred, layout)]), sharpness([(blurred, None)])
        assert soft[0] < 0.8 * sharp[0] and soft[1] < 0.8 * sharp[1], (sigma, soft, sharp)
        sharp = soft  # more blur, less sharpness still
    flat = np.full_like(frames, 128)
    assert gradient_energy(flat).max() == 0.0 and gradient_energy(flat, layout).max() == 0.0


# ---- Fréchet distance and identity verification -----------------------------------------------
def test_frechet_distance_is_zero_for_one_set_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 8))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    b = rng.normal(size=(2000, 8))
    same = frechet_distance(a, b)
    assert same < 0.1, "two samples of one Gaussian"
    shifts = [frechet_distance(a, b + d) for d in (0.5, 1.0, 2.0)]
    assert shifts == sorted(shifts) and shifts[0] > same
    assert shifts[2] == pytest.approx(8 * 2.0**2, rel=0.05), "|Δμ|² for a shift of 2 in 8 dims"
    assert frechet_distance(a, 3 * b) == pytest.approx(8 * (3 - 1) ** 2, rel=0.1), "σ 1 vs 3"


def test_identity_windows_follow_distance_threshold_and_other_people() -> None:
    ref, other = np.zeros(4), np.array([4.0, 0, 0, 0])
    fps = 25.0
    stream = np.zeros((25 * 30, 4))  # 30 s: on the reference, then drifting to the other
    stream[250:500, 0] = 1.0  # 10–20 s: near, under the threshold
    stream[500:, 0] = 3.0  # 20–30 s: nearer the other person than the reference
    w = identity_windows(stream, ref, other[None], fps=fps, threshold=1.5)
    assert [(x.start_s, x.end_s) for x in w] == [(0.0, 10.0), (10.0, 20.0), (20.0, 30.0)]
    assert [x.verified for x in w] == [True, True, False]
    assert w[2].distance == pytest.approx(3.0) and w[2].distance_other == pytest.approx(1.0)
    strict = identity_windows(stream, ref, np.zeros((0, 4)), fps=fps, threshold=0.5)
    assert [x.verified for x in strict] == [True, False, False]
    assert window_spans(370, 25.0, 10.0) == [(0, 370)], "a tail under half a window joins"
    assert window_spans(380, 25.0, 10.0) == [(0, 250), (250, 380)]
    assert window_spans(500, 25.0, 10.0) == [(0, 250), (250, 500)]
    assert verify(stream[-10:], ref, np.zeros((0, 4)), threshold=3.5, fps=fps).verified
    assert not verify(stream[-10:], ref, np.zeros((0, 4)), threshold=3.0, fps=fps).verified


def test_verification_threshold_lets_most_of_one_person_through() -> None:
    rng = np.random.default_rng(0)
    same, other = rng.uniform(0, 1, 10_000), rng.uniform(3, 4, 10_000)
    assert verification_threshold(same, other) == pytest.approx(0.99, abs=0.01)
    overlap = verification_threshold(rng.uniform(0, 2, 10_000), rng.uniform(1, 3, 10_000))
    assert 1.0 < overlap < 2.0, "overlapping: halfway between the two quantiles"


# ---- the feature net ----------------------------------------------------------------------------
Features = tuple[WorldFeatureNet, dict[str, Any]]


@pytest.fixture(scope="module")
def features() -> Features:
    loaded = load_features()
    if loaded is None:
        pytest.skip("no feature-net weights (unison-stream train features)")
    return loaded


def test_feature_net_tells_two_people_apart_better_than_frames_of_one(features: Features) -> None:
    net, meta = features
    people = _people(6, seed=4)
    frames = [_render(p, 10, seed=k) for k, p in enumerate(people)]
    for space in (embed, identity_embedding):
        e = [space(net, f) for f in frames]
        within = np.mean([np.linalg.norm(x - x.mean(0), axis=1).mean() for x in e])
        centres = np.stack([x.mean(0) for x in e])
        between = np.linalg.norm(centres[:, None] - centres[None], axis=-1)[np.triu_indices(6, 1)]
        assert between.min() > 2 * within, (space.__name__, between.min(), within)
    ids = [identity_embedding(net, f) for f in frames]
    refs = np.stack([x.mean(0) for x in ids])  # each person as their frames show them
    tau = meta["verify_threshold"]
    for k, x in enumerate(ids):
        assert verify(x, refs[k], np.delete(refs, k, 0), threshold=tau, fps=25.0).verified
        wrong = verify(x, refs[(k + 1) % 6], np.delete(refs, (k + 1) % 6, 0), threshold=tau, fps=25)
        assert not wrong.verified, "a person is not verified as someone else"


def test_fid_world_sees_blur_and_fading(features: Features) -> None:
    net, _ = features
    people = _people(8, seed=5)
    a = np.concatenate([_render(p, 12, seed=k) for k, p in enumerate(people)])
    b = np.concatenate([_render(p, 12, seed=100 + k) for k, p in enumerate(people)])
    ea, eb = embed(net, a), embed(net, b)
    base = frechet_distance(eb, ea)
    blurred = frechet_distance(embed(net, _blur(b, 1.5)), ea)
    faded = np.concatenate([_faded(b[12 * k : 12 * (k + 1)], p) for k, p in enumerate(people)])
    assert blurred > 2 * base and frechet_distance(embed(net, faded), ea) > 2 * base


# ---- codec and grid -----------------------------------------------------------------------------
def test_codec_round_trip_keeps_the_frame_count_and_softens() -> None:
    codec = CodecRoundTrip(load_config("tiny", []))
    if not codec.available:
        pytest.skip("no trained video codec weights")
    p = _people(1, seed=6)[0]
    frames = _render(p, 5, seed=0)  # odd: one frame of padding to a whole latent frame
    out = codec(frames)
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - frames).mean() < 20, "a reconstruction, not noise"
    assert sharpness([(out, _layout(p))]) < sharpness([(frames, _layout(p))])


def test_grid_is_written_with_every_cell(tmp_path: Path) -> None:
    p = _people(2, seed=7)
    gen, gt = _render(p[0], 3, seed=0), _render(p[1], 3, seed=1)
    rows = [
        GridRow("text mode", tuple(GridCell(f"{k} s", gen[k], gt[k]) for k in range(3))),
        GridRow("stream", tuple(GridCell(f"{k} s", gen[k], gt[0]) for k in range(2))),
    ]
    path = write_grid(tmp_path / "sub" / "grid.png", rows)
    img = np.asarray(Image.open(path).convert("RGB"))
    h, w = CFG.height, CFG.width
    row_h = TITLE_H + CAPTION_H + h + PAD
    cell_w = 2 * w + PAD
    assert img.shape == (PAD + 2 * row_h, 2 * PAD + 3 * cell_w + 2 * GAP, 3)
    y, x = PAD + TITLE_H + CAPTION_H, PAD
    assert np.array_equal(img[y : y + h, x : x + w], gen[0]), "generated on the left"
    assert np.array_equal(img[y : y + h, x + w + PAD : x + 2 * w + PAD], gt[0]), "truth right"
    y2 = y + row_h
    x3 = PAD + 2 * (cell_w + GAP)
    assert (img[y2 : y2 + h, x3 : x3 + 2 * w] == 255).all(), "a short row leaves blank space"


def _vp8(frames: np.ndarray, kbps: int) -> np.ndarray:
    """A libvpx (VP8) round trip at ``kbps``, as a WebRTC viewer's frames go through one."""
    import io

    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="webm") as out:
        s = out.add_stream("libvpx", rate=25)
        s.width, s.height, s.pix_fmt, s.bit_rate = (
            frames.shape[2],
            frames.shape[1],
            "yuv420p",
            kbps * 1000,
        )
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    buf.seek(0)
    with av.open(buf, "r") as inp:
        return np.stack([fr.to_ndarray(format="rgb24") for fr in inp.decode(video=0)])


def test_the_mouth_head_reads_lip_sync_through_blur_and_a_vp8_round_trip(
    features: Features,
) -> None:
    from unison_stream.eval.features import mouth_open
    from unison_stream.eval.lipsync import lip_sync

    rng = np.random.default_rng(3)
    person = _people(1, seed=9)[0]
    r = FaceRenderer(
        person, width=CFG.width, height=CFG.height, supersample=CFG.supersample, props=[]
    )
    visemes = [VISEMES[int(rng.integers(len(VISEMES)))] for _ in range(60)]
    jaw = np.array([VISEME_POSES[v][0] for v in visemes], np.float32)  # (F,) the truth
    frames = np.stack([r.render(FaceState(mouth=VISEME_POSES[v])) for v in visemes])
    seen = _vp8(_blur(frames, 2.0), 150)
    head = mouth_open(features[0], seen)
    assert head.shape == (60,) and np.corrcoef(head, jaw)[0, 1] > 0.95
    # speech whose loudness follows the jaw: in sync reads 0 ms, 3 frames late reads +120 ms
    spf = 640
    noise = rng.standard_normal(60 * spf).astype(np.float32)
    for shift, want in ((0, 0.0), (3, 120.0)):
        env = np.repeat(np.roll(jaw, shift), spf)
        if shift:
            env[: shift * spf] = 0.0
        ls = lip_sync(seen, noise * (0.05 + env), 16000, 25.0, mouth=head)
        assert ls.lag is not None and abs(ls.offset_ms - want) <= 20.0, (shift, ls)


def _ghost(frames: np.ndarray, dx: int, dy: int, weight: float = 0.5) -> np.ndarray:
    """Each frame blended with a copy of itself shifted by ``(dx, dy)`` px: a doubled face."""
    shifted = np.roll(frames, (dy, dx), axis=(1, 2)).astype(np.float32)
    return (weight * frames + (1 - weight) * shifted).round().astype(np.uint8)


def test_ghosting_is_low_on_clear_faces_and_high_on_doubled_or_faded_ones() -> None:
    people = _people(6, seed=3)
    clear = [
        float(ghosting(_render(p, 8, seed=k), _layout(p)).mean()) for k, p in enumerate(people)
    ]
    assert max(clear) < 0.1, f"the world's own frames have little energy on bare skin: {clear}"
    for k, p in enumerate(people):
        frames, layout = _render(p, 8, seed=k), _layout(p)
        base = float(ghosting(frames, layout).mean())
        doubled = float(ghosting(_ghost(frames, 0, 9), layout).mean())  # eyes on the cheeks
        assert doubled > 2 * base + 0.05, (k, base, doubled)
        faded = float(ghosting(_faded(frames, p, keep=0.3), layout).mean())
        assert faded >= base, "washed-out features do not read as clearer"
        blurred = float(ghosting(_blur(frames, 0.7), layout).mean())
        assert blurred < 1.5 * base + 0.02, "a soft but single face is not a ghost"
