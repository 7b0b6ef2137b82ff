"""Media file helpers (PyAV): write an mp4 with H.264 video and AAC audio, read one back.

File I/O lives here, apart from the sans-I/O model and engine (STYLE.md: device and file helpers
live apart).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = ["probe_duration", "write_mp4"]


def write_mp4(
    path: str | Path,
    frames: np.ndarray,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    *,
    crf: int = 20,
) -> Path:
    """Write frames (T, H, W, 3) uint8 and mono audio (S,) float in [-1, 1] to an mp4.

    Video is H.264 (yuv420p), audio AAC; both streams start at 0 on their own clocks.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as out:
        vs = out.add_stream("libx264", rate=rate)
        vs.width, vs.height = frames.shape[2], frames.shape[1]
        vs.pix_fmt = "yuv420p"
        vs.options = {"crf": str(crf), "preset": "veryfast"}
        ast = None
        if audio is not None:
            ast = out.add_stream("aac", rate=sample_rate)
            ast.layout = "mono"
        for i, img in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = i
            out.mux(vs.encode(vf))
        out.mux(vs.encode(None))
        if ast is not None and audio is not None:
            pcm = np.clip(audio.astype(np.float32), -1.0, 1.0)
            step = 1024  # AAC frame size
            for start in range(0, len(pcm), step):
                block = pcm[start : start + step]
                af = av.AudioFrame.from_ndarray(block[None, :], format="fltp", layout="mono")
                af.sample_rate = sample_rate
                af.pts = start
                out.mux(ast.encode(af))
            out.mux(ast.encode(None))
    return path


def probe_duration(path: str | Path) -> dict[str, float]:
    """Decode a file and return the duration of its video and audio in seconds."""
    out: dict[str, float] = {}
    with av.open(str(path)) as c:
        if c.streams.video:
            vs = c.streams.video[0]
            n = sum(1 for _ in c.decode(vs))
            out["video"] = n / float(vs.average_rate or 1)
        if c.streams.audio:
            c.seek(0)
            ast = c.streams.audio[0]
            samples = sum(f.samples for f in c.decode(ast))
            out["audio"] = samples / float(ast.sample_rate or 1)
    return out
