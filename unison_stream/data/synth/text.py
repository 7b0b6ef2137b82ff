"""Transcripts and captions from a small grammar and word lists.

A :class:`Script` is one sentence (its words, punctuation attached) plus event tags placed at
word boundaries; ``transcript()`` writes it with inline tags (``Nice to meet you <clap> ...``),
using the event class names of :mod:`unison_stream.vocab`. ``sentence_key`` is the spoken text
without tags, normalised; dataset splits hold sentences out by that key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from unison_stream.vocab import EVENT_CLASSES

__all__ = [
    "ACTIVITIES",
    "EVENT_PHRASES",
    "Script",
    "caption",
    "sample_activity",
    "sample_script",
    "sample_sentence",
]

_WORDS: dict[str, tuple[str, ...]] = {
    "greeting": ("Hello", "Hi", "Good morning", "Good evening", "Hey there", "Welcome back"),
    "name": ("Maya", "Tom", "Priya", "Leo", "Sofia", "Omar", "Grace", "Ivan", "Nina", "Sam",
             "Aiko", "Ben", "Clara", "Diego", "Elena", "Felix"),
    "pleasure": ("nice to meet you", "good to see you", "how are you today",
                 "thanks for coming", "it has been a while", "lovely to have you here"),
    "adj": ("little", "shiny", "old", "quiet", "bright", "heavy", "purple", "funny", "gentle",
            "tiny", "golden", "wooden", "broken", "secret", "happy", "noisy", "careful"),
    "noun": ("robot", "garden", "letter", "guitar", "kitten", "window", "bicycle", "lamp",
             "castle", "river", "teacup", "rocket", "pillow", "map", "drum", "painting",
             "sandwich", "bridge"),
    "verb": ("find", "paint", "open", "carry", "visit", "fix", "build", "watch", "follow",
             "clean", "share", "borrow"),
    "verb_past": ("found", "painted", "opened", "carried", "visited", "fixed", "built",
                  "watched", "followed", "cleaned", "shared", "borrowed"),
    "prep": ("near", "behind", "inside", "across", "under", "beside"),
    "place": ("kitchen", "station", "market", "library", "garden", "harbour", "school",
              "museum", "park", "office"),
    "time": ("today", "tomorrow", "tonight", "this morning", "next week", "right now",
             "again", "later"),
    "relative": ("sister", "brother", "friend", "neighbour", "uncle", "cousin", "teacher"),
    "think": ("think", "believe", "hope", "guess", "know"),
}  # fmt: skip

_TEMPLATES: tuple[str, ...] = (
    "{greeting} {name}, {pleasure}.",
    "The {adj} {noun} {verb_past} {prep} the {place}.",
    "I {think} the {noun} is {adj} {time}.",
    "Please {verb} the {adj} {noun} {time}.",
    "{name} {verb_past} a {adj} {noun} {prep} the {place}.",
    "Did you {verb} the {noun} {time}?",
    "We will {verb} the {noun} {prep} the {place}.",
    "My {relative} {verb_past} the {adj} {noun} {time}.",
    "What a {adj} {noun} you have!",
    "Let us {verb} the {adj} {noun} together.",
    "{greeting}, I {verb_past} your {noun} {time}.",
)

EVENT_PHRASES: dict[str, str] = {
    "clap": "claps",
    "snap": "snaps their fingers",
    "knock": "knocks on the door",
    "whoosh": "swipes a hand with a whoosh",
    "bell": "taps a desk bell",
}
assert set(EVENT_PHRASES) == set(EVENT_CLASSES), "every event class needs a caption phrase"

# What the person is doing, per clip kind; the caption's scene ends with one of these.
ACTIVITIES: dict[str, tuple[str, ...]] = {
    "speech": ("talking",),
    "quiet": (
        "waiting quietly",
        "sitting still, waiting",
        "silent, looking around",
        "resting quietly, not speaking",
    ),
    "listening": (
        "listening, nodding",
        "listening attentively",
        "listening and nodding now and then",
        "listening quietly, smiling now and then",
    ),
}


@dataclass(frozen=True)
class Script:
    """A sentence's words and the tags placed between them.

    ``events[i] = (position, name)``: the event sits before word ``position`` (0 = before the
    first word, ``len(words)`` = after the last). Positions are distinct and sorted.
    """

    words: tuple[str, ...]
    events: tuple[tuple[int, str], ...]

    def sentence(self) -> str:
        return " ".join(self.words)

    def sentence_key(self) -> str:
        return re.sub(r"[^a-z' ]", "", self.sentence().lower()).strip()

    def transcript(self) -> str:
        out: list[str] = []
        at = dict(self.events)
        for i in range(len(self.words) + 1):
            if i in at:
                out.append(f"<{at[i]}>")
            if i < len(self.words):
                out.append(self.words[i])
        return " ".join(out)

    def segments(self) -> list[tuple[str, str | None]]:
        """Speech pieces in order, each followed by the event after it (or None).

        A leading event gives an empty first piece.
        """
        cuts = [p for p, _ in self.events]
        names = [n for _, n in self.events]
        out: list[tuple[str, str | None]] = []
        prev = 0
        for pos, name in zip(cuts, names, strict=True):
            out.append((" ".join(self.words[prev:pos]), name))
            prev = pos
        if prev < len(self.words):
            out.append((" ".join(self.words[prev:]), None))
        return out


def _fill(template: str, rng: np.random.Generator) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: str(rng.choice(np.array(_WORDS[m.group(1)]))), template)


def sample_sentence(rng: np.random.Generator, min_words: int, max_words: int) -> tuple[str, ...]:
    """One sentence from the grammar with ``min_words..max_words`` words."""
    for _ in range(100):
        text = _fill(_TEMPLATES[int(rng.integers(len(_TEMPLATES)))], rng)
        words = tuple(text.split())
        if min_words <= len(words) <= max_words:
            return words
    raise RuntimeError(f"grammar cannot make a sentence of {min_words}..{max_words} words")


def sample_script(
    rng: np.random.Generator, words: tuple[str, ...], max_events: int, event_prob: float
) -> Script:
    """Place 0..max_events tags at distinct word boundaries of ``words``."""
    k = 0
    if max_events > 0 and rng.random() < event_prob:
        k = int(rng.integers(1, max_events + 1))
    slots = rng.choice(len(words) + 1, size=min(k, len(words) + 1), replace=False)
    events = tuple(
        (int(pos), str(EVENT_CLASSES[int(rng.integers(len(EVENT_CLASSES)))]))
        for pos in sorted(slots)
    )
    return Script(words=words, events=events)


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def sample_activity(rng: np.random.Generator, kind: str) -> str:
    """One of the :data:`ACTIVITIES` phrases of a clip kind."""
    return ACTIVITIES[kind][int(rng.integers(len(ACTIVITIES[kind])))]


def caption(
    names: dict[str, str], ambience_phrase: str, events: list[str], activity: str = "talking"
) -> str:
    """Describe the scene, the ambience and the actions, e.g. for the caption embedding.

    ``names`` is :meth:`~.identity.Identity.describe`; a look identity's (it has the key
    ``accessories``) also names the skin and what the person wears besides clothes.
    ``activity`` ends the scene (:data:`ACTIVITIES`).
    """
    hair = (
        "a bald head" if names["hair"] == "bald" else f"{names['hair_color']} {names['hair']} hair"
    )
    skin = f"{names['skin']} skin, " if "accessories" in names else ""
    worn = f" and {names['accessories']}" if names.get("accessories") else ""
    scene = (
        f"A person with {skin}{hair} and {names['eyes']} eyes, wearing "
        f"{_a(names['clothes_color'])} {names['clothes']}{worn}, in front of "
        f"{_a(names['background_color'])} {names['background']} background, {activity}"
    )
    parts = [scene, ambience_phrase]
    if events:
        unique = list(dict.fromkeys(events))
        acts = [EVENT_PHRASES[e] for e in unique]
        parts.append("the person " + (" and ".join(acts) if len(acts) < 3 else ", ".join(acts)))
    return "; ".join(parts) + "."
