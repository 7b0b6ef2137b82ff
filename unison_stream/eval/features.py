"""A feature space learned from the synthetic world's ground truth (``docs/eval-measures.md``,
"Visual quality"): the world's analogue of the Inception features behind FID (Heusel et al.,
2017, "GANs Trained by a Two Time-Scale Update Rule…") and of a face-recognition embedding.

:class:`WorldFeatureNet` is a five-layer strided CNN (107 k parameters, 221 kB in fp16) that
reads one 128² frame and predicts, through linear heads on one ``D``-wide **embedding**, every
label the world knows of the frame (:data:`HEADS`): the identity's nine traits and two face
proportions, the viseme and mouth opening, blinking, and the gesture's class and phase. So the
embedding must see the person's colours *and* the small parts — eye colour, eyes open or shut,
the mouth's shape — that a blurred or faded frame loses.

**Training** (``unison-stream train features``, :mod:`.features_train`): ground-truth frames
only — every 2nd frame of the world's **train** split (318 clips, 14,984 frames with every
blink) plus 10,000 more people drawn and rendered by the world's own generator (2 frames
each; no val or test identity among them). Nothing made by a model, nothing held out. The
bundled ``weights/features.safetensors`` took 9.1 minutes on one shared core (the 9-minute
guard stopped it at step 2944 of 3200). Held out — the **val** split, 42 clips of people
never trained on, 1,970 frames — as stored in the file's metadata: face shape 0.97, skin
1.00, hair style 0.97, hair colour 0.79 (a bald head shows none), eye colour 0.90, clothes
1.00, clothes colour 1.00, background 1.00, background colour 1.00; viseme 0.68 (the most
common class is 0.39 of frames), blink 0.86 (balanced), gesture 0.86, gesture phase 0.90;
mean absolute errors: eye spacing 0.006 (range 0.38–0.48), mouth width 0.021 (0.36–0.48),
mouth opening 0.019 (0–1).

**Identity.** :func:`identity_embedding` keeps the nine trait heads' probabilities (a
``(F, 66)`` vector): frames of one person lie near each other, different people ≥ 2.9 apart
(1st percentile on val), and a person whose eyes smear loses the eye-colour head first. The
file also stores ``verify_threshold`` (0.60): the 99th percentile of val frames' distances
to their own person's mean vector (:func:`~.visual.verification_threshold`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = [
    "HEADS",
    "IDENTITY_HEADS",
    "WEIGHTS",
    "FeatureConfig",
    "WorldFeatureNet",
    "embed",
    "identity_embedding",
    "load_features",
    "mouth_open",
    "save_features",
]

WEIGHTS = Path(__file__).resolve().parent / "weights" / "features.safetensors"

# Every label the world knows of a frame: name → classes (0: a regression to one number).
# Identity traits first (palette sizes, data/synth/identity.py), then the frame's state.
HEADS: dict[str, int] = {
    "face_shape": 6,
    "skin": 8,
    "hair_style": 8,
    "hair_color": 9,
    "eye_color": 6,
    "clothes": 5,
    "clothes_color": 10,
    "background": 6,
    "background_color": 8,
    "eye_spacing": 0,
    "mouth_width": 0,
    "viseme": 15,  # data/synth/visemes.py VISEMES, under the frame's centre
    "mouth_open": 0,  # the renderer's jaw opening 0..1
    "blink": 2,  # eyes shut (measure.eye_openness < 0.35)
    "gesture": 6,  # none, then vocab.EVENT_CLASSES
    "gesture_phase": 3,  # rest, approach (up to contact), retract
}
IDENTITY_HEADS: tuple[str, ...] = tuple(list(HEADS)[:9])


@dataclass(frozen=True)
class FeatureConfig:
    """Shape of :class:`WorldFeatureNet`."""

    channels: tuple[int, ...] = (16, 32, 48, 64, 64)  # each layer halves the side: 128 → 4
    pool: int = 2  # the 4 × 4 map averaged to 2 × 2 quadrants: a flat 4 × 4 read-out (4× the
    # weights) memorised the ~300 training identities instead of their traits (val accuracy of
    # eye colour 0.27 vs 0.41, face shape 0.53 vs 0.61)
    embed_dim: int = 64  # FID's feature width; ≥ the 44 classes + 3 numbers the heads read
    size: int = 128  # input side (the world's frames)


class WorldFeatureNet(nn.Module):
    """Frames → embedding and per-label logits.

    ``forward(frames (B, H, W, 3) uint8)`` → ``(embedding (B, D), {head: (B, classes or 1)})``.
    """

    def __init__(self, cfg: FeatureConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or FeatureConfig()
        layers: list[nn.Module] = []
        cin = 3
        for i, c in enumerate(cfg.channels):
            k = 4 if i == 0 else 3  # the first layer sees every pixel of its 2 × 2 output cell
            layers += [nn.Conv2d(cin, c, k, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
            cin = c
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(cfg.pool), nn.Flatten())
        self.embed = nn.Linear(cin * cfg.pool * cfg.pool, cfg.embed_dim)
        self.heads = nn.ModuleDict(
            {k: nn.Linear(cfg.embed_dim, max(1, n)) for k, n in HEADS.items()}
        )

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = frames.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)  # (B, 3, H, W) in [-1, 1]
        e = self.embed(self.body(x))  # (B, C·pool²) → (B, D)
        return e, {k: h(e) for k, h in self.heads.items()}


def save_features(net: WorldFeatureNet, path: Path, meta: dict[str, Any]) -> Path:
    """Write ``net`` as fp16 safetensors; ``meta`` (JSON-able: accuracies, threshold) rides in
    the file's metadata beside the config."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in net.state_dict().items()}
    header = {"config": json.dumps(asdict(net.cfg)), "meta": json.dumps(meta)}
    save_file(tensors, str(path), metadata=header)
    return path


