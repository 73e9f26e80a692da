"""The run store: atomic steps, no duplicates, an exclusive lock, resume data, exports."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from mils.engine.errors import RunLocked, StoreError
from mils.engine.optimizer import StepRecord
from mils.engine.store import RunStore


def record(step: int, best: float = 0.5) -> StepRecord:
    return StepRecord(
        step=step,
        best=(best, f"best {step}"),
        mean_top_k=best / 2,
        new=((f"cand {step}a", best), (f"cand {step}b", 0.1)),
        pool=((best, f"best {step}"), (0.1, "other")),
    )


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    s = RunStore.create(tmp_path / "run", {"task": "t"}, ["p1", "p2"])
    s.add_samples([("a", {"image": "a.png"}), ("b", {"image": "b.png"})])
    yield s
    s.close()


def test_progress_restores_last_step_scored_texts_and_history(store: RunStore) -> None:
    """What resume needs comes back from the committed steps."""
    store.commit_step("a", record(1, 0.3))
    store.commit_step("a", record(2, 0.6))
    progress = store.progress("a")
    assert progress.last is not None and progress.last.step == 2
    assert progress.last.pool == ((0.6, "best 2"), (0.1, "other"))
    assert sorted(progress.scored_texts) == ["cand 1a", "cand 1b", "cand 2a", "cand 2b"]
    assert progress.best_history == [0.3, 0.6]
    assert store.progress("b").last is None


def test_a_step_cannot_be_committed_twice(store: RunStore) -> None:
    """A duplicate step is refused and leaves nothing half-written."""
    store.commit_step("a", record(1))
    with pytest.raises(StoreError, match="mils resume"):
        store.commit_step("a", record(1))
    db = sqlite3.connect(store.run_dir / "run.db")
    assert db.execute("SELECT COUNT(*) FROM candidates WHERE sample_id='a'").fetchone() == (2,)


def test_second_process_is_refused_by_the_lock(store: RunStore) -> None:
    """Two engines never interleave on one run directory."""
    with pytest.raises(RunLocked, match="in use by mils pid"):
        RunStore.open(store.run_dir)


def test_create_refuses_an_existing_run(store: RunStore) -> None:
    """A new run never overwrites an old one."""
    with pytest.raises(StoreError, match="already holds a run"):
        RunStore.create(store.run_dir, {}, [])


def test_open_refuses_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    """Resuming the wrong folder says what to pass."""
    with pytest.raises(StoreError, match="is not a mils run directory"):
        RunStore.open(tmp_path)


def test_export_writes_one_line_per_sample_with_trajectory(store: RunStore) -> None:
    """results.jsonl has every sample, its status and its per-step best and mean."""
    store.commit_step("a", record(1, 0.3))
    store.finish_sample("a")
    store.finish_sample("b", error="b.png: not an image")
    lines = [json.loads(x) for x in store.export_results().read_text().splitlines()]
    assert [x["sample_id"] for x in lines] == ["a", "b"]
    assert lines[0]["status"] == "done" and lines[0]["best_text"] == "best 1"
    assert lines[0]["trajectory"] == [
        {
            "step": 1,
            "best_text": "best 1",
            "best_score": 0.3,
            "mean_top_k": 0.15,
            "new_candidates": 2,
            "usage": {
                "requests": 0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "estimated_requests": 0,
            },
        }
    ]
    assert lines[1]["status"] == "failed" and "not an image" in lines[1]["error"]


def test_config_and_pool_are_saved(store: RunStore) -> None:
    """The run carries what it needs to resume."""
    assert store.config() == {"format": "mils-run", "task": "t"}
    assert store.pool() == ["p1", "p2"]


def test_steps_and_sample_ends_commit_in_one_transaction(store: RunStore) -> None:
    """A group holding a step and the end of another sample writes both or neither."""
    store.commit_steps([("a", record(1), None, None)], [("b", "b.png: not an image")])
    rows = {row.id: row for row in store.samples()}
    assert (rows["a"].status, rows["a"].steps_done) == ("running", 1)
    assert (rows["b"].status, rows["b"].error) == ("failed", "b.png: not an image")
    with pytest.raises(StoreError):  # step 1 of "a" again: the whole group is refused
        store.commit_steps([("a", record(1), None, None)], [("b", None)])
    assert {row.id: row.status for row in store.samples()}["b"] == "failed"
