"""Sound scorer, text tower, for the Triton python backend (`_common/text_tower.py`)."""

from __future__ import annotations

import sys
from pathlib import Path

# The repository's shared model code (triton_models/_common), found from this file.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from _common.text_tower import text_tower

TritonPythonModel = text_tower("_sound_clap", "sound_text")
