"""Ray scaling: one run's sample-steps/s on 1, 2 and 4 Ray actors, and with a worker killed.

    python -m benchmarks.ray_scaling [--samples N] [--steps K] [--actors 1 2 4]
                                     [--out benchmarks/results]

It starts the servers of the `scale` scenario (`benchmarks.scenarios`: a load-model Triton
and a load-model LLM server of 256 slots, both fast, so the engine is the bottleneck),
writes the targets as PNG files (each carries its target description in a tEXt chunk: the
load-model image encoder embeds the words of the bytes it is sent) and starts one local
Ray cluster (`ray start --head` on loopback) for the whole benchmark. Then, in this
process, the same samples go through `mils.open_run` into a fresh run directory each time:

    one-process    ray=None: the reference, the engine in this process
    ray-N          ray=RaySettings(address=HEAD, actors=N), for each N of --actors
    ray-2-killed   2 actors; once a third of the steps are committed, one shard worker's
                   process is SIGKILLed (Ray restarts it; its shard resumes from the store)

Per run: wall time (`open_run` entered to closed: the connection to Ray, the actors'
start and the pool's embedding included), time to the first committed step, sample-steps/s
and its ratio to the 1-actor run, the steps/s from the first committed step to the end,
CPU seconds of this process (the driver) and of the Ray head's processes by role (shard
workers, the store actor, the rest: raylet, GCS, idle workers), read from /proc every
`CPU_POLL_S` (what a process spends after the last poll before it exits is missed), and
from run.db: samples done, steps committed vs expected, (sample, step) pairs committed
more than once, samples with every step 0..K; the chat requests the LLM server answered
(steps done again show there) and the restarts the driver logged.

It prints one table and writes `<out>/ray_scaling.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog

import mils
from benchmarks.llm_server import LoadLLMServer
from benchmarks.scenarios import SCENARIOS, make_pool, make_targets
from benchmarks.scorer_server import IMAGE_MODEL, TEXT_MODEL, LoadScorerServer
from mils.adapters.local_stack import free_port

__all__ = ["RunResult", "main", "run_benchmark"]

SCALE = next(s for s in SCENARIOS if s.name == "scale")
"""Its servers and loop shape (keep / requested 10): the engine is the bottleneck."""
DEFAULT_OUT = Path("benchmarks/results")
DEFAULT_SAMPLES = 1500
DEFAULT_STEPS = 4
DEFAULT_ACTORS = (1, 2, 4)
DEFAULT_POOL = 300
KILL_ACTORS = 2
KILL_AFTER = 1 / 3
"""The kill run's worker dies once this fraction of the expected steps is committed."""
RAY_CPUS = 4
"""CPUs the Ray head declares: room for 4 shard workers (1 CPU each) whatever the machine."""
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
"""A loopback cluster for the benchmark alone: no usage reports, no auth token (the driver
in this process must agree with the head)."""
RAY_START_TIMEOUT_S = 180.0
CPU_POLL_S = 0.5
STEADY_MIN_S = 1.0
SHARD, STORE, OTHER = "ray::_ShardWorker", "ray::_StoreServer", "other"
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


# -- targets ------------------------------------------------------------------------


