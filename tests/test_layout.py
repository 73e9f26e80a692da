"""The package layout of DESIGN.md, enforced: one `mils` namespace, dependencies one way.

    mils (API, CLI) -> mils.tasks, mils.adapters -> mils.engine

The engine imports neither the adapters nor the tasks nor any vendor SDK; adapters and
tasks do not import each other; nothing imports the repository folders by their own names
(`engine`, `adapters`, `tasks`), which would load a second copy of a module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENDOR_SDKS = {
    "openai",
    "httpx",
    "tritonclient",
    "grpc",
    "aiohttp",
    "torch",
    "transformers",
    "prometheus_client",
}


def _imports(folder: Path) -> Iterator[tuple[Path, str]]:
    """Every absolute module a .py file under `folder` imports (at any depth of the file)."""
    for path in sorted(folder.rglob("*.py")):
        if "triton_models" in path.parts:  # run inside Triton, not in this process
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield path, node.module


def _offenders(folder: str, forbidden: set[str]) -> list[str]:
    return [
        f"{path.relative_to(REPO)} imports {module}"
        for path, module in _imports(REPO / folder)
        if any(module == name or module.startswith(name + ".") for name in forbidden)
    ]


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("engine", {"mils.adapters", "mils.tasks", "mils.cli", "mils._api"} | VENDOR_SDKS),
        ("adapters", {"mils.tasks", "mils.cli", "mils._api"}),
        ("tasks", {"mils.adapters", "mils.cli", "mils._api"}),
    ],
)
def test_dependencies_point_one_way(folder: str, forbidden: set[str]) -> None:
    """engine <- adapters, tasks <- mils: no import goes the other way."""
    assert _offenders(folder, forbidden) == []


@pytest.mark.parametrize("folder", ["mils", "engine", "adapters", "tasks", "benchmarks", "tests"])
def test_nothing_imports_the_folders_by_their_own_names(folder: str) -> None:
    """Code imports `mils.engine`, never `engine` (which would be a second, separate copy)."""
    assert _offenders(folder, {"engine", "adapters", "tasks"}) == []


def test_engine_imports_only_itself_from_mils() -> None:
    """The only first-party package the engine knows is the engine."""
    first_party = [
        module for _, module in _imports(REPO / "engine") if module.split(".")[0] == "mils"
    ]
    assert first_party and all(m.startswith("mils.engine") for m in first_party)


def test_cli_imports_no_optional_dependency() -> None:
    """`import mils.cli` needs only the core dependencies: Pillow (the `local` extra, used by
    the demo's scenes) and torch load only where they are used."""
    code = "import sys, mils.cli; print(sorted({'PIL', 'torch', 'skimage'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
