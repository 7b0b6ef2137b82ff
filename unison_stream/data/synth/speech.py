"""Speech from espeak-ng through ``libespeak-ng`` (ctypes), with exact phoneme and word times.

The library runs in ``AUDIO_OUTPUT_SYNCHRONOUS`` mode with phoneme events enabled
(``espeak_Initialize(..., options=1)``). Its synthesis callback hands over 16-bit audio blocks
and an event list; ``espeakEVENT_PHONEME`` carries the phoneme mnemonic (``id.string``) and
``espeakEVENT_WORD`` the word's character span, both with their sample index in the output.
A phoneme ends where the next one starts. Audio is resampled from espeak's 22050 Hz to the
world's rate with a polyphase filter (which has no delay, so times carry over unchanged).

libespeak-ng keeps hidden state between utterances (function-static pitch-flutter and
waveform phases), so the same text would not give the same samples twice. For determinism each
utterance is synthesised in a *fresh fork* of a small server process that has initialised the
library but never spoken (:func:`_serve`, started with ``python -c``) reads JSON requests on
stdin and, per request, forks a child that speaks from the pristine state and pipes back a JSON
header (events, sample count) plus raw 16-bit samples. The server is single-threaded, so the
fork is safe; each process using :func:`synthesize` starts its own server on first use.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
from scipy.signal import resample_poly

from unison_stream.data.errors import SpeechUnavailableError

__all__ = ["Speech", "Timed", "available", "synthesize"]

# espeak_AUDIO_OUTPUT and espeak_EVENT_TYPE values from speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7
_OPTION_PHONEME_EVENTS = 1
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4
_PAUSES = ("_", "_:", "_!", "_^", "_|", "||", "|")
# Mnemonics some voices print that the shared vocab spells otherwise (see unison_stream.vocab).
_ALIASES = {"aa": "A:", "i@3": "i@"}
_MODIFIERS = (";",)  # palatalisation mark: lengthens the previous phoneme, not a sound


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms; `sample` is the exact sample index
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True)
class Timed:
    """A labelled span of time in seconds."""

    label: str
    start: float
    end: float

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "start": round(self.start, 5), "end": round(self.end, 5)}


@dataclass
class Speech:
    """One synthesised utterance: mono float32 audio plus its phoneme and word spans."""

    audio: np.ndarray  # (S,) float32 in [-1, 1] at `sample_rate`
    sample_rate: int
    phonemes: list[Timed]  # espeak mnemonics; pauses are labelled "_"
    words: list[Timed]

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


class _Engine:
    """The process-wide libespeak-ng handle (loaded on first use)."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            self.lib = ctypes.CDLL(name)
        except OSError as e:
            raise SpeechUnavailableError(
                f"cannot load libespeak-ng ({e}); install the Debian package libespeak-ng1"
            ) from e
        self.rate = int(self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, 1))
        if self.rate <= 0:
            raise SpeechUnavailableError("espeak_Initialize failed (espeak-ng-data missing?)")
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self.blocks: list[np.ndarray] = []
        self.events: list[tuple[int, int, int, int, str]] = []
        self._callback = _CALLBACK(self._on_synth)  # keep a reference: C holds the pointer
        self.lib.espeak_SetSynthCallback(self._callback)

    def _on_synth(self, wav: Any, n: int, events: Any) -> int:
        if n > 0:
            self.blocks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            e = events[i]
            if e.type in (_EVENT_WORD, _EVENT_PHONEME):
                label = e.id.string.decode("utf-8", "replace") if e.type == _EVENT_PHONEME else ""
                self.events.append((e.type, e.sample, e.text_position, e.length, label))
            i += 1
        return 0  # 0 = continue synthesis

    def run(
        self, text: str, voice: str, rate: int, pitch: int, pitch_range: int
    ) -> tuple[np.ndarray, list[tuple[int, int, int, int, str]]]:
        """Speak ``text``; returns int16 samples and (type, sample, pos, length, label) events."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise SpeechUnavailableError(f"espeak-ng has no voice {voice!r}")
        for param, value in (
            (_PARAM_RATE, rate),
            (_PARAM_PITCH, pitch),
            (_PARAM_RANGE, pitch_range),
            (_PARAM_VOLUME, 100),
        ):
            self.lib.espeak_SetParameter(param, int(value), 0)
        self.blocks, self.events = [], []
        data = text.encode("utf-8")
        err = self.lib.espeak_Synth(
            data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
        )
        self.lib.espeak_Synchronize()
        if err != 0:
            raise SpeechUnavailableError(f"espeak_Synth failed with code {err} on {text!r}")
        audio = np.concatenate(self.blocks) if self.blocks else np.zeros(0, np.int16)
        return audio, self.events


def _serve() -> None:
    """Server loop: one JSON request per stdin line; each answered from a pristine fork."""
    out = sys.stdout.buffer
    try:
        engine: _Engine | None = _Engine()
        error = ""
    except SpeechUnavailableError as e:
        engine, error = None, str(e)
    for line in sys.stdin.buffer:
        req = json.loads(line)
        if engine is None:
            out.write(json.dumps({"ok": False, "error": error}).encode() + b"\n")
            out.flush()
            continue
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: speak once from the pristine state, then vanish
            os.close(r)
            try:
                audio, events = engine.run(
                    req["text"], req["voice"], req["rate"], req["pitch"], req["range"]
                )
                head = {"ok": True, "rate": engine.rate, "n": len(audio), "events": events}
                payload = json.dumps(head).encode() + b"\n" + audio.astype("<i2").tobytes()
            except SpeechUnavailableError as e:
                payload = json.dumps({"ok": False, "error": str(e)}).encode() + b"\n"
            with os.fdopen(w, "wb") as f:
                f.write(payload)
            os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            payload = f.read()
        _, status = os.waitpid(pid, 0)
        if status != 0 or not payload:
            payload = json.dumps({"ok": False, "error": f"synthesis crashed ({status})"}).encode()
            payload += b"\n"
        out.write(payload)
        out.flush()


class _Client:
    """Talks to this process's speech server (restarted after a fork of the caller)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from unison_stream.data.synth.speech import _serve; _serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        atexit.register(self.close)

    def close(self) -> None:
        if self.proc.poll() is None and self.pid == os.getpid():
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def request(self, req: dict[str, Any]) -> tuple[int, np.ndarray, list[list[Any]]]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(req).encode() + b"\n")
        self.proc.stdin.flush()
        head_line = self.proc.stdout.readline()
        if not head_line:
            raise SpeechUnavailableError("the espeak-ng speech server exited unexpectedly")
        head = json.loads(head_line)
        if not head["ok"]:
            raise SpeechUnavailableError(head["error"])
        raw = self.proc.stdout.read(2 * head["n"])
        return int(head["rate"]), np.frombuffer(raw, "<i2"), head["events"]


