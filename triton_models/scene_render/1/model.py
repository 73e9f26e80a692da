"""Closed-world text-to-image renderer for the Triton python backend: TEXT and SEED in, a PNG
of the scene out (`render_text` of `tasks/_scene_world.py`, via `_common/scene_world.py`)."""

from __future__ import annotations

import sys
from pathlib import Path

# The repository's shared model code (triton_models/_common), found from this file.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from _common.scene_world import world_model

TritonPythonModel = world_model("scene_render", "render_text", ("TEXT", "SEED"))
