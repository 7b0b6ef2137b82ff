"""Symbol tables shared by the data generator, the text front end and the model.

The timed track the model attends to mixes two kinds of tokens: phonemes (espeak-ng's
ASCII phoneme mnemonics for English, as printed by ``espeak-ng -x``) and sound/motion events
(the ``<tag>`` words of a transcript). Both live in one id space so the track is one tensor.
Changing these tables changes the meaning of trained embeddings: append, never reorder.
"""

from __future__ import annotations

# the longest text of one utterance the planner accepts; the server validates the same limit
# (server.max_text_chars may lower it, never raise it)
MAX_TEXT_CHARS = 600

__all__ = [
    "EVENT_CLASSES",
    "FIRST_EVENT_ID",
    "MAX_TEXT_CHARS",
    "PAD_ID",
    "PHONEMES",
    "SILENCE_ID",
    "TAG_ALIASES",
    "TRACK_VOCAB",
    "UNK_ID",
    "canonical_event",
    "event_id",
    "phoneme_id",
]

PAD = "<pad>"
UNK = "<unk>"
SILENCE = "_"

# espeak-ng English phoneme mnemonics (vowels, then consonants, then syllabic consonants).
PHONEMES: tuple[str, ...] = (
    "@", "3", "3:", "@L", "@2", "@5", "a", "a#", "A:", "A@", "aI", "aU", "aI@", "aI3", "e", "E",
    "e@", "eI", "i", "i:", "i@", "I", "I2", "I#", "0", "O", "O:", "O@", "o@", "oU", "OI", "u:",
    "U", "U@", "V",
    "p", "b", "t", "d", "k", "g", "f", "v", "T", "D", "s", "z", "S", "Z", "h", "m", "n", "N",
    "l", "r", "w", "j", "tS", "dZ", "x", "?", "t#", "*",
    "n-", "l-", "r-", "m-",
)  # fmt: skip

# Sound events that a transcript can request with an inline tag, e.g. "Nice <clap> to see you".
# Each has a hand gesture with a known visual contact frame in the synthetic world.
EVENT_CLASSES: tuple[str, ...] = ("clap", "snap", "knock", "whoosh", "bell")
# Other words a transcript may use for the same event: "<wave>" is the wave gesture whose
# sound is the whoosh.
TAG_ALIASES: dict[str, str] = {"wave": "whoosh", "tap": "bell", "ring": "bell"}

TRACK_VOCAB: tuple[str, ...] = (
    PAD,
    UNK,
    SILENCE,
    *PHONEMES,
    *(f"<{e}>" for e in EVENT_CLASSES),
)
PAD_ID = 0
FIRST_EVENT_ID = len(TRACK_VOCAB) - len(EVENT_CLASSES)  # event tokens close the vocabulary
UNK_ID = 1
SILENCE_ID = 2
_INDEX = {s: i for i, s in enumerate(TRACK_VOCAB)}


def phoneme_id(symbol: str) -> int:
    """Track id of an espeak-ng phoneme mnemonic (stress marks stripped); unknown → UNK_ID."""
    return _INDEX.get(symbol.strip("',%="), UNK_ID)


def canonical_event(name: str) -> str:
    """The event class a tag word names (``"wave"`` → ``"whoosh"``); ValueError if none."""
    name = TAG_ALIASES.get(name.lower(), name.lower())
    if name not in EVENT_CLASSES:
        known = ", ".join([*EVENT_CLASSES, *TAG_ALIASES])
        raise ValueError(f"unknown event tag <{name}>; known tags: {known}")
    return name


def event_id(name: str) -> int:
    """Track id of an event class or tag word such as ``"clap"`` or ``"wave"``."""
    return _INDEX[f"<{canonical_event(name)}>"]
