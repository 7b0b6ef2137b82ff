"""The manifest loader reads real clips (mp4/wav through PyAV) into the same batches as synthetic
ones, and every broken row fails with an error naming the manifest line and row id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch

from unison_stream.data.errors import ManifestError
from unison_stream.data.loader import ManifestDataset, collate
from unison_stream.data.preview import write_mp4
from unison_stream.vocab import SILENCE_ID, event_id, phoneme_id

FPS, SR, SPF = 25.0, 16000, 640


def _frames(n: int, size: int = 128) -> np.ndarray:
    f = np.zeros((n, size, size, 3), np.uint8)
    for i in range(n):
        f[i, :, : (i * 7) % size] = (200, 80, 40)  # a moving edge
    return f


def _tone(n: int, hz: float = 440.0, sr: int = SR) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * hz * np.arange(n) / sr)).astype(np.float32)


def _wav(path: Path, x: np.ndarray, sr: int = SR) -> None:
    with av.open(str(path), "w", format="wav") as c:
        s = c.add_stream("pcm_s16le", rate=sr, layout="mono")
        fr = av.AudioFrame.from_ndarray(
            (x * 32767).astype(np.int16)[None, :], format="s16", layout="mono"
        )
        fr.sample_rate = sr
        c.mux(s.encode(fr))
        c.mux(s.encode(None))


def _video_only(path: Path, frames: np.ndarray, fps: int = 25) -> None:
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for img in frames:
            c.mux(v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(v.encode(None))


def _manifest(root: Path, rows: list[Any]) -> Path:
    path = root / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def real(tmp_path: Path) -> Path:
    write_mp4(tmp_path / "a.mp4", _frames(20), _tone(20 * SPF), fps=FPS, sample_rate=SR)
    _wav(tmp_path / "a_speech.wav", _tone(20 * SPF, 220.0))
    _video_only(tmp_path / "b.mp4", _frames(12, 96))  # other size: resized on load
    _wav(tmp_path / "b.wav", _tone(12 * SPF - 100))  # a little short: padded
    return tmp_path


def test_real_clips_give_the_synthetic_batch_structure(real: Path) -> None:
    rows = [
        {
            "id": "a",
            "split": "test",
            "video": "a.mp4",
            "stems": {"speech": "a_speech.wav"},
            "transcript": "hi <clap>",
            "caption": "a test card",
            "phonemes": [
                {"label": "h", "start": 0.0, "end": 0.1},
                {"label": "aI", "start": 0.1, "end": 0.3},
                {"label": "_", "start": 0.3, "end": 0.8},
            ],
            "events": [{"name": "clap", "audio_onset": 0.4}],
        },
        {"id": "b", "video": "b.mp4", "audio": "b.wav", "transcript": "", "caption": ""},
    ]
    ds = ManifestDataset(_manifest(real, rows))
    a, b = ds[0], ds[1]
    assert a.frames.shape == (20, 128, 128, 3) and a.frames.dtype == np.uint8
    assert a.audio.shape == (20 * SPF,) and a.audio.dtype == np.float32
    # AAC round trip keeps the tone (allow its priming delay): correlation with the source
    src = _tone(20 * SPF)
    best = max(float(np.dot(a.audio[k:], src[: len(src) - k])) for k in range(0, 2048, 8))
    assert best > 0.8 * float(np.dot(src, src))
    assert set(a.stems) == {"speech"} and a.stems["speech"].shape == (20 * SPF,)
    assert a.track_ids.tolist() == [
        phoneme_id("h"),
        phoneme_id("aI"),
        SILENCE_ID,
        event_id("clap"),
    ]
    np.testing.assert_allclose(a.track_times[-1], [0.4, 0.44], atol=1e-6)  # onset + one frame
    assert b.frames.shape == (12, 128, 128, 3) and b.audio.shape == (12 * SPF,)
    assert b.stems == {} and len(b.track_ids) == 0
    batch = collate([a, b])
    assert batch["frames"].shape == (2, 20, 128, 128, 3)
    assert batch["frame_mask"].sum(1).tolist() == [20, 12]
    assert batch["audio"].shape == (2, 20 * SPF) and batch["audio"].dtype == torch.float32
    assert batch["stem_mask"]["speech"].tolist() == [True, False]
    assert batch["stem_mask"]["sfx"].tolist() == [False, False]
    assert batch["track_mask"].sum(1).tolist() == [4, 0]


def test_missing_file_names_the_row(real: Path) -> None:
    rows = [
        {"id": "ok", "video": "a.mp4"},
        {"id": "lost", "video": "a.mp4", "stems": {"sfx": "nowhere.wav"}},
    ]
    with pytest.raises(ManifestError, match=r"manifest.jsonl:2: row 'lost': stem 'sfx' file"):
        ManifestDataset(_manifest(real, rows))


def test_wrong_audio_rate_names_the_row(real: Path) -> None:
    _wav(real / "fast.wav", _tone(8000, sr=22050), sr=22050)
    ds = ManifestDataset(_manifest(real, [{"id": "r22k", "video": "b.mp4", "audio": "fast.wav"}]))
    with pytest.raises(ManifestError, match=r":1: row 'r22k': audio fast.wav: audio is 22050 Hz"):
        ds[0]


def test_wrong_frame_rate_names_the_row(real: Path) -> None:
    _video_only(real / "c.mp4", _frames(6), fps=30)
    ds = ManifestDataset(_manifest(real, [{"id": "v30", "video": "c.mp4", "audio": "b.wav"}]))
    with pytest.raises(ManifestError, match=r"row 'v30': c.mp4: video is 30 fps, expected 25"):
        ds[0]
    with pytest.raises(ManifestError, match=r"row 'meta': fps is 30, expected 25"):
        ManifestDataset(_manifest(real, [{"id": "meta", "video": "a.mp4", "fps": 30}]))


def test_no_audio_names_the_row(real: Path) -> None:
    ds = ManifestDataset(_manifest(real, [{"id": "mute", "video": "b.mp4"}]))
    with pytest.raises(ManifestError, match=r"row 'mute': audio b.mp4: no audio stream"):
        ds[0]


def test_bad_json_and_unknown_event_name_the_line(real: Path) -> None:
    (real / "bad.jsonl").write_text('{"id": "x", "video": "a.mp4"}\n{oops\n')
    with pytest.raises(ManifestError, match=r"bad.jsonl:2: row '\?': not JSON"):
        ManifestDataset(real / "bad.jsonl")
    rows = [{"id": "e", "video": "a.mp4", "events": [{"name": "wave", "audio_onset": 0.1}]}]
    with pytest.raises(ManifestError, match=r"row 'e': unknown event 'wave'"):
        ManifestDataset(_manifest(real, rows))
