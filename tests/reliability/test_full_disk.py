"""Out of disk space, at creation or mid-run: a clear message, exit 2, no temporary files,
committed steps intact, and a resume finishes once there is room again.

The run directory lives on a small tmpfs mounted by the test (the suite runs as root, as CI
does); its size is what runs out.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_harness import SMALL_LOOP, assert_complete, endpoint_args, mils, step_rows

from benchmarks.llm_server import LoadLLMServer
from mils.adapters.local_stack import TritonServer

pytestmark = pytest.mark.integration


@pytest.fixture
def small_disk(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A tmpfs of `request.param` (default 160k)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    size = getattr(request, "param", "160k")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"cannot mount a tmpfs (the suite needs root): {done.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def grow(mount: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True)


def run_args(images: list[Path], out: Path, llm: LoadLLMServer, triton: TritonServer) -> list[str]:
    return [
        "caption",
        *map(str, images),
        "--steps",
        "40",
        *SMALL_LOOP,
        "--out",
        str(out),
        "--no-progress",
        *endpoint_args(llm.base_url, triton),
    ]


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*.tmp")]


def test_no_room_to_create_the_run(
    many_images: list[Path], load_llm: LoadLLMServer, rel_triton: TritonServer, small_disk: Path
) -> None:
    """The 3,000-line default pool does not fit: exit 2 saying so, no temporary file left."""
    run = small_disk / "run"
    proc = mils(run_args(many_images[:1], run, load_llm, rel_triton), cwd=small_disk.parent)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "No space left on device" in proc.stderr and "free space" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) < 10
    assert leftovers(small_disk) == []


@pytest.mark.parametrize("small_disk", ["640k"], indirect=True)
def test_disk_full_mid_run_keeps_committed_steps_and_resumes(
    many_images: list[Path],
    load_llm: LoadLLMServer,
    rel_triton: TritonServer,
    small_disk: Path,
    tmp_path: Path,
) -> None:
    """The disk fills while steps commit: exit 2 with a clear message; after room is made,
    `mils resume` completes every sample with each step exactly once."""
    pool = tmp_path / "pool.txt"
    pool.write_text("".join(f"a small caption number {i}\n" for i in range(40)))
    images = many_images[:6]
    run = small_disk / "run"
    proc = mils(
        [*run_args(images, run, load_llm, rel_triton), "--init-pool", str(pool)],
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "disk" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.splitlines()) < 20
    assert leftovers(small_disk) == []
    grow(small_disk, "16m")  # room again (reading the WAL database needs a little too)
    committed = step_rows(run)
    assert 0 < len(committed) < len(images) * 40
    resumed = mils(["resume", str(run), "--no-progress"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert set(committed) <= set(step_rows(run))
    assert_complete(run, [image.stem for image in images], 40)
