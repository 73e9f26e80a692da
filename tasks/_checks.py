"""What the closed worlds share: their splits and the verdicts of a caption check.

Scenes (`scenes.py`) and sounds (`sounds.py`) both split their generated items into the same
disjoint streams and check free-text captions into the same `CaptionCheck`; these types live
here, with no dependency beyond the standard library, so that importing one world never
imports the other's media library (Pillow for scenes).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["CaptionCheck", "Split", "Verdict"]


class Split(enum.Enum):
    """Disjoint streams of a closed world's items: training never sees a held-out item's seed."""

    TRAIN = 0
    HELD_OUT = 1
    """Measurements (R@1, near misses) and tests."""
    DEMO = 2
    """`mils demo`: held out too, and apart from what the measurements use."""


class Verdict(enum.Enum):
    """What a caption says about one attribute kind of a scene (or a sound)."""

    RIGHT = "right"
    """Stated, and right for every object (source)."""
    WRONG = "wrong"
    """Stated wrongly for at least one object (or the wrong number of objects)."""
    MISSING = "missing"
    """Not stated (for some object) and nothing stated wrongly."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptionCheck:
    """Which attributes of a scene (or a sound) a caption gets right."""

    verdicts: dict[str, Verdict]
    """Attribute kind (the world's KINDS) -> verdict."""
    mentioned: int
    """How many objects (sources) the caption describes."""
    attributes_right: float
    """Fraction of the item's per-object attributes (a scene: shape, colour, size and position
    of each object; a sound: timbre, pitch, loudness and rhythm of each source) that the
    caption states right: finer than the verdicts, which need every object right."""
    optional: tuple[str, ...] = ("background",)
    """Kinds a true caption may leave out: `exact` needs them only not WRONG. Scenes: the
    background (many true descriptions leave it out); sounds (`mils.tasks.sounds`): none."""

    @property
    def exact(self) -> bool:
        """Every kind right (for scenes: every object's shape, colour, size and position, and
        the count), and each `optional` kind right or not mentioned."""
        return all(
            v is not Verdict.WRONG if k in self.optional else v is Verdict.RIGHT
            for k, v in self.verdicts.items()
        )

    @property
    def accuracy(self) -> float:
        """Fraction of attribute kinds right."""
        return sum(v is Verdict.RIGHT for v in self.verdicts.values()) / len(self.verdicts)
