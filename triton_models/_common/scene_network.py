"""The scene scorer's network for its two towers (scene_text, scene_image).

`_scene_clip/network.py` is loaded by path, not imported as a package, so serving runs
exactly the file the training script used (that folder is not a model and not a package).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

NETWORK = Path(__file__).resolve().parents[1] / "_scene_clip" / "network.py"


def load_network_module() -> ModuleType:
    """`_scene_clip/network.py` as a module (once per process)."""
    name = "mils_scene_network"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, NETWORK)
    assert spec is not None and spec.loader is not None, NETWORK
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
