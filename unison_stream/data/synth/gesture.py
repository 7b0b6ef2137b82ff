"""Hand gestures for the event classes, each with an exactly known contact time.

A gesture moves one or two hands from a rest pose off-frame to a contact pose and back. On the
way in the hand accelerates (``s = u²``), so it strikes; on the way out it eases off. The
contact pose is reached at exactly ``t_contact``, and every other moment is strictly farther
from it along the class's :data:`CONTACT_AXIS`: the contact frame is the frame where the
gesturing hand is extreme along that axis, which tests measure from pixels.

Coordinates are fractions of the frame (x right, y down).
"""

from __future__ import annotations

from dataclasses import dataclass

from unison_stream.vocab import EVENT_CLASSES

__all__ = ["CONTACT_AXIS", "PROPS", "HandPose", "hands_at"]


@dataclass(frozen=True)
class HandPose:
    x: float
    y: float
    side: int  # +1 the avatar's hand on the image right, -1 on the left
    shape: str  # "flat" (open palm, fingers up), "fist", "point"


# (rest, contact, after) positions of the gesturing right hand, its shape, and whether the
# left hand mirrors it. `after` is where the hand goes right after contact before returning.
_PATHS: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float], str]] = {
    "clap": ((0.85, 1.25), (0.535, 0.8), (0.7, 0.9), "flat"),
    "snap": ((0.86, 1.25), (0.82, 0.62), (0.84, 0.8), "fist"),
    "knock": ((0.72, 1.25), (0.83, 0.72), (0.74, 0.8), "fist"),
    "whoosh": ((0.7, 1.25), (0.86, 0.66), (0.15, 0.72), "flat"),
    "bell": ((1.2, 0.7), (0.8, 0.84), (0.95, 0.78), "point"),
}
_MIRRORED = frozenset({"clap"})

# Unit direction along which the right hand is extreme at contact (for pixel measurements).
CONTACT_AXIS: dict[str, tuple[float, float]] = {
    "clap": (-1.0, 0.0),
    "snap": (0.0, -1.0),
    "knock": (1.0, 0.0),
    "whoosh": (1.0, 0.0),
    "bell": (-0.7071, 0.7071),
}
# Static scene props an event needs: name → (kind, x0, y0, x1, y1) in frame fractions.
PROPS: dict[str, tuple[str, float, float, float, float]] = {
    "knock": ("door", 0.9, 0.3, 1.05, 1.05),
    "bell": ("bell", 0.72, 0.86, 0.88, 0.97),
}
assert set(_PATHS) == set(EVENT_CLASSES) == set(CONTACT_AXIS), "one gesture per event class"


def _lerp(a: tuple[float, float], b: tuple[float, float], s: float) -> tuple[float, float]:
    return a[0] + (b[0] - a[0]) * s, a[1] + (b[1] - a[1]) * s


def _gesture(name: str, dt: float, approach: float, retract: float) -> list[HandPose]:
    """Hands of one gesture at time ``dt`` relative to contact (empty when at rest)."""
    rest, contact, after, shape = _PATHS[name]
    if dt <= -approach or dt >= retract:
        return []
    if dt <= 0:
        u = 1.0 + dt / approach  # 0 → 1 on the way in
        x, y = _lerp(rest, contact, u * u)
    else:
        u = dt / retract  # 0 → 1 on the way out: to `after` in the first half, then to rest
        if u < 0.5:
            x, y = _lerp(contact, after, 1 - (1 - 2 * u) ** 2)
        else:
            x, y = _lerp(after, rest, (2 * u - 1) ** 2)
    hands = [HandPose(x, y, +1, shape)]
    if name in _MIRRORED:
        hands.append(HandPose(1.0 - x, y, -1, shape))
    return hands


def hands_at(
    t: float, events: list[tuple[str, float]], approach: float, retract: float
) -> list[HandPose]:
    """All hands visible at time ``t`` given ``(event name, contact time)`` pairs."""
    out: list[HandPose] = []
    for name, tc in events:
        out.extend(_gesture(name, t - tc, approach, retract))
    return out