_LOCK = threading.Lock()
_CLIENT: _Client | None = None


def _request(req: dict[str, Any]) -> tuple[int, np.ndarray, list[list[Any]]]:
    global _CLIENT
    with _LOCK:
        if _CLIENT is None or _CLIENT.pid != os.getpid() or _CLIENT.proc.poll() is not None:
            _CLIENT = _Client()
        return _CLIENT.request(req)


def available() -> bool:
    """True when libespeak-ng loads and speaks (tests skip otherwise)."""
    if ctypes.util.find_library("espeak-ng") is None:
        return False
    try:
        _request({"text": "a", "voice": "en", "rate": 175, "pitch": 50, "range": 50})
    except SpeechUnavailableError:
        return False
    return True


def synthesize(
    text: str,
    *,
    voice: str = "en-us",
    rate: int = 160,
    pitch: int = 50,
    pitch_range: int = 50,
    sample_rate: int = 16000,
) -> Speech:
    """Speak ``text`` and return audio at ``sample_rate`` with phoneme and word spans."""
    src_rate, raw, events = _request(
        {"text": text, "voice": voice, "rate": rate, "pitch": pitch, "range": pitch_range}
    )
    ratio = Fraction(sample_rate, src_rate)
    audio = resample_poly(raw.astype(np.float32) / 32768.0, ratio.numerator, ratio.denominator)
    audio = audio.astype(np.float32)
    total = len(audio) / sample_rate

    phon = [(s / src_rate, lab) for t, s, _, _, lab in events if t == _EVENT_PHONEME]
    phonemes: list[Timed] = []
    for k, (start, lab) in enumerate(phon):
        end = phon[k + 1][0] if k + 1 < len(phon) else total
        if end <= start:
            continue  # zero-length marker (e.g. a pause event at the same sample)
        if lab in _MODIFIERS and phonemes:  # extends the phoneme before it
            phonemes[-1] = Timed(phonemes[-1].label, phonemes[-1].start, end)
            continue
        phonemes.append(Timed("_" if lab in _PAUSES else _ALIASES.get(lab, lab), start, end))

    words: list[Timed] = []
    word_events = [(s / src_rate, pos, length) for t, s, pos, length, _ in events if t == 1]
    for k, (start, pos, length) in enumerate(word_events):
        nxt = word_events[k + 1][0] if k + 1 < len(word_events) else total
        spoken = [p for p in phonemes if start <= p.start < nxt and p.label != "_"]
        if spoken:  # the word event fires a little before its first phoneme
            start, end = spoken[0].start, spoken[-1].end
        else:
            end = nxt
        word = text.encode("utf-8")[pos - 1 : pos - 1 + length].decode("utf-8", "replace")
        words.append(Timed(word, start, end))
    return Speech(audio=audio, sample_rate=sample_rate, phonemes=phonemes, words=words)
