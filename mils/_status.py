"""`mils status RUN_DIR` and `mils runs [DIR]`: a run's progress, read while it runs.

Reads only: the database through a read-only SQLite connection (WAL lets it read while an
engine writes), and whether an engine holds the run from its lock file.
"""

from __future__ import annotations

import fcntl
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from mils.engine import RunStore, StoreError

__all__ = ["RunState", "print_runs", "print_status", "run_state"]


@dataclass(frozen=True, slots=True)
class RunState:
    run_dir: Path
    samples: int
    done: int
    failed: int
    pending: int
    """Not finished: never started, running, or stopped mid-way (a resume continues them)."""
    steps: int
    """Steps committed (step 0, the initial pool, not counted)."""
    last_activity: float | None
    engine: str | None
    """Who holds the run now ("mils pid N"), or None."""
    tasks: dict[str, tuple[int, int]] = field(default_factory=dict)
    """A run of several tasks: per task, (samples done, samples); empty in a run of one."""


def run_state(run_dir: Path) -> RunState:
    """The state of `run_dir`.

    Raises:
        StoreError: it is not a run of ours, or its database cannot be read.
    """
    if not RunStore.is_run(run_dir) or not (run_dir / "run.db").is_file():
        raise StoreError(f"{run_dir} is not a mils run directory")
    try:
        db = sqlite3.connect((run_dir / "run.db").resolve().as_uri() + "?mode=ro", uri=True)
        try:
            counts = dict(db.execute("SELECT status, COUNT(*) FROM samples GROUP BY status"))
            steps, last_step = db.execute(
                "SELECT COUNT(*), MAX(created_at) FROM steps WHERE step > 0"
            ).fetchone()
            (last_sample,) = db.execute("SELECT MAX(updated_at) FROM samples").fetchone()
            tasks = _tasks(db)
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read {run_dir / 'run.db'}: {exc}") from None
    done, failed = counts.get("done", 0), counts.get("failed", 0)
    total = sum(counts.values())
    times = [t for t in (last_step, last_sample) if t is not None]
    return RunState(
        run_dir=run_dir,
        samples=total,
        done=done,
        failed=failed,
        pending=total - done - failed,
        steps=steps,
        last_activity=max(times) if times else None,
        engine=_holder(run_dir / ".lock"),
        tasks=tasks,
    )


def _tasks(db: sqlite3.Connection) -> dict[str, tuple[int, int]]:
    """(done, samples) per task of a run of several tasks; {} for a run of one (its samples
    name no task, or predate the column)."""
    if "task" not in {row[1] for row in db.execute("PRAGMA table_info(samples)")}:
        return {}
    rows = db.execute(
        "SELECT task, SUM(status = 'done'), COUNT(*) FROM samples WHERE task IS NOT NULL "
        "GROUP BY task ORDER BY MIN(ord)"
    ).fetchall()
    return {task: (done, total) for task, done, total in rows}


def _holder(lock: Path) -> str | None:
    """Who holds the run's lock, or None (tested with a shared lock, released at once)."""
    if not lock.is_file():
        return None
    with lock.open("r") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "another process"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def _ago(when: float | None) -> str:
    if when is None:
        return "never"
    seconds = max(0, int(time.time() - when))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def print_status(run_dir: Path, out: TextIO) -> None:
    state = run_state(run_dir)
    engine = f"running ({state.engine})" if state.engine else "not running"
    out.write(
        f"run        {run_dir}\n"
        f"samples    {state.samples}: {state.done} done, {state.failed} failed, "
        f"{state.pending} pending\n"
        + "".join(
            f"{'tasks' if i == 0 else '':<10} {task}: {done}/{total} done\n"
            for i, (task, (done, total)) in enumerate(state.tasks.items())
        )
        + f"steps      {state.steps} committed\n"
        f"activity   {_ago(state.last_activity)}\n"
        f"engine     {engine}\n"
    )
    if state.pending and not state.engine:
        out.write(f"continue   mils resume {run_dir}\n")


def print_runs(folder: Path, out: TextIO) -> int:
    """One line per run under `folder`; returns how many."""
    runs = (
        sorted(p for p in folder.iterdir() if p.is_dir() and RunStore.is_run(p))
        if (folder.is_dir())
        else []
    )
    for run_dir in runs:
        try:
            s = run_state(run_dir)
        except StoreError as exc:
            out.write(f"{run_dir}\tunreadable: {exc}\n")
            continue
        engine = "running" if s.engine else "stopped"
        out.write(
            f"{run_dir}\t{s.done}/{s.samples} done\t{s.failed} failed\t{s.steps} steps\t"
            f"{engine}\t{_ago(s.last_activity)}\n"
        )
    return len(runs)
