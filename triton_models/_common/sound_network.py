"""The sound scorer's network (sound_text, sound_audio):
`_sound_clap/network.py` (see `networks`)."""

from __future__ import annotations

from types import ModuleType

from _common.networks import load_network


def load_network_module() -> ModuleType:
    """`_sound_clap/network.py` as a module (once per process)."""
    return load_network("_sound_clap")