def png_with_text(text: str) -> bytes:
    """A valid 1x1 grey PNG whose tEXt chunk holds `text` (what the load model embeds)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)  # 1x1, 8-bit greyscale
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", header),
            chunk(b"tEXt", b"Description\x00" + text.encode("latin-1", errors="replace")),
            chunk(b"IDAT", zlib.compress(b"\x00\x80")),  # filter byte, one grey pixel
            chunk(b"IEND", b""),
        )
    )


def write_targets(dest: Path, count: int) -> list[str]:
    """`count` target images in `dest` (sample id = file stem); their paths."""
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for sample_id, description in make_targets(count):
        path = dest / f"{sample_id}.png"
        path.write_bytes(png_with_text(description.decode()))
        paths.append(str(path))
    return paths


# -- the Ray head and its processes' CPU --------------------------------------------


class RayNode:
    """`ray start --block` on loopback in its own session, a context manager: a head node,
    or with `join` (a head's address) a node joining its cluster."""

    def __init__(self, workdir: Path, num_cpus: int = RAY_CPUS, *, join: str | None = None) -> None:
        self.num_cpus = num_cpus
        self.port = free_port()
        self.address = join or f"127.0.0.1:{self.port}"
        # Short: Ray's socket paths must fit in 107 bytes.
        self.temp = None if join else Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
        """A head's logs and sockets; None for a joining node (it keeps the head's)."""
        self.log_path = workdir / f"ray-{'node' if join else 'head'}-{self.port}.log"
        self._join = join
        self.start_s = 0.0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def session(self) -> int:
        """The session id of every process of the node (its workers included)."""
        assert self._proc is not None
        return self._proc.pid

    def __enter__(self) -> RayNode:
        ray = Path(sys.executable).with_name("ray")
        role = (
            [f"--address={self._join}"]
            if self._join
            else ["--head", f"--port={self.port}", "--include-dashboard=false",
                  f"--temp-dir={self.temp}"]
        )  # fmt: skip
        args = [
            str(ray), "start", *role, "--node-ip-address=127.0.0.1", f"--num-cpus={self.num_cpus}",
            "--object-store-memory=200000000", "--disable-usage-stats", "--block",
        ]  # fmt: skip
        started = time.monotonic()
        with self.log_path.open("wb") as out:
            self._proc = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=os.environ | RAY_ENV,
                start_new_session=True,  # the node's processes end with its session
            )
        try:
            self._wait_started(started)
        except BaseException:
            self.__exit__()
            raise
        self.start_s = time.monotonic() - started
        return self

    def _wait_started(self, started: float) -> None:
        assert self._proc is not None
        while "Ray runtime started" not in self.log_path.read_text(errors="replace"):
            if self._proc.poll() is not None or time.monotonic() - started > RAY_START_TIMEOUT_S:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the Ray node did not start ({self.log_path}):\n{tail}")
            time.sleep(0.2)

    def kill(self) -> None:
        """The node dies whole: every process of its session SIGKILLed at once (its
        workers run in process groups of their own)."""
        for pid in _session_processes(self.session):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def __exit__(self, *exc_info: object) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)  # a node drains for up to 30 s
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if self.temp is not None:
            shutil.rmtree(self.temp, ignore_errors=True)


