"""The scene scorer's network (scene_text, scene_image):
`_scene_clip/network.py` (see `networks`)."""

from __future__ import annotations

from types import ModuleType

from _common.networks import load_network


def load_network_module() -> ModuleType:
    """`_scene_clip/network.py` as a module (once per process)."""
    return load_network("_scene_clip")
