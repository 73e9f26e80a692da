"""The run directory: SQLite (WAL) store of samples and committed steps, and its exports.

Layout of a run directory:

    run.db          samples, steps (one row per committed step, with the generator requests
                    and tokens it took), candidates (every scored text, with its named terms
                    and artefact where the objective gives them), batches (the Batch API
                    jobs sent in batch mode, so that a resume waits for them instead of
                    paying twice)
    config.json     the run's configuration (no secrets), enough to resume it
    pool.txt        the initial pool the run started from; a run of several tasks (images,
                    videos and sounds together) has one per task instead, pools/TASK.txt
    log.jsonl       structured logs
    results.jsonl   one line per sample, written at the end of every run or resume
    artefacts/      media made while scoring (rendered images), one folder per sample
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
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mils.engine.errors import ConfigError, RunLocked, StoreError
from mils.engine.objectives import Evaluation
from mils.engine.optimizer import StepRecord
from mils.engine.usage import Usage

__all__ = [
    "CANCELLED",
    "DONE",
    "FAILED",
    "PENDING",
    "RUNNING",
    "RunStore",
    "SampleEnd",
    "SampleProgress",
    "SampleRow",
    "StepCommit",
    "write_atomic",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    id TEXT PRIMARY KEY,
    ord INTEGER NOT NULL,
    source TEXT NOT NULL,
    inputs TEXT,
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
    terms TEXT,
    artefact TEXT,
    PRIMARY KEY (sample_id, step, pos)
);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    custom_ids TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (endpoint, id)
);
"""
# Columns added since the first release (name -> SQL type), for run directories written
# before them; every database gets them by ALTER TABLE, so rows are written by column name.
_USAGE_COLUMNS = ("requests", "prompt_tokens", "completion_tokens", "estimated_requests")
"""Per step: generator requests, their tokens, and how many of them were estimated."""
_ADDED_COLUMNS: dict[str, dict[str, str]] = {
    "samples": {"inputs": "TEXT", "task": "TEXT"},
    "candidates": {"terms": "TEXT", "artefact": "TEXT"},
    "steps": {name: "INTEGER NOT NULL DEFAULT 0" for name in _USAGE_COLUMNS},
}
_STEP_COLUMNS = (
    "sample_id, step, best_text, best_score, mean_top_k, n_new, pool, created_at, "
    + ", ".join(_USAGE_COLUMNS)
)

RUN_FORMAT = "mils-run"
"""The mark in config.json that tells our run directories from other folders."""
DONE, FAILED, PENDING, RUNNING = "done", "failed", "pending", "running"
POOLS = "pools"
"""The folder of a run of several tasks' initial pools, one TASK.txt each."""
CANCELLED = "cancelled"
"""Reported for a sample stopped by the caller; stored as it was (a resume continues it)."""
ARTEFACTS = "artefacts"
_SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")


@dataclass(frozen=True, slots=True)
class SampleRow:
    id: str
    source: str
    status: str
    error: str | None
    steps_done: int
    inputs: dict[str, str]
    task: str = ""
    """The sample's task in a run of several tasks; "" in a run of one (its config's)."""


@dataclass(frozen=True, slots=True)
class SampleProgress:
    """What a sample had committed: enough for `SampleOptimizer.restore`."""

    last: StepRecord | None
    scored_texts: list[str]
    best_history: list[float]