def _session_processes(session: int) -> dict[int, tuple[str, float]]:
    """pid -> (role, CPU seconds so far) of every live process of `session`."""
    found: dict[int, tuple[str, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if int(fields[3]) != session:  # fields from "state": state ppid pgrp session ...
                continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                command = f.read().split(b"\0", 1)[0].decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue  # exited while read
        role = next((r for r in (SHARD, STORE) if command.startswith(r)), OTHER)
        found[int(entry.name)] = (role, (int(fields[11]) + int(fields[12])) * TICK_S)
    return found


class SessionCpu:
    """CPU seconds spent by a session's processes since `start()`, by role; a process's
    role is the last it was seen in other than OTHER (an idle worker that became a shard
    worker counts as one)."""

    def __init__(self, session: int) -> None:
        self._session = session
        self._base: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._role: dict[int, str] = {}

    def start(self) -> None:
        self._base = {pid: cpu for pid, (_, cpu) in _session_processes(self._session).items()}
        self._last, self._role = {}, {}

    def poll(self) -> dict[int, str]:
        """Read every process once more; the live ones' roles."""
        now = _session_processes(self._session)
        for pid, (role, cpu) in now.items():
            self._last[pid] = cpu
            if role != OTHER or pid not in self._role:
                self._role[pid] = role
        return {pid: role for pid, (role, _) in now.items()}

    def totals(self) -> dict[str, float]:
        spent = dict.fromkeys((SHARD, STORE, OTHER), 0.0)
        for pid, cpu in self._last.items():
            spent[self._role[pid]] += cpu - self._base.get(pid, 0.0)
        return spent

    def shard_pids_seen(self) -> int:
        return sum(role == SHARD for role in self._role.values())


# -- one run ------------------------------------------------------------------------


@dataclass(slots=True)
class RunResult:
    """One run's measurements and its run directory's counts."""

    runner: str
    actors: int | None
    """Shard workers (None: the engine in this process)."""
    samples: int
    steps_expected: int
    wall_s: float
    first_step_s: float | None
    """From `open_run` entered to the first committed step (Ray: connect, start, embed)."""
    steps_per_s: float
    steady_steps_per_s: float | None
    """Steps committed per second from the first committed step to the run's end (None
    when that is under `STEADY_MIN_S`)."""
    driver_cpu_s: float
    shard_cpu_s: float | None
    store_cpu_s: float | None
    ray_other_cpu_s: float | None
    done: int
    failed: int
    steps_committed: int
    steps_duplicated: int
    samples_complete: int
    """Samples with exactly the steps 0..K in run.db."""
    llm_requests: int
    """Chat requests the LLM server answered (its own count): one per step, more where a
    step was done again after a worker died."""
    restarts: int
    """Shard workers restarted, as the driver logged (`ray_worker_restarted`)."""
    shard_processes: int | None
    """Distinct shard-worker processes seen (actors + restarts, when polls saw them all)."""
    killed_at_steps: int | None = None
    ratio: float | None = None
    """steps/s over the 1-actor run's."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_ms_per_step(self) -> float:
        parts = (self.shard_cpu_s, self.store_cpu_s, self.ray_other_cpu_s)
        total = self.driver_cpu_s + sum(p or 0.0 for p in parts)
        return 1000 * total / max(self.steps_committed, 1)


@dataclass(slots=True)
class _Workload:
    inputs: list[str]
    steps: int
    pool: list[str]
    generator: mils.GeneratorSettings
    scorer: mils.ScorerSettings
    workdir: Path
    llm: LoadLLMServer


class _Progress:
    """Committed steps as the run reports them, when, and a flag once `kill_at` are in."""

    def __init__(self, kill_at: int | None) -> None:
        self.steps = 0
        self.first: float | None = None
        self._kill_at = kill_at
        self.reached = asyncio.Event()

    def on_event(self, event: mils.Event) -> None:
        if not isinstance(event, mils.StepCommitted):
            return
        self.steps += 1
        self.first = self.first or time.monotonic()
        if self._kill_at is not None and self.steps >= self._kill_at:
            self.reached.set()


class _Restarts:
    """structlog processor: the restarts the driver logged (`ray_worker_restarted`)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(
        self, _: Any, __: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if event.get("event") == "ray_worker_restarted":
            self.count = max(self.count, int(event.get("restarts", 0)))
        return event


@contextlib.contextmanager
def _logging(restarts: _Restarts) -> Iterator[None]:
    """Warnings and errors only (a benchmark measures the engine, not its console), each
    seen by `restarts`; the previous structlog configuration restored after."""
    configured, previous = structlog.is_configured(), structlog.get_config()
    structlog.configure(
        processors=[restarts, structlog.processors.add_log_level, structlog.dev.ConsoleRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        if configured:
            structlog.configure(**previous)
        else:
            structlog.reset_defaults()


async def _poll_cpu(meter: SessionCpu) -> None:
    while True:
        await asyncio.to_thread(meter.poll)
        await asyncio.sleep(CPU_POLL_S)


async def _kill_one_worker(meter: SessionCpu, progress: _Progress, into: dict[str, Any]) -> None:
    """Once `progress` says so, SIGKILL one shard worker's process: the one started last,
    which has the most left to do when the workers did not start together."""
    await progress.reached.wait()
    roles = await asyncio.to_thread(meter.poll)
    shards = [pid for pid, role in roles.items() if role == SHARD]
    if shards:
        victim = max(shards, key=_started_at)
        os.kill(victim, signal.SIGKILL)
        into.update(killed_pid=victim, killed_at_steps=progress.steps)


def _started_at(pid: int) -> int:
    """When process `pid` started, in clock ticks after boot (0 if it has exited)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


async def run_once(
    runner: str,
    work: _Workload,
    head: RayNode,
    *,
    actors: int | None,
    kill: bool = False,
) -> RunResult:
    """One run of every sample into a fresh directory, measured; `kill`: one worker dies."""
    expected = len(work.inputs) * work.steps
    progress = _Progress(int(expected * KILL_AFTER) if kill else None)
    meter = SessionCpu(head.session)
    restarts = _Restarts()
    killed: dict[str, Any] = {}
    ray = None if actors is None else mils.RaySettings(address=head.address, actors=actors)
    out = work.workdir / runner
    requests0 = (await asyncio.to_thread(work.llm.stats))["requests"]
    with _logging(restarts):
        await asyncio.to_thread(meter.start)
        cpu0, wall0 = time.process_time(), time.monotonic()
        async with asyncio.TaskGroup() as tg:
            poller = tg.create_task(_poll_cpu(meter)) if ray else None
            killer = tg.create_task(_kill_one_worker(meter, progress, killed)) if kill else None
            try:
                async with mils.open_run(
                    "image-caption",
                    work.inputs,
                    generator=work.generator,
                    scorer=work.scorer,
                    out=out,
                    loop=mils.LoopConfig(
                        steps=work.steps, keep=SCALE.keep, requested=SCALE.requested
                    ),
                    pool=work.pool,
                    on_event=progress.on_event,
                    ray=ray,
                ) as run:
                    summary = await run.wait()
                    ended = time.monotonic()
            finally:
                for task in (poller, killer):
                    if task is not None:
                        task.cancel()
        wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    await asyncio.to_thread(meter.poll)  # what is left of the head's processes
    requests = (await asyncio.to_thread(work.llm.stats))["requests"] - requests0
    spent = meter.totals()
    counts = _counts(out, work.steps)
    steady = None
    if progress.first is not None and ended - progress.first >= STEADY_MIN_S:
        steady = counts["steps_committed"] / (ended - progress.first)
    return RunResult(
        runner=runner,
        actors=actors,
        samples=len(work.inputs),
        steps_expected=expected,
        wall_s=wall,
        first_step_s=None if progress.first is None else progress.first - wall0,
        steps_per_s=counts["steps_committed"] / wall,
        steady_steps_per_s=steady,
        driver_cpu_s=cpu,
        shard_cpu_s=spent[SHARD] if ray else None,
        store_cpu_s=spent[STORE] if ray else None,
        ray_other_cpu_s=spent[OTHER] if ray else None,
        done=counts["done"],
        failed=summary.failed,
        steps_committed=counts["steps_committed"],
        steps_duplicated=counts["steps_duplicated"],
        samples_complete=counts["samples_complete"],
        llm_requests=requests,
        restarts=restarts.count,
        shard_processes=meter.shard_pids_seen() if ray else None,
        killed_at_steps=killed.get("killed_at_steps"),
        extra={
            "summary_steps": summary.steps,
            "summary_wall_s": summary.wall_s,
            "cancelled": summary.cancelled,
            "texts_evaluated": summary.texts_evaluated,
            "generator_requests": summary.generator_requests,
            "killed_pid": killed.get("killed_pid"),
        },
    )


def _counts(run_dir: Path, steps: int) -> dict[str, int]:
    """What run.db holds: samples done, steps committed (step > 0), (sample, step) pairs
    committed more than once, samples whose steps are exactly 0..K."""
    db = sqlite3.connect(f"file:{run_dir / 'run.db'}?mode=ro", uri=True)

    def one(sql: str) -> int:
        return int(db.execute(sql).fetchone()[0])

    try:
        return {
            "done": one("SELECT COUNT(*) FROM samples WHERE status = 'done'"),
            "steps_committed": one("SELECT COUNT(*) FROM steps WHERE step > 0"),
            "steps_duplicated": one(
                "SELECT COUNT(*) FROM (SELECT sample_id, step, COUNT(*) FROM steps "
                "GROUP BY 1, 2 HAVING COUNT(*) > 1)"
            ),
            "samples_complete": one(
                "SELECT COUNT(*) FROM (SELECT sample_id FROM steps GROUP BY sample_id "
                f"HAVING COUNT(DISTINCT step) = {steps + 1} AND MIN(step) = 0 "
                f"AND MAX(step) = {steps})"
            ),
        }
    finally:
        db.close()


# -- the whole benchmark ------------------------------------------------------------


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


async def _run_all(
    work: _Workload, head: RayNode, actors: Sequence[int], kill: bool
) -> list[RunResult]:
    runs = [await run_once("one-process", work, head, actors=None)]
    for n in actors:
        print(f"  ray-{n} ...", file=sys.stderr, flush=True)
        runs.append(await run_once(f"ray-{n}", work, head, actors=n))
    if kill:
        print(f"  ray-{KILL_ACTORS}-killed ...", file=sys.stderr, flush=True)
        runs.append(
            await run_once(f"ray-{KILL_ACTORS}-killed", work, head, actors=KILL_ACTORS, kill=True)
        )
    one = next((r for r in runs if r.actors == 1 and r.killed_at_steps is None), None)
    for run in runs:
        run.ratio = run.steps_per_s / one.steps_per_s if one else None
    return runs


def run_benchmark(
    *,
    samples: int = DEFAULT_SAMPLES,
    steps: int = DEFAULT_STEPS,
    actors: Sequence[int] = DEFAULT_ACTORS,
    kill: bool = True,
    pool: int = DEFAULT_POOL,
    prefill_ms: float = SCALE.llm.prefill_ms,
    out: Path = DEFAULT_OUT,
) -> dict[str, Any]:
    """Start the servers and the Ray head, do every run, write `<out>/ray_scaling.json`,
    return its content. `prefill_ms`: the LLM server's time per request before its first
    token (a larger one makes a tiny run last long enough to kill a worker in it)."""
    llm_cost = dataclasses.replace(SCALE.llm, prefill_ms=prefill_ms)
    with (
        tempfile.TemporaryDirectory(prefix="mils-bench-ray-") as tmp,
        _environment(RAY_ENV),
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        print("starting the servers and the Ray head ...", file=sys.stderr, flush=True)
        scorer = stack.enter_context(LoadScorerServer(cost=SCALE.scorer, workdir=workdir / "tr"))
        llm = stack.enter_context(LoadLLMServer(cost=llm_cost, log_path=workdir / "llm.log"))
        head = stack.enter_context(RayNode(workdir))
        work = _Workload(
            inputs=write_targets(workdir / "targets", samples),
            steps=steps,
            pool=make_pool(pool),
            generator=mils.GeneratorSettings(base_url=llm.base_url, model=llm.cost.model),
            scorer=mils.ScorerSettings(
                url=scorer.grpc_url, text_model=TEXT_MODEL, target_model=IMAGE_MODEL
            ),
            workdir=workdir / "runs",
            llm=llm,
        )
        runs = asyncio.run(_run_all(work, head, actors, kill))
        report = {
            "benchmark": "ray_scaling",
            "workload": {
                "samples": samples,
                "steps": steps,
                "pool": pool,
                "keep": SCALE.keep,
                "requested": SCALE.requested,
            },
            "servers": {"llm": asdict(llm_cost), "scorer": asdict(SCALE.scorer)},
            "ray": {"num_cpus": head.num_cpus, "head_start_s": head.start_s},
            "machine_cpus": os.cpu_count(),
            "runs": [asdict(run) | {"cpu_ms_per_step": run.cpu_ms_per_step} for run in runs],
        }
    out.mkdir(parents=True, exist_ok=True)
    (out / "ray_scaling.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


_COLUMNS = (
    "runner", "wall s", "1st step s", "steps/s", "ratio", "steady/s", "driver cpu",
    "shard cpu", "store cpu", "ray cpu", "cpu ms/step", "done", "steps", "dup",
    "complete", "llm req", "restarts",
)  # fmt: skip


def format_table(report: dict[str, Any]) -> str:
    """The runs as an aligned text table."""

    def num(value: float | None, fmt: str = ".1f") -> str:
        return "" if value is None else format(value, fmt)

    rows = [_COLUMNS]
    for run in report["runs"]:
        killed = run["killed_at_steps"]
        rows.append(
            (
                run["runner"],
                num(run["wall_s"]),
                num(run["first_step_s"]),
                num(run["steps_per_s"]),
                num(run["ratio"], ".2f") + ("x" if run["ratio"] is not None else ""),
                num(run["steady_steps_per_s"]),
                num(run["driver_cpu_s"]),
                num(run["shard_cpu_s"]),
                num(run["store_cpu_s"]),
                num(run["ray_other_cpu_s"]),
                num(run["cpu_ms_per_step"], ".2f"),
                f"{run['done']}/{run['samples']}",
                f"{run['steps_committed']}/{run['steps_expected']}",
                str(run["steps_duplicated"]),
                f"{run['samples_complete']}/{run['samples']}",
                str(run["llm_requests"]),
                str(run["restarts"]) + (f" (kill at {killed})" if killed is not None else ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    )


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.ray_scaling",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="samples per run")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="steps per sample")
    p.add_argument(
        "--actors", type=int, nargs="+", default=list(DEFAULT_ACTORS), help="actor counts"
    )
    p.add_argument("--pool", type=int, default=DEFAULT_POOL, help="initial pool size")
    p.add_argument(
        "--prefill-ms",
        type=float,
        default=SCALE.llm.prefill_ms,
        help="the LLM server's time per request before its first token",
    )
    p.add_argument("--no-kill", action="store_true", help="skip the run with a worker killed")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON file goes")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark; print the table; write the JSON file."""
    args = _parse_args(argv)
    report = run_benchmark(
        samples=args.samples,
        steps=args.steps,
        actors=args.actors,
        kill=not args.no_kill,
        pool=args.pool,
        prefill_ms=args.prefill_ms,
        out=args.out,
    )
    print(format_table(report))
    print(f"\nRay head started in {report['ray']['head_start_s']:.1f} s")
    print(f"JSON in {args.out}/ray_scaling.json")


if __name__ == "__main__":
    main()