def load_features(path: Path | None = None) -> tuple[WorldFeatureNet, dict[str, Any]] | None:
    """The trained net (fp32, eval mode) and its metadata, or None when the file is absent."""
    path = path or WEIGHTS
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
    cfg = json.loads(header["config"])
    net = WorldFeatureNet(FeatureConfig(**{**cfg, "channels": tuple(cfg["channels"])}))
    net.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return net.eval(), json.loads(header.get("meta", "{}"))


@torch.inference_mode()
def _run(net: WorldFeatureNet, frames: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """``(F, H, W, 3)`` uint8 → embeddings ``(F, D)`` and identity vectors ``(F, 66)``."""
    embs, ids = [], []
    for i in range(0, len(frames), batch):
        e, logits = net(torch.from_numpy(np.ascontiguousarray(frames[i : i + batch])))
        embs.append(e.numpy())
        ids.append(torch.cat([logits[k].softmax(-1) for k in IDENTITY_HEADS], -1).numpy())
    d = net.cfg.embed_dim
    width = sum(HEADS[k] for k in IDENTITY_HEADS)
    return (
        np.concatenate(embs) if embs else np.zeros((0, d), np.float32),
        np.concatenate(ids) if ids else np.zeros((0, width), np.float32),
    )


def embed(net: WorldFeatureNet, frames: np.ndarray, *, batch: int = 256) -> np.ndarray:
    """``(F, H, W, 3)`` uint8 → ``(F, D)`` float32 embeddings (FID's feature space)."""
    return _run(net, frames, batch)[0]


def identity_embedding(net: WorldFeatureNet, frames: np.ndarray, *, batch: int = 256) -> np.ndarray:
    """``(F, H, W, 3)`` uint8 → ``(F, 66)``: the nine identity heads' class probabilities side
    by side. Euclidean distance ≈ √(2 · traits that differ) between confident predictions."""
    return _run(net, frames, batch)[1]


def mouth_open(net: WorldFeatureNet, frames: np.ndarray, *, batch: int = 256) -> np.ndarray:
    """``(F, H, W, 3)`` uint8 → ``(F,)``: the mouth-opening head (the renderer's jaw opening,
    0..1). A mouth signal for lip-sync that reads the mouth's shape, not its interior colour,
    so blur and lossy video codecs move it less than the colour detector
    (:func:`~unison_stream.data.synth.measure.mouth_opening`)."""
    out = []
    with torch.no_grad():
        for i in range(0, len(frames), batch):
            _, logits = net(torch.from_numpy(np.ascontiguousarray(frames[i : i + batch])))
            out.append(logits["mouth_open"].reshape(-1).float().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)
