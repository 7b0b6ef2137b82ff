"""A wheel of the project carries what an installed copy needs at run time: the presets, the
bundled weights and the page (a wheel install used to find no presets, issue 15)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_has_presets_weights_and_page(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp_path)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("unison_stream-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for preset in (ROOT / "unison_stream" / "configs").glob("*.yaml"):
        assert f"unison_stream/configs/{preset.name}" in names
    for need in (
        "unison_stream/model/weights/tiny.safetensors",
        "unison_stream/codecs/weights/video.safetensors",
        "unison_stream/eval/weights/features.safetensors",
        "unison_stream/server/static/app.js",
        "unison_stream/py.typed",
    ):
        assert need in names, need
