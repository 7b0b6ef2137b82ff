"""Preview a clip: an mp4 with sound (H.264 + AAC through PyAV) and a PNG contact sheet.

The contact sheet shows evenly spaced frames (frame number and time under each; frames that
show an event's contact are outlined in red) above the mix waveform, with the speech envelope
and each event's audio onset marked.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

from unison_stream.data.loader import Sample

__all__ = ["contact_sheet", "write_mp4"]

AUDIO_BLOCK = 1024  # AAC encodes fixed blocks of 1024 samples


def write_mp4(
    path: str | Path, frames: np.ndarray, audio: np.ndarray, *, fps: float, sample_rate: int
) -> None:
    """Encode ``frames`` (F, H, W, 3) uint8 and mono ``audio`` (S,) float32 to an mp4."""
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        v.width, v.height = frames.shape[2], frames.shape[1]
        v.pix_fmt = "yuv420p"
        v.options = {"crf": "18", "preset": "veryfast"}
        a = c.add_stream("aac", rate=sample_rate, layout="mono")
        for img in frames:
            c.mux(v.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")))
        c.mux(v.encode(None))
        x = np.clip(audio, -1, 1).astype(np.float32)
        for start in range(0, len(x), AUDIO_BLOCK):
            block = x[start : start + AUDIO_BLOCK]
            fr = av.AudioFrame.from_ndarray(block[None, :], format="fltp", layout="mono")
            fr.sample_rate, fr.pts = sample_rate, start
            c.mux(a.encode(fr))
        c.mux(a.encode(None))


def contact_sheet(
    sample: Sample, *, fps: float, sample_rate: int, columns: int = 8, rows: int = 3
) -> Image.Image:
    """A PNG-ready image of ``columns × rows`` frames over the waveform."""
    f, h, w, _ = sample.frames.shape
    picks = np.linspace(0, f - 1, min(f, columns * rows)).round().astype(int)
    contacts = {
        int(e["contact_frame"]) for e in sample.row.get("events") or [] if "contact_frame" in e
    }
    for c in contacts:  # show every contact frame: it replaces the nearest evenly spaced pick
        if 0 <= c < f:
            picks[int(np.abs(picks - c).argmin())] = c
    picks = np.unique(picks)
    label_h, wave_h = 14, 90
    grid_rows = (len(picks) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * w, grid_rows * (h + label_h) + wave_h), (255, 255, 255))
    d = ImageDraw.Draw(sheet)
    for k, fi in enumerate(picks):
        x, y = (k % columns) * w, (k // columns) * (h + label_h)
        sheet.paste(Image.fromarray(sample.frames[fi]), (x, y))
        if int(fi) in contacts:
            d.rectangle((x, y, x + w - 1, y + h - 1), outline=(230, 0, 0), width=2)
        d.text((x + 2, y + h + 1), f"{fi} · {fi / fps:.2f}s", fill=(0, 0, 0))
    top, width = grid_rows * (h + label_h), columns * w
    mid = top + wave_h // 2
    audio = sample.audio
    cols = np.array_split(np.abs(audio), width)
    peak = max(1e-6, float(np.abs(audio).max()))
    for x, col in enumerate(cols):
        amp = (float(col.max()) if len(col) else 0.0) / peak * (wave_h // 2 - 4)
        d.line((x, mid - amp, x, mid + amp), fill=(60, 90, 160))
    for e in sample.row.get("events") or []:
        x = int(float(e["audio_onset"]) * sample_rate / max(1, len(audio)) * width)
        d.line((x, top, x, top + wave_h), fill=(230, 0, 0), width=2)
        d.text((x + 3, top + 2), str(e["name"]), fill=(230, 0, 0))
    d.text((4, top + wave_h - 14), sample.transcript[: width // 6], fill=(0, 0, 0))
    return sheet
