"""``eval --grid PATH``: a PNG of generated frames beside ground truth (``docs/eval.md``).

Rows of cells; each cell is a generated frame with the ground-truth frame it should look like
to its right, under a one-line caption. Frames are pasted at their own size (no resampling).
:func:`grid_image` builds the picture (no I/O), :func:`write_grid` saves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["GridCell", "GridRow", "grid_image", "write_grid"]

PAD = 4  # pixels around the picture and between a cell's two frames
GAP = 12  # pixels between cells
CAPTION_H = 14  # caption strip above each cell
TITLE_H = 16  # row title strip
FONT_PX = 11
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)


@dataclass(frozen=True)
class GridCell:
    caption: str
    generated: np.ndarray  # (H, W, 3) uint8
    truth: np.ndarray  # (H, W, 3) uint8, same size


@dataclass(frozen=True)
class GridRow:
    title: str
    cells: tuple[GridCell, ...]


def grid_image(rows: list[GridRow]) -> Image.Image:
    """The picture: one titled row per :class:`GridRow`, cells left to right."""
    assert rows and all(r.cells for r in rows), "a grid needs rows of cells"
    h, w = rows[0].cells[0].generated.shape[:2]
    for cell in (c for r in rows for c in r.cells):
        assert cell.generated.shape == cell.truth.shape == (h, w, 3), "cells of one frame size"
    cols = max(len(r.cells) for r in rows)
    cell_w = 2 * w + PAD
    width = 2 * PAD + cols * cell_w + (cols - 1) * GAP
    row_h = TITLE_H + CAPTION_H + h + PAD
    img = Image.new("RGB", (width, PAD + len(rows) * row_h), BACKGROUND)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=FONT_PX)
    for i, row in enumerate(rows):
        top = PAD + i * row_h
        draw.text((PAD, top + 2), row.title, fill=INK, font=font)
        for j, cell in enumerate(row.cells):
            x = PAD + j * (cell_w + GAP)
            draw.text((x, top + TITLE_H + 1), cell.caption, fill=INK, font=font)
            y = top + TITLE_H + CAPTION_H
            img.paste(Image.fromarray(cell.generated), (x, y))
            img.paste(Image.fromarray(cell.truth), (x + w + PAD, y))
    return img


def write_grid(path: Path, rows: list[GridRow]) -> Path:
    """Save :func:`grid_image` of ``rows`` as PNG at ``path`` (folders made as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    grid_image(rows).save(path, format="PNG", optimize=True)
    return path
