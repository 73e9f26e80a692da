"""`mils caption --ray` on a real local Ray cluster: a head node and a second worker node,
each a `ray start --block` process on loopback with 2 CPUs. The shard workers run the
engine against real servers (llama.cpp or the load-model LLM server, the local stack's
Triton) and commit through one store actor to one run directory; a worker killed mid-run
or a whole node killed mid-run is restarted and its samples continue from their last
committed step."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_harness import (
    SECRET,
    SMALL_LOOP,
    assert_complete,
    env,
    log_events,
    mils,
    on_local_stack,
    results,
    step_rows,
)

from benchmarks.llm_server import LLMCostModel, LoadLLMServer
from benchmarks.ray_scaling import RAY_ENV, RayNode
from mils._demo import write_demo_items
from mils._worlds import world_for_task
from mils.adapters.local_stack import LlamaServer, TritonServer

pytestmark = pytest.mark.integration

NODE_CPUS = 2


def _nodes_alive(address: str) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", f"import ray; ray.init(address={address!r}, logging_level='error');"
         "print(sum(n['Alive'] for n in ray.nodes()))"],
        capture_output=True, text=True, timeout=60, env=env(RAY_ENV),
    )  # fmt: skip
    return int(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else 0


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A two-node Ray cluster on loopback (`ray start --block`, each node in its own
    process session): its head's address, its logs' folder."""
    logs = tmp_path_factory.mktemp("ray")
    with (
        RayNode(logs, NODE_CPUS) as head,
        RayNode(logs, NODE_CPUS, join=head.address),
    ):
        deadline = time.monotonic() + 60
        while _nodes_alive(head.address) < 2:  # the second node registered with the head
            assert time.monotonic() < deadline, "the second Ray node did not join"
        assert head.temp is not None
        yield head.address, head.temp


def scenes(dest: Path, count: int) -> list[str]:
    return sorted(p.stem for p in write_demo_items(world_for_task("image-caption"), dest, count))


