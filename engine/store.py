"""The run directory: SQLite (WAL) store of samples and committed steps, and its exports.

Layout of a run directory:

    run.db          samples, steps (one row per committed step), candidates (every scored text)
    config.json     the run's configuration (no secrets), enough to resume it
    pool.txt        the initial pool the run started from
    log.jsonl       structured logs
    results.jsonl   one line per sample, written at the end of every run or resume
    .lock           held (flock) by the engine process working on the directory

Each finished step is one transaction: its step row, its candidates and the sample's
progress commit together or not at all, so a killed process loses at most the steps in
flight and never half a step. Methods are synchronous and thread-safe; the scheduler
calls them through `asyncio.to_thread`.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import RunLocked, StoreError
from engine.optimizer import StepRecord

__all__ = ["RunStore", "SampleProgress", "SampleRow"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    id TEXT PRIMARY KEY,
    ord INTEGER NOT NULL,
    source TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    error TEXT,
    steps_done INTEGER NOT NULL DEFAULT 0,
    best_text TEXT,
    best_score REAL,
    updated_at REAL
);
CREATE TABLE IF NOT EXISTS steps (
    sample_id TEXT NOT NULL REFERENCES samples(id),
    step INTEGER NOT NULL,
    best_text TEXT NOT NULL,
    best_score REAL NOT NULL,
    mean_top_k REAL NOT NULL,
    n_new INTEGER NOT NULL,
    pool TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (sample_id, step)
);
CREATE TABLE IF NOT EXISTS candidates (
    sample_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    pos INTEGER NOT NULL,
    text TEXT NOT NULL,
    score REAL NOT NULL,
    PRIMARY KEY (sample_id, step, pos)
);
"""

DONE, FAILED, PENDING, RUNNING = "done", "failed", "pending", "running"


@dataclass(frozen=True, slots=True)
class SampleRow:
    id: str
    source: str
    status: str
    error: str | None
    steps_done: int


@dataclass(frozen=True, slots=True)
class SampleProgress:
    """What a sample had committed: enough for `SampleOptimizer.restore`."""

    last: StepRecord | None
    scored_texts: list[str]
    best_history: list[float]


