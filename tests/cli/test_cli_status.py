"""`mils status` and `mils runs` read a run while an engine works on it, and after."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cli_harness import SMALL_LOOP, endpoint_args, mils, spawn, step_rows
from fault_proxy import FaultProxy

from benchmarks.llm_server import LoadLLMServer
from mils.adapters.local_stack import TritonServer

pytestmark = pytest.mark.integration


def test_status_of_a_live_run_then_of_the_finished_one(
    many_images: list[Path], load_llm: LoadLLMServer, rel_triton: TritonServer, tmp_path: Path
) -> None:
    """While the run goes, status shows the engine holding it and committed steps; after,
    every sample done and no engine; `mils runs` lists it."""
    run = tmp_path / "runs" / "r1"
    with FaultProxy(load_llm.base_url, latency_s=0.3) as proxy:
        proc = spawn(
            [
                "caption",
                *map(str, many_images[:4]),
                "--steps",
                "4",
                *SMALL_LOOP,
                "--generator-in-flight",
                "1",
                "--out",
                str(run),
                "--no-progress",
                *endpoint_args(proxy.base_url, rel_triton),
            ],
            tmp_path,
        )
        try:
            deadline = time.monotonic() + 60
            while len(step_rows(run)) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            live = mils(["status", str(run)], cwd=tmp_path)
        finally:
            code = proc.wait(timeout=120)
    assert code == 0
    assert live.returncode == 0, live.stderr
    assert f"running (mils pid {proc.pid})" in live.stdout
    committed = int(live.stdout.split("steps")[1].split()[0])
    assert 2 <= committed < 16
    after = mils(["status", str(run)], cwd=tmp_path)
    assert "4 done, 0 failed, 0 pending" in after.stdout and "not running" in after.stdout
    assert "16 committed" in after.stdout
    listed = mils(["runs", str(tmp_path / "runs")], cwd=tmp_path)
    assert listed.returncode == 0 and "4/4 done" in listed.stdout and "stopped" in listed.stdout


def test_status_of_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    """A clear error, exit 2."""
    proc = mils(["status", str(tmp_path)], cwd=tmp_path)
    assert proc.returncode == 2 and "not a mils run directory" in proc.stderr