StepCommit = tuple[str, StepRecord, Sequence[Evaluation] | None, Usage | None]
"""One step to commit: sample id, its record, the details of its new candidates, usage."""
SampleEnd = tuple[str, str | None]
"""A sample's end, for `RunStore.commit_steps`: its id and its error (None: done)."""


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
            self._add_missing_columns()
        except sqlite3.Error as exc:
            self._lock_file.close()
            raise StoreError(
                f"cannot open the run database {run_dir / 'run.db'}: {exc}; "
                "check the path and permissions, or start a new run with another `out`"
            ) from exc

    @classmethod
    def create(
        cls,
        run_dir: Path,
        config: dict[str, Any],
        pool: Sequence[str] | Mapping[str, Sequence[str]],
        samples: Sequence[tuple[str, Mapping[str, str]]] = (),
        *,
        tasks: Mapping[str, str] | None = None,
    ) -> RunStore:
        """Start a new run directory; refuses one that already holds a run, and a non-empty
        folder that is not a run of ours (see `check_new`).

        `pool` is the run's initial pool, or one per task (task name -> texts) for a run of
        several tasks, whose `tasks` then gives each sample's task (sample id -> task).

        A directory holds a run once its samples are registered, which happens last (one
        transaction, after config.json and pool.txt are written atomically): a process
        killed while creating a run leaves a directory the same `mils caption` restarts.
        """
        cls.check_new(run_dir)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create run directory {run_dir}: {exc}") from exc
        store = cls(run_dir)  # holds the lock from here: a live run is never clobbered
        try:
            marked = {"format": RUN_FORMAT, **config}
            _write_atomic(run_dir / "config.json", json.dumps(marked, indent=2) + "\n")
            if isinstance(pool, Mapping):
                for task, texts in pool.items():
                    _write_atomic(run_dir / POOLS / f"{task}.txt", _lines(texts))
            else:
                _write_atomic(run_dir / "pool.txt", _lines(pool))
            if samples:
                store.add_samples(samples, tasks=tasks)
        except BaseException:
            store.close()
            raise
        return store

    @staticmethod
    def check_new(run_dir: Path) -> None:
        """Refuse `run_dir` for a new run unless it is absent, empty, or a run of ours that
        was stopped while being created. Reads only.

        Raises:
            StoreError: it holds a run already, or files that are not a run of ours.
        """
        if _holds_samples(run_dir / "run.db"):
            raise StoreError(
                f"{run_dir} already holds a run; continue it with `mils resume {run_dir}` "
                "or pass another `out`"
            )
        if run_dir.exists() and not run_dir.is_dir():
            raise StoreError(f"{run_dir} is a file; pass a folder as `out`")
        found = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
        # The CLI opens the run's log (and a crash may leave the lock) before the marker.
        if set(found) - {"log.jsonl", ".lock"} and not _is_ours(run_dir):
            shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
            raise StoreError(
                f"{run_dir} is not empty ({shown}) and holds no mils run; nothing was changed. "
                "Pass a new or empty folder as `out`"
            )

    @staticmethod
    def is_run(run_dir: Path) -> bool:
        """Whether `run_dir` is a run directory of ours (reads only)."""
        return _is_ours(run_dir)

    @classmethod
    def salvage(cls, src: Path, dest: Path) -> dict[str, int]:
        """Copy every readable committed step of a (damaged) run into a new run at `dest`.

        Rows are read until the first unreadable one of each table; a sample keeps its
        steps up to the first missing one (a later step cannot be resumed without it), so
        `dest` resumes exactly. Returns what was copied, per table.
        """
        config = json.loads((src / "config.json").read_text(encoding="utf-8"))
        config.pop("format", None)
        pool: list[str] | dict[str, list[str]] = (
            {path.stem: _read_lines(path) for path in sorted((src / POOLS).glob("*.txt"))}
            if (src / POOLS).is_dir()
            else _read_lines(src / "pool.txt")
        )
        db = sqlite3.connect((src / "run.db").resolve().as_uri() + "?mode=ro", uri=True)
        try:
            task = "task" if "task" in _columns(db, "samples") else "NULL"
            samples = _readable(db, f"SELECT id, source, inputs, {task} FROM samples ORDER BY ord")
            steps = _readable(db, f"SELECT {_old_columns(db)} FROM steps ORDER BY sample_id, step")
            candidates = _readable(db, "SELECT * FROM candidates")
        finally:
            db.close()
        kept: dict[str, int] = {}  # sample -> last step kept (contiguous from 0 or 1)
        for row in steps:
            sid, step = row[0], row[1]
            if step == kept.get(sid, 0) + 1 or (step == 0 and sid not in kept):
                kept[sid] = step
        steps = [row for row in steps if row[1] <= kept.get(row[0], -1)]
        candidates = [row for row in candidates if 0 < row[1] <= kept.get(row[0], -1)]
        entries = [(sid, _inputs_out(inputs, source)) for sid, source, inputs, _ in samples]
        tasks = {sid: task for sid, _, _, task in samples if task}
        store = cls.create(dest, config, pool, entries, tasks=tasks or None)
        try:
            with store._lock, store._transaction():
                store._db.executemany(
                    f"INSERT INTO steps ({_STEP_COLUMNS}) VALUES ({_marks(_STEP_COLUMNS)})", steps
                )
                store._db.executemany(
                    "INSERT INTO candidates (sample_id, step, pos, text, score, terms, artefact) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    candidates,
                )
                store._db.execute(
                    "UPDATE samples SET steps_done = COALESCE((SELECT MAX(step) FROM steps "
                    "WHERE sample_id = samples.id), 0)"
                )
        finally:
            store.close()
        if (src / ARTEFACTS).is_dir():
            shutil.copytree(src / ARTEFACTS, dest / ARTEFACTS, dirs_exist_ok=True)
        return {"samples": len(entries), "steps": len(steps), "candidates": len(candidates)}

    @classmethod
    def open(cls, run_dir: Path) -> RunStore:
        """Open an existing run directory (for resume); a damaged one is refused.

        Raises:
            StoreError: not a run of ours (nothing is changed), or its database is damaged
                (`salvage` copies what can be read into a new run).
        """
        if not (run_dir / "run.db").is_file() or not _is_ours(run_dir):
            raise StoreError(
                f"{run_dir} is not a mils run directory (no run.db/config.json of a run); "
                "nothing was changed. Pass the `out` directory of an earlier run"
            )
        try:
            store = cls(run_dir)
        except RunLocked:
            raise
        except StoreError as exc:  # the database cannot even be opened
            raise StoreError(f"{exc}; {_salvage_hint(run_dir)}") from None
        damage = store._quick_check()
        if damage:
            store.close()
            raise StoreError(
                f"the run database {run_dir / 'run.db'} is damaged ({damage}); nothing was "
                f"written to it. {_salvage_hint(run_dir)}"
            )
        if not store.samples():
            store.close()
            raise StoreError(
                f"{run_dir} holds no samples: the run was stopped while it was being "
                f"created; start it again with the same inputs and `out` {run_dir}"
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

    def _add_missing_columns(self) -> None:
        for table, columns in _ADDED_COLUMNS.items():
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for column, sql_type in columns.items():
                if column not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")

    def _quick_check(self) -> str | None:
        """What `PRAGMA quick_check` finds wrong with the database, or None."""
        try:
            with self._lock:
                rows = [row[0] for row in self._db.execute("PRAGMA quick_check").fetchmany(3)]
        except sqlite3.DatabaseError as exc:
            return str(exc)
        return None if rows == ["ok"] else "; ".join(map(str, rows))

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._lock_file.close()

    # -- reading ------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        return dict(json.loads((self.run_dir / "config.json").read_text(encoding="utf-8")))

    def update_config(self, section: str, values: Mapping[str, Any] | None) -> None:
        """Replace one section of config.json (atomically): a resume's new budget; None
        writes null (a section switched off)."""
        config = self.config()
        config[section] = None if values is None else dict(values)
        _write_atomic(self.run_dir / "config.json", json.dumps(config, indent=2) + "\n")

    def pool(self, task: str = "") -> list[str]:
        """The initial pool of `task` in a run of several tasks (pools/TASK.txt); the run's
        pool.txt in a run of one (whatever `task`: a run written before tasks were mixed)."""
        path = self.run_dir / POOLS / f"{task}.txt"
        if not task or not path.is_file():
            path = self.run_dir / "pool.txt"
        return _read_lines(path)

    def samples(self) -> list[SampleRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, source, status, error, steps_done, inputs, task FROM samples "
                "ORDER BY ord"
            ).fetchall()
        return [
            SampleRow(
                sid, _source_out(src), status, error, done, _inputs_out(inputs, src), task or ""
            )
            for sid, src, status, error, done, inputs, task in rows
        ]

    def progress(self, sample_id: str) -> SampleProgress:
        """The committed steps of a sample, for resuming it."""
        with self._lock:
            # Step 0 (the initial pool's result) is a record only: resume re-ranks the pool.
            steps = self._db.execute(
                "SELECT step, best_text, best_score, mean_top_k, pool FROM steps "
                "WHERE sample_id = ? AND step > 0 ORDER BY step",
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

    def usage(self) -> Usage:
        """The generator requests and tokens of every committed step of the run (all its
        sessions): what a budget counts."""
        with self._lock:
            row = self._db.execute(
                "SELECT "
                + ", ".join(f"COALESCE(SUM({c}), 0)" for c in _USAGE_COLUMNS)
                + " FROM steps"
            ).fetchone()
        return Usage(*row)

    def batches(self, endpoint: str) -> list[tuple[str, list[str]]]:
        """(job id, its lines' custom ids) of every Batch API job sent to `endpoint`,
        oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, custom_ids FROM batches WHERE endpoint = ? ORDER BY created_at",
                (endpoint,),
            ).fetchall()
        return [(batch_id, json.loads(ids)) for batch_id, ids in rows]

    def _run_task(self) -> str | None:
        """The task config.json names (a sample of a run of one task has no task of its
        own); None when it cannot be read."""
        try:
            task = self.config().get("task")
        except (OSError, ValueError):
            return None
        return task if isinstance(task, str) else None

    # -- writing ------------------------------------------------------------------

    def record_batch(self, batch_id: str, endpoint: str, custom_ids: Sequence[str]) -> None:
        """Commit a Batch API job the moment it exists (`mils.adapters.openai_batch`)."""
        with self._lock, self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO batches (id, endpoint, custom_ids, created_at) "
                "VALUES (?, ?, ?, ?)",
                (batch_id, endpoint, json.dumps(list(custom_ids)), time.time()),
            )

    def add_samples(
        self,
        samples: Sequence[tuple[str, Mapping[str, str]]],
        *,
        tasks: Mapping[str, str] | None = None,
    ) -> None:
        """Register (id, inputs) pairs in input order; inputs map input names to sources.
        `tasks` gives each sample's task (sample id -> task) in a run of several tasks.

        Raises:
            ConfigError: an id is not a safe file name (it names the sample's artefact folder).
        """
        for sid, _ in samples:
            if not _SAFE_ID.fullmatch(sid):
                raise ConfigError(
                    f"sample id {sid!r} is not usable; use letters, digits, '.', '_' and '-' "
                    "only, not starting with '.'"
                )
        tasks = tasks or {}
        rows = [
            (sid, i, _source_in(_display(inputs)), json.dumps(dict(inputs)), tasks.get(sid))
            for i, (sid, inputs) in enumerate(samples)
        ]
        with self._lock, self._transaction():
            self._db.executemany(
                "INSERT INTO samples (id, ord, source, inputs, task) VALUES (?, ?, ?, ?, ?)", rows
            )

    def commit_step(
        self,
        sample_id: str,
        record: StepRecord,
        details: Sequence[Evaluation] | None = None,
        usage: Usage | None = None,
    ) -> None:
        """Commit one finished step atomically (step 0: the initial pool's result, which
        a resume before step 1 records again). `usage`: the generator requests it took.

        `details` holds the evaluations of `record.new` (same order) when they carry terms
        or artefacts; artefact files are written first, so a committed row never names a
        missing file.
        """
        self.commit_steps([(sample_id, record, details, usage)])

    def commit_steps(self, steps: Sequence[StepCommit], ended: Sequence[SampleEnd] = ()) -> None:
        """Commit several samples' finished steps (`commit_step`'s arguments each), then
        the ends of the `ended` samples (`finish_sample`'s), in one transaction: all of
        them, or none."""
        now = time.time()
        writes = []  # (step row, candidate rows, sample update), built before the lock
        for sample_id, record, details, usage in steps:
            extra = self._write_details(sample_id, record.step, details) if details else None
            rows = [
                (sample_id, record.step, i, t, s, *(extra[i] if extra else (None, None)))
                for i, (t, s) in enumerate(record.new)
            ]
            used = usage or Usage()
            score, text = record.best
            step_row = (
                sample_id,
                record.step,
                text,
                score,
                record.mean_top_k,
                len(record.new),
                json.dumps(record.pool),
                now,
                used.requests,
                used.prompt_tokens,
                used.completion_tokens,
                used.estimated_requests,
            )
            update = (RUNNING, record.step, text, score, now, sample_id)
            writes.append((record.step == 0, step_row, rows, update))
        ends = [
            (FAILED, _printable(error), now, sid) if error is not None else (DONE, None, now, sid)
            for sid, error in ended
        ]
        with self._lock, self._transaction():
            for initial, step_row, rows, update in writes:
                self._db.execute(
                    ("INSERT OR REPLACE" if initial else "INSERT")
                    + f" INTO steps ({_STEP_COLUMNS}) VALUES ({_marks(_STEP_COLUMNS)})",
                    step_row,
                )
                self._db.executemany(
                    "INSERT INTO candidates (sample_id, step, pos, text, score, terms, artefact) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._db.execute(
                    "UPDATE samples SET status = ?, steps_done = ?, best_text = ?, "
                    "best_score = ?, error = NULL, updated_at = ? WHERE id = ?",
                    update,
                )
            self._db.executemany(
                "UPDATE samples SET status = ?, error = ?, updated_at = ? WHERE id = ?",
                ends,
            )

    def finish_sample(self, sample_id: str, *, error: str | None = None) -> None:
        """Mark a sample done, or failed with its reason."""
        self.commit_steps((), [(sample_id, error)])

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

    def _write_details(
        self, sample_id: str, step: int, details: Sequence[Evaluation]
    ) -> list[tuple[str | None, str | None]]:
        """Write the step's artefacts; return (terms JSON, artefact path) per candidate."""
        out: list[tuple[str | None, str | None]] = []
        folder = self.run_dir / ARTEFACTS / sample_id
        for pos, evaluation in enumerate(details):
            terms = json.dumps(dict(evaluation.terms)) if evaluation.terms else None
            path = None
            if (artefact := evaluation.artefact) is not None:
                name = f"{step:04d}-{pos:04d}{artefact.suffix}"
                _write_atomic(folder / name, artefact.data)
                path = f"{ARTEFACTS}/{sample_id}/{name}"
            out.append((terms, path))
        return out

    # -- exports ------------------------------------------------------------------

    def result(self, sample_id: str) -> dict[str, Any]:
        """One sample's line of results.jsonl: status, best text, trajectory."""
        results = self._results("WHERE id = ?", (sample_id,))
        if not results:
            raise StoreError(f"no sample {sample_id!r} in {self.run_dir}")
        return results[0]

    def export_results(self) -> Path:
        """Write results.jsonl (atomically): one line per sample with its trajectory."""
        path = self.run_dir / "results.jsonl"
        lines = (json.dumps(line, ensure_ascii=False) + "\n" for line in self._results("", ()))
        _write_atomic(path, lines)
        return path

    def _results(self, where: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        with self._lock:
            samples = self._db.execute(
                "SELECT id, source, inputs, status, error, steps_done, best_text, best_score, "
                f"task FROM samples {where} ORDER BY ord",
                args,
            ).fetchall()
            steps: dict[str, list[dict[str, Any]]] = {}
            usage: dict[str, Usage] = {}
            for sid, step, text, score, mean, n_new, *used in self._db.execute(
                "SELECT sample_id, step, best_text, best_score, mean_top_k, n_new, "
                f"{', '.join(_USAGE_COLUMNS)} FROM steps "
                f"WHERE sample_id IN (SELECT id FROM samples {where}) ORDER BY sample_id, step",
                args,
            ):
                steps.setdefault(sid, []).append(
                    {
                        "step": step,
                        "best_text": text,
                        "best_score": score,
                        "mean_top_k": mean,
                        "new_candidates": n_new,
                        "usage": _usage_fields(Usage(*used)),
                    }
                )
                usage[sid] = usage.get(sid, Usage()) + Usage(*used)
            best_details = {
                sid: (terms, artefact)
                for sid, terms, artefact in self._db.execute(
                    "SELECT c.sample_id, c.terms, c.artefact FROM candidates c "
                    "JOIN samples s ON s.id = c.sample_id AND s.best_text = c.text "
                    f"WHERE (c.terms IS NOT NULL OR c.artefact IS NOT NULL) AND c.sample_id IN "
                    f"(SELECT id FROM samples {where})",
                    args,
                )
            }
        run_task = self._run_task()
        lines = []
        for sid, source, inputs, status, error, done, text, score, task in samples:
            line = {
                "sample_id": sid,
                "task": task or run_task,
                "source": _printable(_source_out(source)),
                "inputs": {k: _printable(v) for k, v in _inputs_out(inputs, source).items()},
                "status": status,
                "error": error,
                "steps": done,
                "best_text": text,
                "best_score": score,
                "trajectory": steps.get(sid, []),
                "usage": _usage_fields(usage.get(sid, Usage())),
            }
            if sid in best_details:
                terms, artefact = best_details[sid]
                line["best_terms"] = json.loads(terms) if terms else None
                line["best_artefact"] = artefact
            lines.append(line)
        return lines


def _lines(texts: Iterable[str]) -> str:
    return "".join(f"{text}\n" for text in texts)


def _read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    """The column names of `table` (none when it cannot be read)."""
    try:
        return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    except sqlite3.DatabaseError:
        return set()


def _usage_fields(usage: Usage) -> dict[str, int]:
    """A step's or a sample's generator usage as results.jsonl writes it."""
    return {
        "requests": usage.requests,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "estimated_requests": usage.estimated_requests,
    }


def _marks(columns: str) -> str:
    return ", ".join("?" for _ in columns.split(","))


def _old_columns(db: sqlite3.Connection) -> str:
    """`_STEP_COLUMNS` as a read of a run's steps table that may predate some (read 0)."""
    try:
        have = {row[1] for row in db.execute("PRAGMA table_info(steps)")}
    except sqlite3.DatabaseError:
        have = set()
    wanted = [c.strip() for c in _STEP_COLUMNS.split(",")]
    return ", ".join(c if c in have or c not in _USAGE_COLUMNS else "0" for c in wanted)


def _readable(db: sqlite3.Connection, query: str) -> list[tuple[Any, ...]]:
    """The rows of `query` up to the first that cannot be read."""
    rows: list[tuple[Any, ...]] = []
    try:
        for row in db.execute(query):
            rows.append(tuple(row))
    except sqlite3.DatabaseError:
        pass
    return rows


def _is_ours(run_dir: Path) -> bool:
    """A run of ours: config.json carries our format mark, or run.db has our tables."""
    try:
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        if isinstance(config, dict) and config.get("format") == RUN_FORMAT:
            return True
    except (OSError, ValueError):
        pass
    return _tables(run_dir / "run.db") >= {"samples", "steps", "candidates"}


def _tables(db_path: Path) -> set[str]:
    """Table names of an SQLite file (read-only peek), or {} if it is not one."""
    if not db_path.is_file():
        return set()
    try:
        # immutable: a peek into someone else's database must not leave -shm/-wal files
        db = sqlite3.connect(db_path.resolve().as_uri() + "?mode=ro&immutable=1", uri=True)
        try:
            rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
            return {name for (name,) in rows}
        finally:
            db.close()
    except sqlite3.Error:
        return set()


def _salvage_hint(run_dir: Path) -> str:
    return (
        f"copy every readable committed step into a new run with "
        f"`mils salvage {run_dir} NEW_DIR`, then resume that"
    )


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


def write_atomic(path: Path, data: str | bytes | Iterable[str]) -> None:
    """Write `path` whole or not at all (a temporary file, then a rename); a failure (a full
    disk) leaves no temporary file and raises the OSError."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, (str, bytes)):
            tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        else:
            with tmp.open("w", encoding="utf-8") as out:
                out.writelines(data)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def _write_atomic(path: Path, data: str | bytes | Iterable[str]) -> None:
    """`write_atomic` for the run directory.

    Raises:
        StoreError: the file cannot be written; the message says what to do.
    """
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise StoreError(
            f"cannot write {path}: {exc.strerror or exc}; free space on its disk (or pass "
            "another `out`), then run the same command again: committed steps are kept"
        ) from None


def _display(inputs: Mapping[str, str]) -> str:
    """The inputs as one line: the source itself when there is one (as `Sample.source`)."""
    if len(inputs) == 1:
        return next(iter(inputs.values()))
    return ", ".join(f"{name}={source}" for name, source in inputs.items())


def _inputs_out(value: str | None, source: str | bytes) -> dict[str, str]:
    """Stored inputs; a run written before named inputs had one, its source."""
    if value is None:
        return {"input": _source_out(source)}
    return dict(json.loads(value))


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
