"""Smoke test of the Ray scaling benchmark: a tiny run of `python -m benchmarks.ray_scaling`
on the real load-model servers and a real local Ray head, checked by counts (nothing lost,
nothing committed twice, the killed worker restarted), never by speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.ray_scaling import png_with_text, write_targets
from benchmarks.scenarios import make_targets
from mils.adapters import ImageReader

REPO = Path(__file__).resolve().parents[2]
SAMPLES, STEPS = 20, 2


async def test_targets_are_png_files_the_image_reader_accepts(tmp_path: Path) -> None:
    """Each target is a PNG that the image-caption task's reader reads whole, its target
    description inside (the words the load-model image encoder embeds)."""
    paths = write_targets(tmp_path, 3)
    assert [Path(p).name for p in paths] == ["s00000.png", "s00001.png", "s00002.png"]
    for path, (_, description) in zip(paths, make_targets(3), strict=True):
        data = await ImageReader().read(path)
        assert data == png_with_text(description.decode())
        assert description in data


@pytest.mark.integration
def test_a_tiny_benchmark_loses_nothing_and_restarts_the_killed_worker(tmp_path: Path) -> None:
    """20 samples x 2 steps in one process, on 1 and 2 Ray actors, and on 2 with one worker
    SIGKILLed mid-run: every run ends with every sample done and each of its steps 0..2
    committed once; the kill run logs a restart, the others none."""
    # A slow first token (2 s a request) keeps the kill run going long enough to kill in.
    args = ["--samples", str(SAMPLES), "--steps", str(STEPS), "--actors", "1", "2",
            "--prefill-ms", "2000", "--pool", "64", "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.ray_scaling", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((tmp_path / "ray_scaling.json").read_text())
    runs = {run["runner"]: run for run in report["runs"]}
    assert list(runs) == ["one-process", "ray-1", "ray-2", "ray-2-killed"]
    for name, run in runs.items():
        counts = (run["done"], run["failed"], run["steps_committed"], run["samples_complete"])
        assert counts == (SAMPLES, 0, SAMPLES * STEPS, SAMPLES), name
        assert run["steps_duplicated"] == 0, name
        assert run["steps_per_s"] > 0, name
    assert [runs[n]["restarts"] for n in ("one-process", "ray-1", "ray-2")] == [0, 0, 0]
    killed = runs["ray-2-killed"]
    assert killed["killed_at_steps"] is not None, "no worker was killed"
    assert killed["killed_at_steps"] < SAMPLES * STEPS, "the kill came after the last step"
    assert killed["restarts"] >= 1
    assert runs["ray-1"]["ratio"] == 1.0
    assert "ray-2-killed" in proc.stdout  # the table
