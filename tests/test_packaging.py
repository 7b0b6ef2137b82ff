"""What a wheel of the project carries and what a plain install pulls in.

A wheel holds what an installed copy needs at run time: the presets, the bundled weights and the
page (a wheel install used to find no presets), and nothing else from the weights
folders (no training logs, curves or superseded stages). The base dependencies are what
``unison-stream serve`` runs on; evaluation, training plots, MQTT and Ray Serve are extras, and
an import of theirs without the extra fails with an error that names it.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from unison_stream.errors import MissingExtraError
from unison_stream.extras import EXTRAS, require

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
WEIGHT_DIRS = ("codecs/weights", "model/weights", "eval/weights")
# packages only an extra brings, by the extra that brings them
OPTIONAL = {
    "pocketsphinx": "eval",
    "matplotlib": "train",
    "aiomqtt": "mqtt",
    "ray": "cluster",
    "pipecat": "pipecat",
}


def _requirement_name(req: str) -> str:
    """``"ray[serve]>=2.60,<3"`` → ``"ray"``."""
    for stop in "[<>=!~; ":
        req = req.split(stop, 1)[0]
    return req.strip().lower()


# ---- the wheel --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The file names in a wheel built from a copy of the working tree (a copy, so that no
    stale ``build/`` of the checkout can leak files into it, and the checkout stays clean;
    about 6 s on 2 cores, so not marked slow)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "unison_stream",
        src / "unison_stream",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(out)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = out.glob("unison_stream-*.whl")
    return set(zipfile.ZipFile(wheel).namelist())


def test_wheel_has_presets_weights_and_page(wheel_names: set[str]) -> None:
    for preset in (ROOT / "unison_stream" / "configs").glob("*.yaml"):
        assert f"unison_stream/configs/{preset.name}" in wheel_names
    for need in (
        "unison_stream/model/weights/tiny.safetensors",
        "unison_stream/codecs/weights/video.safetensors",
        "unison_stream/codecs/weights/audio.safetensors",
        "unison_stream/eval/weights/features.safetensors",
        "unison_stream/engine/weights/frontend.safetensors",
        "unison_stream/engine/weights/frontend.json",
        "unison_stream/server/static/app.js",
        "unison_stream/py.typed",
    ):
        assert need in wheel_names, need


def test_wheel_carries_the_weights_and_no_training_records(wheel_names: set[str]) -> None:
    records = sorted(n for n in wheel_names if n.endswith((".jsonl", ".png")))
    assert not records, f"training logs or curves in the wheel: {records}"
    for folder in WEIGHT_DIRS:
        shipped = {n for n in wheel_names if n.startswith(f"unison_stream/{folder}/")}
        in_repo = {
            f"unison_stream/{folder}/{p.name}"
            for p in (ROOT / "unison_stream" / folder).glob("*.safetensors")
        }
        assert shipped == in_repo, f"{folder}: the loaders read only the .safetensors files"
    # the logs stay in the repo, for the docs that cite them
    assert (ROOT / "unison_stream/model/weights/tiny_train_log.jsonl").is_file()


# ---- the dependencies -------------------------------------------------------------------------


def test_base_dependencies_name_no_optional_package() -> None:
    base = {_requirement_name(r) for r in PYPROJECT["dependencies"]}
    for banned in ("matplotlib", "pocketsphinx", "ray", "pipecat-ai", "aiomqtt", "sounddevice"):
        assert banned not in base, f"{banned} is a base dependency; it belongs in an extra"


def test_the_server_depends_on_the_sdk_it_imports() -> None:
    """The server speaks the protocol of ``unison_sdk.protocol``: a plain install of
    unison-stream must pull the SDK in, under the name the SDK's own pyproject gives it."""
    sdk = tomllib.loads((ROOT / "sdk" / "pyproject.toml").read_text())["project"]
    base = {_requirement_name(r) for r in PYPROJECT["dependencies"]}
    assert sdk["name"] in base, f"{sdk['name']} is imported by the server but not a dependency"
    server_imports = {
        line.split()[1].split(".")[0]
        for path in (ROOT / "unison_stream").rglob("*.py")
        for line in path.read_text().splitlines()
        if line.startswith(("from unison_sdk", "import unison_sdk"))
    }
    assert server_imports == {"unison_sdk"}


