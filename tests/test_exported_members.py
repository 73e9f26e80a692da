"""Each package's `__all__` lists exactly its public names (httpx's test_exported_members)."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("package", ["mils", "mils.engine", "mils.adapters", "mils.tasks"])
def test_all_exports_are_complete_and_importable(package: str) -> None:
    """Every name in __all__ exists, and every public attribute is in __all__."""
    module = importlib.import_module(package)
    exported = set(module.__all__)
    assert all(hasattr(module, name) for name in exported)
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and getattr(value, "__module__", "").startswith(package)
        and not isinstance(value, type(module))
    }
    assert public <= exported, f"{package} exports miss {sorted(public - exported)}"
