"""Closed-world image editor for the Triton python backend: IMAGE, TEXT (the instruction) and
SEED in, the edited scene's PNG out (`edit_image` of `tasks/_scene_world.py`, via
`_common/scene_world.py`)."""

from __future__ import annotations

import sys
from pathlib import Path

# The repository's shared model code (triton_models/_common), found from this file.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from _common.scene_world import world_model

TritonPythonModel = world_model("scene_edit", "edit_image", ("IMAGE", "TEXT", "SEED"))
