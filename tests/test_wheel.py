"""The built wheel, installed in a fresh virtual environment, used from a project folder
that has its own `tasks.py`, `engine.py` and `adapters/` (as Celery and invoke projects do).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from collections.abc import Sequence
from pathlib import Path

import pytest

from mils.adapters.local_stack import load_state

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv holding only the built wheel; its dependencies come from the test venv
    (a path in a .pth file, so the test venv's own editable `mils` is not visible)."""
    root = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"), REPO],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = (root / "dist").glob("mils-*.whl")
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=True)
    install = subprocess.run(
        [
            env_dir / "bin" / "python",
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            wheel,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env_dir


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project whose top-level names collide with the repository's folders."""
    (tmp_path / "tasks.py").write_text("MINE = 'celery tasks'\n")
    (tmp_path / "engine.py").write_text("MINE = 'their engine'\n")
    (tmp_path / "adapters").mkdir()
    (tmp_path / "adapters" / "__init__.py").write_text("MINE = 'their adapters'\n")
    return tmp_path


def run(fresh: Path, args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": "."}
    return subprocess.run(
        [str(fresh / "bin" / "python"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_and_api_work_beside_a_projects_own_tasks_engine_adapters(
    fresh: Path, project: Path
) -> None:
    """`mils --help` and `import mils` work, and the project's own modules stay its own."""
    cli = run(fresh, ["-m", "mils", "--help"], project)
    assert cli.returncode == 0, cli.stderr
    assert "caption" in cli.stdout
    code = (
        "import tasks, engine, adapters, mils\n"
        "from mils import open_run, resume_run\n"
        "assert (tasks.MINE, engine.MINE, adapters.MINE)\n"
        "assert mils.get_task('image-caption').name == 'image-caption'\n"
        "print(mils.__file__)\n"
    )
    api = run(fresh, ["-c", code], project)
    assert api.returncode == 0, api.stderr
    assert str(fresh) in api.stdout  # the wheel's copy, not the source tree


def test_wheel_carries_the_model_repository(fresh: Path, project: Path) -> None:
    """Every Triton model folder of the repository, and the scene scorer's weights, are inside
    the installed package."""
    found = run(
        fresh,
        ["-c", "from mils._local import model_repository; print(model_repository())"],
        project,
    )
    assert found.returncode == 0, found.stderr
    installed = Path(found.stdout.strip())
    assert str(fresh) in str(installed)
    for model in (REPO / "triton_models").iterdir():
        if model.is_dir() and not model.name.startswith("_"):
            assert (installed / model.name / "config.pbtxt").is_file(), model.name
            assert (installed / model.name / "1" / "model.py").is_file(), model.name
    # The trained scorers' shared network code and weights (folders, not models), and the
    # decoding code the video models share.
    for folder in ("_scene_clip", "_motion_clip"):
        for part in ("network.py", "weights.pt"):
            assert (installed / folder / part).is_file(), (folder, part)
    assert (installed / "_common" / "video.py").is_file()


def test_local_stack_starts_from_the_wheel(fresh: Path, project: Path) -> None:
    """`mils local up` serves the shipped models from a wheel install, then stops."""
    mils = str(fresh / "bin" / "mils")
    up = run(fresh, [mils, "local", "up"], project)
    servers = load_state(project / ".mils" / "local.json")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        status = run(fresh, [mils, "local", "status"], project)
        assert status.stdout.count("running") == 2, status.stdout
    finally:
        run(fresh, [mils, "local", "down"], project)
    assert not any(info.is_running() for info in servers.values())
