"""The closed worlds, side by side: generated images, videos and sounds whose ground truth is
known, each with the captioning task it is for and the check of a caption against its truth.
`mils demo` and the quality benchmark use them alike."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from mils.tasks import motion, scenes, sounds
from mils.tasks._checks import CaptionCheck, Split

__all__ = ["WORLDS", "World", "world_for_task"]


@dataclass(frozen=True, slots=True)
class World:
    """A closed world: its items as files, their truth, and how a caption is checked."""

    name: str
    task: str
    """The captioning task of its media."""
    noun: str
    """What one item is called ("scene", "clip", "sound")."""
    kinds: tuple[str, ...]
    """The attribute kinds `check` gives verdicts on."""
    attributes: str
    """What "attributes right" counts, for messages ("the objects' attributes (...)")."""
    suffix: str
    items: Callable[[Split, int], Iterator[Any]]
    """Items of a split from an index on (the same on every call)."""
    encode: Callable[[Any], bytes]
    """An item as the file a user would caption."""
    check: Callable[[Any, str], CaptionCheck]
    canonical: Callable[[Any], str]
    """The plain true description."""
    pool: Callable[[int], list[str]]
    """An initial pool for the world: descriptions of single objects (or sources), so no
    line is the answer for an item of several."""


WORLDS: dict[str, World] = {
    "scenes": World(
        name="scenes",
        task="image-caption",
        noun="scene",
        kinds=scenes.KINDS,
        attributes="the objects' attributes (shape, colour, size, position)",
        suffix=".png",
        items=scenes.scenes,
        encode=lambda scene: scene.png(),
        check=scenes.check_caption,
        canonical=scenes.canonical,
        pool=lambda lines: _scene_pool(lines),
    ),
    "motion": World(
        name="motion",
        task="video-caption",
        noun="clip",
        kinds=motion.KINDS,
        attributes="the objects' attributes (shape, colour, size, motion, speed, presence)",
        suffix=".mp4",
        items=motion.motion_scenes,
        encode=motion.render_video,
        check=motion.check_motion_caption,
        canonical=motion.canonical,
        pool=motion.motion_pool,
    ),
    "sounds": World(
        name="sounds",
        task="audio-caption",
        noun="sound",
        kinds=sounds.KINDS,
        attributes="the sources' attributes (timbre, pitch, loudness, rhythm)",
        suffix=".wav",
        items=sounds.sounds,
        encode=sounds.render_audio,
        check=sounds.check_sound_caption,
        canonical=sounds.canonical,
        pool=sounds.sound_pool,
    ),
}


def world_for_task(task: str) -> World:
    return next(world for world in WORLDS.values() if world.task == task)


def _scene_pool(lines: int) -> list[str]:
    from mils._demo import scene_pool  # the demo's, defined with its scenes

    return scene_pool(lines)