def test_every_extra_exists_and_dev_pulls_them_all() -> None:
    extras = PYPROJECT["optional-dependencies"]
    assert set(EXTRAS) | {"pipecat"} <= set(extras)
    for package, extra in OPTIONAL.items():
        names = {_requirement_name(r) for r in extras[extra]}
        assert package in names or f"{package}-ai" in names, (package, extra)
    (self_ref,) = [r for r in extras["dev"] if _requirement_name(r) == PYPROJECT["name"]]
    pulled = set(self_ref.split("[", 1)[1].split("]", 1)[0].split(","))
    assert set(OPTIONAL.values()) <= pulled, "`make test` installs .[dev]: it needs every extra"


def test_startup_paths_import_no_optional_package() -> None:
    """The CLI (every subcommand registered), the server, the engine and the SDK import with
    every optional package absent."""
    code = (
        "import sys\n"
        f"for name in {[*sorted(OPTIONAL), 'sounddevice']!r}: sys.modules[name] = None\n"
        "from unison_stream.cli import build_parser\n"
        "build_parser()\n"
        "import unison_stream.engine, unison_stream.server.app, unison_sdk\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]


# ---- the error that names the extra -----------------------------------------------------------


def test_require_returns_the_module() -> None:
    assert require("json", "eval") is importlib.import_module("json")


def test_require_names_the_extra_to_install() -> None:
    with pytest.raises(MissingExtraError) as info:
        require("unison_stream_no_such_module", "mqtt")
    e = info.value
    assert isinstance(e, ImportError)  # `except ImportError` keeps catching it
    assert (e.name, e.extra) == ("unison_stream_no_such_module", "mqtt")
    assert "needs the 'mqtt' extra" in str(e)
    assert "pip install 'unison-stream[mqtt]'" in str(e)
    assert "unison_stream_no_such_module" in str(e)  # the original error is quoted
    assert isinstance(e.__cause__, ModuleNotFoundError)


# each way into an optional package: (tmp dir, monkeypatch) → uses it


def _sentence_id(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unison_stream.codecs.sentence_id import SentenceIdentifier

    SentenceIdentifier(["hello there"])


def _training_curves(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unison_stream.training.trainer import plot_curves

    plot_curves([{"step": 1, "loss": 1.0}], tmp / "curves.png")


def _codec_curves(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unison_stream.training.codec import _plot

    _plot({"train_step": [1], "train_loss": [1.0], "val_step": [1], "val": {"l1": [1.0]}},
          tmp / "loss.png")  # fmt: skip


def _fresh_import(module: str) -> Callable[[Path, pytest.MonkeyPatch], None]:
    def run(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in [m for m in sys.modules if m == module or m.startswith(f"{module}.")]:
            monkeypatch.delitem(sys.modules, name)  # imported anew; put back after the test
        importlib.import_module(module)

    return run


@pytest.mark.parametrize(
    ("absent", "extra", "use"),
    [
        ("pocketsphinx", "eval", _sentence_id),
        ("matplotlib", "train", _training_curves),
        ("matplotlib", "train", _codec_curves),
        ("aiomqtt", "mqtt", _fresh_import("unison_stream.mqtt")),
        ("ray", "cluster", _fresh_import("unison_stream.cluster.ray_serve")),
    ],
    ids=["sentence-id", "train-curves", "codec-curves", "mqtt-bridge", "ray-serve"],
)
def test_each_optional_import_names_its_extra(
    absent: str,
    extra: str,
    use: Callable[[Path, pytest.MonkeyPatch], None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, absent, None)  # how Python marks a module unimportable
    with pytest.raises(MissingExtraError, match=rf"pip install 'unison-stream\[{extra}\]'"):
        use(tmp_path, monkeypatch)