class RunStore:
    """One run directory, opened exclusively by one process."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._lock = threading.Lock()
        self._lock_file = self._acquire_dir_lock()
        try:
            self._db = sqlite3.connect(
                run_dir / "run.db", check_same_thread=False, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            self._lock_file.close()
            raise StoreError(
                f"cannot open the run database {run_dir / 'run.db'}: {exc}; "
                "check the path and permissions, or start a new run with another --out"
            ) from exc

    @classmethod
    def create(
        cls,
        run_dir: Path,
        config: dict[str, Any],
        pool: Sequence[str],
        samples: Sequence[tuple[str, str]] = (),
    ) -> RunStore:
        """Start a new run directory; refuses one that already holds a run.

        A directory holds a run once its samples are registered, which happens last (one
        transaction, after config.json and pool.txt are written atomically): a process
        killed while creating a run leaves a directory the same `mils caption` restarts.
        """
        if _holds_samples(run_dir / "run.db"):
            raise StoreError(
                f"{run_dir} already holds a run; continue it with `mils resume {run_dir}` "
                "or pass another --out"
            )
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create run directory {run_dir}: {exc}") from exc
        store = cls(run_dir)  # holds the lock from here: a live run is never clobbered
        try:
            _write_atomic(run_dir / "config.json", json.dumps(config, indent=2) + "\n")
            _write_atomic(run_dir / "pool.txt", "".join(f"{text}\n" for text in pool))
            if samples:
                store.add_samples(samples)
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def open(cls, run_dir: Path) -> RunStore:
        """Open an existing run directory (for resume)."""
        if not (run_dir / "run.db").is_file() or not (run_dir / "config.json").is_file():
            raise StoreError(
                f"{run_dir} is not a run directory (no run.db/config.json); "
                "pass the --out directory of an earlier `mils caption`"
            )
        store = cls(run_dir)
        if not store.samples():
            store.close()
            raise StoreError(
                f"{run_dir} holds no samples: the run was stopped while it was being "
                f"created; start it again with the same `mils caption ... --out {run_dir}`"
            )
        return store

    def _acquire_dir_lock(self) -> Any:
        handle = open(self.run_dir / ".lock", "a+")  # noqa: SIM115 - held for the store's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunLocked(
                f"run directory {self.run_dir} is in use by {holder}; wait for it to finish "
                "or stop it before resuming"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"mils pid {os.getpid()}\n")
        handle.flush()
        return handle

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._lock_file.close()

    # -- reading ------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        return dict(json.loads((self.run_dir / "config.json").read_text(encoding="utf-8")))

    def pool(self) -> list[str]:
        return (self.run_dir / "pool.txt").read_text(encoding="utf-8").splitlines()

    def samples(self) -> list[SampleRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, source, status, error, steps_done FROM samples ORDER BY ord"
            ).fetchall()
        return [SampleRow(sid, _source_out(src), *rest) for sid, src, *rest in rows]

    def progress(self, sample_id: str) -> SampleProgress:
        """The committed steps of a sample, for resuming it."""
        with self._lock:
            steps = self._db.execute(
                "SELECT step, best_text, best_score, mean_top_k, pool FROM steps "
                "WHERE sample_id = ? ORDER BY step",
                (sample_id,),
            ).fetchall()
            texts = [
                row[0]
                for row in self._db.execute(
                    "SELECT text FROM candidates WHERE sample_id = ?", (sample_id,)
                )
            ]
        last = None
        if steps:
            step, best_text, best_score, mean, pool = steps[-1]
            last = StepRecord(
                step=step,
                best=(best_score, best_text),
                mean_top_k=mean,
                new=(),
                pool=tuple((score, text) for score, text in json.loads(pool)),
            )
        return SampleProgress(last=last, scored_texts=texts, best_history=[row[2] for row in steps])

    # -- writing ------------------------------------------------------------------

    def add_samples(self, samples: Sequence[tuple[str, str]]) -> None:
        """Register (id, source) pairs in input order."""
        with self._lock, self._transaction():
            self._db.executemany(
                "INSERT INTO samples (id, ord, source) VALUES (?, ?, ?)",
                [(sid, i, _source_in(source)) for i, (sid, source) in enumerate(samples)],
            )

    def commit_step(self, sample_id: str, record: StepRecord) -> None:
        """Commit one finished step atomically."""
        now = time.time()
        score, text = record.best
        with self._lock, self._transaction():
            self._db.execute(
                "INSERT INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    sample_id,
                    record.step,
                    text,
                    score,
                    record.mean_top_k,
                    len(record.new),
                    json.dumps(record.pool),
                    now,
                ),
            )
            self._db.executemany(
                "INSERT INTO candidates VALUES (?, ?, ?, ?, ?)",
                [(sample_id, record.step, i, t, s) for i, (t, s) in enumerate(record.new)],
            )
            self._db.execute(
                "UPDATE samples SET status = ?, steps_done = ?, best_text = ?, best_score = ?, "
                "error = NULL, updated_at = ? WHERE id = ?",
                (RUNNING, record.step, text, score, now, sample_id),
            )

    def finish_sample(self, sample_id: str, *, error: str | None = None) -> None:
        """Mark a sample done, or failed with its reason."""
        status = DONE if error is None else FAILED
        with self._lock, self._transaction():
            self._db.execute(
                "UPDATE samples SET status = ?, error = ?, updated_at = ? WHERE id = ?",
                (status, None if error is None else _printable(error), time.time(), sample_id),
            )

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(
                f"writing the run database {self.run_dir / 'run.db'} failed: {exc}; "
                "check free disk space, then `mils resume` the run"
            ) from exc

    # -- exports ------------------------------------------------------------------

    def export_results(self) -> Path:
        """Write results.jsonl (atomically): one line per sample with its trajectory."""
        with self._lock:
            samples = self._db.execute(
                "SELECT id, source, status, error, steps_done, best_text, best_score "
                "FROM samples ORDER BY ord"
            ).fetchall()
            steps: dict[str, list[dict[str, Any]]] = {}
            for sid, step, text, score, mean, n_new in self._db.execute(
                "SELECT sample_id, step, best_text, best_score, mean_top_k, n_new "
                "FROM steps ORDER BY sample_id, step"
            ):
                steps.setdefault(sid, []).append(
                    {
                        "step": step,
                        "best_text": text,
                        "best_score": score,
                        "mean_top_k": mean,
                        "new_candidates": n_new,
                    }
                )
        path = self.run_dir / "results.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        with tmp.open("w", encoding="utf-8") as out:
            for sid, source, status, error, done, text, score in samples:
                line = {
                    "sample_id": sid,
                    "source": _printable(_source_out(source)),
                    "status": status,
                    "error": error,
                    "steps": done,
                    "best_text": text,
                    "best_score": score,
                    "trajectory": steps.get(sid, []),
                }
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
        return path


def _holds_samples(db_path: Path) -> bool:
    """Whether a run database exists with registered samples (read-only peek, no lock)."""
    if not db_path.is_file():
        return False
    try:
        db = sqlite3.connect(db_path.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            return db.execute("SELECT 1 FROM samples LIMIT 1").fetchone() is not None
        finally:
            db.close()
    except sqlite3.Error:  # no samples table yet: creation was interrupted
        return False


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _source_in(source: str) -> str | bytes:
    """A path as SQLite can hold it: text, or the raw bytes of a non-UTF-8 file name."""
    try:
        source.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(source)
    return source


def _source_out(value: str | bytes) -> str:
    return os.fsdecode(value) if isinstance(value, bytes) else value


def _printable(text: str) -> str:
    """Text safe to store and print: undecodable bytes of odd file names become escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
