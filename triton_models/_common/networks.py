"""The closed-world scorers' networks (`_scene_clip`, `_motion_clip`, `_sound_clap`), loaded
by path.

Each `network.py` is loaded under one module name, not imported as a package or as a bare
`network` (which the training scripts also import), so serving and training run exactly
that file, once per process. Those folders are not models and not packages.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_network(folder: str) -> ModuleType:
    """`<folder>/network.py` of the model repository as a module (once per process)."""
    return load_file(f"mils_{folder.strip('_')}_network", ROOT / folder / "network.py")


def load_file(name: str, path: Path) -> ModuleType:
    """The Python file `path` as the module `name` (once per process)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