def test_a_caption_run_on_two_ray_nodes_is_one_run(
    ray_cluster: tuple[str, Path],
    local_triton: TritonServer,
    llama_server: LlamaServer,
    tmp_path: Path,
) -> None:
    """Four scenes captioned for 2 steps by SmolLM2 on llama.cpp, sharded over 2 Ray
    workers: every sample done with each step committed once, in one run directory that
    `mils status` reads as usual; the workers ran on both nodes, each embedding the pool
    once; the endpoint key
    reached the workers but none of Ray's logs."""
    address, ray_logs = ray_cluster
    ids = scenes(tmp_path / "scenes", 4)
    on_local_stack(tmp_path, local_triton, llama_server)
    run = tmp_path / "run"
    proc = mils(
        ["caption", str(tmp_path / "scenes"), "--steps", "2", *SMALL_LOOP, "--out", str(run),
         "--no-progress", "--ray", address, "--ray-actors", "2"],
        tmp_path, timeout=600, extra_env=RAY_ENV,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_complete(run, ids, 2)
    assert {row["status"] for row in results(run).values()} == {"done"}
    started = [e for e in log_events(run) if e["event"] == "ray_run_started"]
    assert [(e["samples"], e["actors"]) for e in started] == [(4, 2)]
    (placed,) = [e["workers"] for e in log_events(run) if e["event"] == "ray_workers"]
    assert len({w["node"] for w in placed}) == 2  # one worker on each node
    ended = [e for e in log_events(run) if e["event"] == "run_finished" and "shard" in e]
    assert sorted((e["shard"], e["steps"]) for e in ended) == [(0, 4), (1, 4)]  # their logs
    status = mils(["status", str(run)], tmp_path)
    assert "4 done" in status.stdout, status.stdout
    pool = len((run / "pool.txt").read_text(encoding="utf-8").splitlines())
    summary = re.search(r"(\d+) steps in .* (\d+) texts embedded", proc.stderr)
    assert summary is not None, proc.stderr[-2000:]
    assert int(summary[1]) == 8
    assert 2 * pool <= int(summary[2]) < 3 * pool, summary[0]  # the pool once per worker
    leaked = [p for p in ray_logs.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not leaked
    assert SECRET not in (run / "log.jsonl").read_text(encoding="utf-8")  # workers' events too


@pytest.fixture(scope="module")
def slow_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadLLMServer]:
    """A load-model LLM server whose every reply takes ~0.3 s: a run long enough to kill a
    worker in the middle of it."""
    cost = LLMCostModel(capacity=64, prefill_ms=300, decode_tokens_per_s=50_000, seed=0)
    server = LoadLLMServer(cost=cost, log_path=tmp_path_factory.mktemp("llm") / "llm.log")
    with server:
        yield server


def _steps_committed(run: Path) -> int:
    try:
        with sqlite3.connect(f"file:{run / 'run.db'}?mode=ro", uri=True, timeout=5) as db:
            return int(db.execute("SELECT COUNT(*) FROM steps WHERE step > 0").fetchone()[0])
    except sqlite3.Error:
        return 0


def _worker_pids(run: Path) -> list[int]:
    """The shard workers' processes, as the run's log names them."""
    placed = [e for e in log_events(run) if e["event"] == "ray_workers"]
    return [w["pid"] for e in placed for w in e["workers"]]


@contextlib.contextmanager
def driving(
    args: list[str], cwd: Path, run: Path, *, until_steps: int
) -> Iterator[subprocess.Popen[str]]:
    """`mils ARGS` running in the background, handed over once `until_steps` steps of
    `run` are committed; killed if still running after the block."""
    err = (cwd / "stderr.txt").open("w")
    driver = subprocess.Popen(
        [sys.executable, "-m", "mils", *args],
        cwd=cwd,
        env=env(RAY_ENV),
        stdout=subprocess.DEVNULL,
        stderr=err,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while _steps_committed(run) < until_steps:
            assert driver.poll() is None, (cwd / "stderr.txt").read_text()[-3000:]
            assert time.monotonic() < deadline, "no steps committed"
            time.sleep(0.2)
        yield driver
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        err.close()


def slow_caption(
    tmp_path: Path, triton: TritonServer, llm: LoadLLMServer, address: str, steps: int
) -> tuple[list[str], list[str]]:
    """Eight scenes to caption for `steps` steps on 2 workers: the sample ids, the args."""
    ids = scenes(tmp_path / "scenes", 8)
    on_local_stack(tmp_path, triton, llm)
    args = ["caption", str(tmp_path / "scenes"), "--steps", str(steps), *SMALL_LOOP,
            "--out", str(tmp_path / "run"), "--no-progress", "--ray", address,
            "--ray-actors", "2", "--generator-url", llm.base_url,
            "--generator-model", "load-llm"]  # fmt: skip
    return ids, args


def test_a_worker_killed_mid_run_is_restarted_and_no_step_is_lost_or_repeated(
    ray_cluster: tuple[str, Path],
    local_triton: TritonServer,
    slow_llm: LoadLLMServer,
    tmp_path: Path,
) -> None:
    """Eight scenes x 6 steps on 2 workers; once 10 steps are committed one worker's process
    is SIGKILLed. Ray restarts it, its shard resumes from the store: the run ends with every
    sample done and each step committed exactly once, and the log says a shard restarted."""
    steps, run = 6, tmp_path / "run"
    ids, args = slow_caption(tmp_path, local_triton, slow_llm, ray_cluster[0], steps)
    with driving(args, tmp_path, run, until_steps=10) as driver:
        pids = _worker_pids(run)
        assert len(pids) == 2, pids
        os.kill(pids[0], signal.SIGKILL)
        killed_at = _steps_committed(run)
        assert driver.wait(timeout=300) == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
    assert killed_at < len(ids) * steps  # the kill came before the end
    assert_complete(run, ids, steps)
    restarts = [e for e in log_events(run) if e["event"] == "ray_worker_restarted"]
    assert restarts, "no restart logged"
    claims = [e for e in log_events(run) if e["event"] == "ray_shard_restarted"]
    assert [e["epoch"] for e in claims] == [2]  # the store actor's own log, in the run's


def test_a_restarted_worker_counts_what_its_shard_spent_before_against_its_budget(
    ray_cluster: tuple[str, Path],
    local_triton: TritonServer,
    slow_llm: LoadLLMServer,
    tmp_path: Path,
) -> None:
    """Eight scenes x 6 steps (48 requests) on 2 workers under `--max-requests 30`: 15 each.
    Once 10 steps are committed the first worker is SIGKILLed; its restarted incarnation
    counts the requests its shard committed before (it would spend 15 more if it started
    from nothing): the run stops at its budget (exit status 3) with at most 30 requests
    committed, none twice."""
    steps, run = 6, tmp_path / "run"
    ids, args = slow_caption(tmp_path, local_triton, slow_llm, ray_cluster[0], steps)
    with driving([*args, "--max-requests", "30"], tmp_path, run, until_steps=10) as driver:
        pids = _worker_pids(run)
        os.kill(pids[0], signal.SIGKILL)
        first_shard = set(ids[0::2])  # dealt round-robin, in the order the run lists them
        before = [sid for sid, _ in step_rows(run) if sid in first_shard]
        assert driver.wait(timeout=300) == 3, (tmp_path / "stderr.txt").read_text()[-3000:]
    assert before, "the killed worker had committed nothing: nothing to count"
    rows = step_rows(run)
    assert len(rows) == len(set(rows)), "a step was committed twice"
    assert len(rows) <= 30, f"{len(rows)} requests committed under a budget of 30"
    assert [e for e in log_events(run) if e["event"] == "ray_worker_restarted"]


def test_a_shard_that_ends_hands_its_share_of_a_fixed_limit_to_those_still_running(
    ray_cluster: tuple[str, Path],
    local_triton: TritonServer,
    slow_llm: LoadLLMServer,
    tmp_path: Path,
) -> None:
    """Five scenes on 2 workers under `--generator-in-flight 2` and `--max-requests 40`: 1
    request and 20 requests each at first. The shard of 2 scenes ends first, having spent 8;
    the worker of 3 then takes the whole limit and the 12 requests left over, and the log
    says so (with the limit in force on it), and the run completes."""
    steps = 4
    ids = scenes(tmp_path / "scenes", 5)
    on_local_stack(tmp_path, local_triton, slow_llm)
    run = tmp_path / "run"
    proc = mils(
        ["caption", str(tmp_path / "scenes"), "--steps", str(steps), *SMALL_LOOP,
         "--out", str(run), "--no-progress", "--ray", ray_cluster[0], "--ray-actors", "2",
         "--generator-url", slow_llm.base_url, "--generator-model", "load-llm",
         "--generator-in-flight", "2", "--max-requests", "40"],
        tmp_path, timeout=600, extra_env=RAY_ENV,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_complete(run, ids, steps)
    grown = [e for e in log_events(run) if e["event"] == "ray_shares_grown"]
    assert [(e["actors"], e["generator_limits"], e["budgets"]) for e in grown] == [
        (1, [2], [{"max_requests": 32}])
    ]


@pytest.fixture
def doomed_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, RayNode]]:
    """A two-node cluster of its own, for a test that kills its second node: the head's
    address, the second node."""
    logs = tmp_path_factory.mktemp("ray-doomed")
    with (
        RayNode(logs, NODE_CPUS) as head,
        RayNode(logs, NODE_CPUS, join=head.address) as node,
    ):
        deadline = time.monotonic() + 60
        while _nodes_alive(head.address) < 2:
            assert time.monotonic() < deadline, "the second Ray node did not join"
        yield head.address, node


def test_a_node_that_dies_mid_run_has_its_worker_restarted_on_another(
    doomed_cluster: tuple[str, RayNode],
    local_triton: TritonServer,
    slow_llm: LoadLLMServer,
    tmp_path: Path,
) -> None:
    """Eight scenes x 6 steps on 2 workers, one on each node; once 10 steps are committed
    the second node dies whole (its raylet, object store and worker processes SIGKILLed).
    Ray restarts that node's worker on the head, and the run ends with every sample done,
    each step committed exactly once."""
    address, node = doomed_cluster
    steps, run = 6, tmp_path / "run"
    ids, args = slow_caption(tmp_path, local_triton, slow_llm, address, steps)
    with driving(args, tmp_path, run, until_steps=10) as driver:
        (placed,) = [e["workers"] for e in log_events(run) if e["event"] == "ray_workers"]
        assert len({w["node"] for w in placed}) == 2, placed
        node.kill()
        killed_at = _steps_committed(run)
        assert driver.wait(timeout=300) == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
    assert killed_at < len(ids) * steps
    assert_complete(run, ids, steps)
    assert _nodes_alive(address) == 1  # the node stayed dead: the head did the rest
    restarts = [e for e in log_events(run) if e["event"] == "ray_worker_restarted"]
    assert restarts, "no restart logged"


def test_an_interrupted_ray_run_resumes_to_the_end_in_one_process_or_on_ray(
    ray_cluster: tuple[str, Path],
    local_triton: TritonServer,
    slow_llm: LoadLLMServer,
    tmp_path: Path,
) -> None:
    """Ctrl-C on the driver mid-run exits 130 naming `mils resume`, the workers gone; a
    resume on Ray is interrupted too, and a resume in one process (no --ray) finishes the
    run with each step committed exactly once."""
    steps, run = 6, tmp_path / "run"
    ids, args = slow_caption(tmp_path, local_triton, slow_llm, ray_cluster[0], steps)
    with driving(args, tmp_path, run, until_steps=6) as driver:
        driver.send_signal(signal.SIGINT)
        assert driver.wait(timeout=120) == 130
    assert f"mils resume {run}" in (tmp_path / "stderr.txt").read_text()
    resume = ["resume", str(run), "--no-progress", "--ray", ray_cluster[0], "--ray-actors", "2"]
    with driving(resume, tmp_path, run, until_steps=_steps_committed(run) + 6) as driver:
        driver.send_signal(signal.SIGINT)
        assert driver.wait(timeout=120) == 130
    assert _steps_committed(run) < len(ids) * steps
    proc = mils(["resume", str(run), "--no-progress"], tmp_path, extra_env=RAY_ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_complete(run, ids, steps)
