"""Killed, interrupted or doubled engines lose and repeat no committed step."""

from __future__ import annotations

import random
import signal
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_harness import SMALL_LOOP, assert_complete, endpoint_args, mils, query, spawn, step_rows
from fault_proxy import FaultProxy

from benchmarks.llm_server import LoadLLMServer
from mils.adapters.local_stack import TritonServer

pytestmark = pytest.mark.integration

KILLS = 20


@pytest.fixture
def slow_llm(load_llm: LoadLLMServer) -> Iterator[FaultProxy]:
    """The fast upstream slowed to 0.2 s per reply, so runs last long enough to interrupt."""
    with FaultProxy(load_llm.base_url, latency_s=0.2) as proxy:
        yield proxy


def caption_args(
    images: list[Path], run: Path, url: str, triton: TritonServer, steps: int
) -> list[str]:
    return [
        "caption",
        *map(str, images),
        "--steps",
        str(steps),
        *SMALL_LOOP,
        "--out",
        str(run),
        "--no-progress",
        "--generator-in-flight",
        "4",
        *endpoint_args(url, triton),
    ]


def has_samples(run: Path) -> bool:
    try:
        return bool(query(run, "SELECT COUNT(*) FROM samples")[0][0])
    except Exception:  # no database, or no tables yet
        return False


def wait_for_steps(run: Path, n: int, proc, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and len(step_rows(run)) < n:
        time.sleep(0.05)
    assert len(step_rows(run)) >= n, f"no {n} committed steps within {timeout} s"
    assert proc.poll() is None, "the run ended before it could be interrupted"


def assert_contiguous(run: Path) -> None:
    """Per sample, the committed steps are exactly 1..k, and the database is intact."""
    assert query(run, "PRAGMA integrity_check") == [("ok",)]
    per_sample: dict[str, list[int]] = defaultdict(list)
    for sid, step in step_rows(run):
        per_sample[sid].append(step)
    for sid, steps in per_sample.items():
        assert steps == list(range(1, len(steps) + 1)), (sid, steps)


def test_twenty_sigkills_at_random_moments_then_resume(
    many_images: list[Path], slow_llm: FaultProxy, rel_triton: TritonServer, tmp_path: Path
) -> None:
    """20 SIGKILLs at random moments, each followed by a resume: every sample ends with
    exactly steps 1..steps, no committed step is ever lost or repeated, results are complete."""
    images, steps, run = many_images[:60], 5, tmp_path / "run"
    args = caption_args(images, run, slow_llm.base_url, rel_triton, steps)
    rng = random.Random(2024)
    kills, launches, seen, mid_run = 0, 0, set(), 0
    while kills < KILLS:
        command = ["resume", str(run), "--no-progress"] if has_samples(run) else args
        proc = spawn(command, tmp_path)
        launches += 1
        if rng.random() < 0.25:  # anywhere in start-up: imports, run creation, pool scoring
            time.sleep(rng.uniform(0.05, 2.0))
        else:  # mid-run: a random moment after this process committed its first step
            before = len(seen)
            while proc.poll() is None and len(step_rows(run)) <= before:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.8))
            mid_run += 1
        if proc.poll() is not None:
            break  # it finished before this kill: nothing left to interrupt
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        rows = set(step_rows(run))
        assert seen <= rows, f"committed steps lost after kill {kills}: {sorted(seen - rows)}"
        seen = rows
        assert_contiguous(run) if rows else None
    assert kills == KILLS, f"the run finished after {kills} kills; make it longer"
    assert len(seen) < len(images) * steps, "the kills never interrupted real work"
    final = mils(["resume", str(run), "--no-progress"], cwd=tmp_path)
    assert final.returncode == 0, final.stderr[-2000:]
    assert_complete(run, [p.stem for p in images], steps)
    print(
        f"\n{kills} SIGKILLs ({mid_run} mid-run) in {launches} launches; {len(seen)} of "
        f"{len(images) * steps} steps committed before the last resume"
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_stops_cleanly_and_says_how_to_resume(
    many_images: list[Path],
    slow_llm: FaultProxy,
    rel_triton: TritonServer,
    tmp_path: Path,
    sig: signal.Signals,
) -> None:
    """Ctrl-C and SIGTERM exit 130 naming `mils resume`; the store is intact; resume completes."""
    images, steps, run = many_images[:12], 4, tmp_path / "run"
    proc = spawn(caption_args(images, run, slow_llm.base_url, rel_triton, steps), tmp_path)
    wait_for_steps(run, 6, proc)
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == 130
    output = (tmp_path / "spawned.log").read_text()
    assert f"mils resume {run}" in output and "Traceback" not in output, output[-2000:]
    assert_contiguous(run)
    assert len(step_rows(run)) < len(images) * steps
    resumed = mils(["resume", str(run), "--no-progress"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_complete(run, [p.stem for p in images], steps)


def test_second_engine_on_a_live_run_is_refused(
    many_images: list[Path], slow_llm: FaultProxy, rel_triton: TritonServer, tmp_path: Path
) -> None:
    """While one engine works on a run directory, a second one is refused, naming it."""
    images, run = many_images[:12], tmp_path / "run"
    first = spawn(caption_args(images, run, slow_llm.base_url, rel_triton, 4), tmp_path)
    try:
        wait_for_steps(run, 1, first)
        for command, refusal in (
            (["resume", str(run)], "in use"),
            (caption_args(images, run, slow_llm.base_url, rel_triton, 4), "already holds a run"),
        ):
            second = mils(command, cwd=tmp_path)
            assert second.returncode == 2
            assert str(run) in second.stderr and refusal in second.stderr
            assert "Traceback" not in second.stderr
        # Undisturbed: the first engine finishes every sample on its own.
        assert first.wait(timeout=120) == 0
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGTERM)
            first.wait(timeout=30)
    assert_complete(run, [p.stem for p in images], 4)
