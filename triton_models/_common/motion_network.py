"""The video scorer's network (motion_text, motion_video, and its training script):
`_motion_clip/network.py` (see `networks`)."""

from __future__ import annotations

from types import ModuleType

from _common.networks import load_network


def load_network_module() -> ModuleType:
    """`_motion_clip/network.py` as a module (once per process)."""
    return load_network("_motion_clip")
