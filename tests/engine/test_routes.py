"""One run of several tasks over in-process fakes: each sample goes through its task's route
(its loop, its objective, its readers), and nothing one route's scorer computed serves
another."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from fakes import NO_WAIT, FakeGenerator, FakeReader, FakeScorer, vector

from mils.engine.config import ConcurrencyConfig, LoopConfig
from mils.engine.errors import ConfigError
from mils.engine.objectives import EmbeddingObjective
from mils.engine.retry import Retrier
from mils.engine.scheduler import Route, Sample, Scheduler
from mils.engine.store import RunStore
from mils.tasks import get_task

IMAGE, AUDIO = "image-caption", "audio-caption"
SHARED = "a text both pools hold"
POOLS = {
    IMAGE: [SHARED, *(f"a photo of thing {i}" for i in range(6))],
    AUDIO: [SHARED, *(f"the sound of thing {i}" for i in range(6))],
}


class NamedScorer(FakeScorer):
    """A fake encoder pair of its own: its embeddings differ from every other's."""

    def __init__(self, name: str) -> None:
        super().__init__(max_batch_size=16)
        self.name = name

    async def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.batches.append(list(texts))
        return np.stack([vector(f"{self.name}:{t}") for t in texts])

    async def embed_target(self, data: bytes) -> np.ndarray:
        return vector(f"{self.name}:{data.decode()}")


def routed(
    store: RunStore, generator: FakeGenerator, steps: dict[str, int]
) -> tuple[Scheduler, dict[str, NamedScorer]]:
    """A scheduler with an image route and an audio route, each with its own scorer."""
    concurrency = ConcurrencyConfig(samples_in_flight=4, score_wait_ms=1.0)
    retrier = Retrier(NO_WAIT)
    scorers = {IMAGE: NamedScorer("scene"), AUDIO: NamedScorer("sound")}
    routes = {
        name: Route(
            task=get_task(name),
            loop=LoopConfig(steps=steps[name], keep=10, requested=3),  # keeps every pool text
            objective=EmbeddingObjective(
                scorers[name], target=target, concurrency=concurrency, retrier=retrier
            ),
            readers={target: FakeReader()},
        )
        for name, target in ((IMAGE, "image"), (AUDIO, "audio"))
    }
    sched = Scheduler(
        routes=routes, concurrency=concurrency, retrier=retrier, generator=generator, store=store
    )
    return sched, scorers


def mixed_samples() -> list[Sample]:
    return [
        Sample("photo1", {"image": "photo1"}, task=IMAGE),
        Sample("beep1", {"audio": "beep1"}, task=AUDIO),
        Sample("photo2", {"image": "photo2"}, task=IMAGE),
        Sample("beep2", {"audio": "beep2"}, task=AUDIO),
    ]


def open_store(path: Path, samples: list[Sample]) -> RunStore:
    return RunStore.create(
        path,
        {"task": "mixed"},
        POOLS,
        [(s.id, s.inputs) for s in samples],
        tasks={s.id: s.task for s in samples},
    )


def sent(scorer: NamedScorer) -> list[str]:
    return [text for batch in scorer.batches for text in batch]


async def test_each_sample_runs_its_own_tasks_loop_and_scorer(tmp_path: Path) -> None:
    """Image samples run the image route's 2 steps, sound samples the audio route's 3; each
    scorer is sent its own pool and nothing of the other's, and the summary adds up both."""
    samples = mixed_samples()
    store = open_store(tmp_path / "run", samples)
    sched, scorers = routed(store, FakeGenerator(), {IMAGE: 2, AUDIO: 3})
    summary = await sched.run(samples, POOLS)
    assert (summary.done, summary.failed, summary.steps) == (4, 0, 2 * 2 + 2 * 3)
    steps = {row.id: row.steps_done for row in store.samples()}
    assert steps == {"photo1": 2, "photo2": 2, "beep1": 3, "beep2": 3}
    assert {row.id: row.task for row in store.samples()} == {s.id: s.task for s in samples}
    image, audio = sent(scorers[IMAGE]), sent(scorers[AUDIO])
    assert set(POOLS[IMAGE]) <= set(image) and not set(POOLS[AUDIO]) - {SHARED} & set(image)
    assert set(POOLS[AUDIO]) <= set(audio) and not set(POOLS[IMAGE]) - {SHARED} & set(audio)
    assert summary.texts_evaluated == len(image) + len(audio)
    assert sched.statistics().texts_evaluated == len(image) + len(audio)
    store.close()


async def test_a_text_in_two_tasks_gets_each_scorers_value(tmp_path: Path) -> None:
    """The same text in both pools is embedded once by each scorer, never served from the
    other's cache: each sample's value of it (in its step-1 pool) is its own scorer's cosine."""
    samples = mixed_samples()
    store = open_store(tmp_path / "run", samples)
    sched, scorers = routed(store, FakeGenerator(), {IMAGE: 1, AUDIO: 1})
    await sched.run(samples, POOLS)
    assert sent(scorers[IMAGE]).count(SHARED) == 1
    assert sent(scorers[AUDIO]).count(SHARED) == 1
    for sample, name in (("photo1", "scene"), ("beep1", "sound")):
        text, target = vector(f"{name}:{SHARED}"), vector(f"{name}:{sample}")
        expected = float(text @ target / np.linalg.norm(text) / np.linalg.norm(target))
        (pool,) = store._db.execute(
            "SELECT pool FROM steps WHERE sample_id = ? AND step = 1", (sample,)
        ).fetchone()
        values = {t: v for v, t in json.loads(pool)}
        assert values[SHARED] == pytest.approx(expected, abs=1e-5)
    store.close()


async def test_a_route_with_nothing_to_do_scores_no_pool(tmp_path: Path) -> None:
    """When every sound is done, a resume embeds only the image pool."""
    samples = mixed_samples()
    store = open_store(tmp_path / "run", samples)
    for sid in ("beep1", "beep2"):
        store.finish_sample(sid)
    sched, scorers = routed(store, FakeGenerator(), {IMAGE: 1, AUDIO: 1})
    summary = await sched.run(samples, POOLS)
    assert (summary.done, summary.skipped) == (4, 2)
    assert sent(scorers[AUDIO]) == []
    assert set(POOLS[IMAGE]) <= set(sent(scorers[IMAGE]))
    store.close()


async def test_a_bad_file_of_one_task_fails_alone(tmp_path: Path) -> None:
    """An unreadable sound fails with its reason; the images and the other sound finish."""
    samples = [*mixed_samples(), Sample("badsound", {"audio": "bad.wav"}, task=AUDIO)]
    store = open_store(tmp_path / "run", samples)
    sched, _ = routed(store, FakeGenerator(), {IMAGE: 1, AUDIO: 1})
    summary = await sched.run(samples, POOLS)
    assert (summary.done, summary.failed) == (4, 1)
    assert summary.failures[0][0] == "badsound" and "bad.wav" in summary.failures[0][1]
    store.close()


@pytest.mark.parametrize(
    ("bad", "pools", "error"),
    [
        (
            Sample("clip", {"video": "clip"}, task="video-caption"),
            POOLS,
            "sample 'clip' is for task 'video-caption', which this run does not run",
        ),
        (Sample("loose", {"image": "loose"}), POOLS, r"sample 'loose' is for task '\(none\)'"),
        (
            Sample("photo9", {"image": "photo9"}, task=IMAGE),
            {AUDIO: POOLS[AUDIO]},
            "no initial pool for task 'image-caption'",
        ),
    ],
)
async def test_samples_must_name_a_route_and_routes_a_pool(
    tmp_path: Path, bad: Sample, pools: dict[str, list[str]], error: str
) -> None:
    """A sample of a task the run does not have, a sample naming no task among several
    routes, and a route to run without a pool stop the run before anything is sent."""
    store = open_store(tmp_path / bad.id, [bad])
    gen = FakeGenerator()
    sched, scorers = routed(store, gen, {IMAGE: 1, AUDIO: 1})
    with pytest.raises(ConfigError, match=error):
        await sched.run([bad], pools)
    assert gen.calls == 0 and not sent(scorers[IMAGE]) and not sent(scorers[AUDIO])
    store.close()


def test_a_run_written_before_tasks_were_mixed_still_opens(tmp_path: Path) -> None:
    """A run directory whose samples table has no task column (and one pool.txt) opens:
    its samples name no task, every task's pool is its pool, and results say its task."""
    run = tmp_path / "old"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"format": "mils-run", "task": IMAGE}))
    (run / "pool.txt").write_text("an old pool text\nanother one\n")
    db = sqlite3.connect(run / "run.db")
    db.executescript(
        """
        CREATE TABLE samples (id TEXT PRIMARY KEY, ord INTEGER NOT NULL, source TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending', error TEXT,
            steps_done INTEGER NOT NULL DEFAULT 0, best_text TEXT, best_score REAL,
            updated_at REAL);
        CREATE TABLE steps (sample_id TEXT NOT NULL, step INTEGER NOT NULL,
            best_text TEXT NOT NULL, best_score REAL NOT NULL, mean_top_k REAL NOT NULL,
            n_new INTEGER NOT NULL, pool TEXT NOT NULL, created_at REAL NOT NULL,
            PRIMARY KEY (sample_id, step));
        CREATE TABLE candidates (sample_id TEXT NOT NULL, step INTEGER NOT NULL,
            pos INTEGER NOT NULL, text TEXT NOT NULL, score REAL NOT NULL,
            PRIMARY KEY (sample_id, step, pos));
        INSERT INTO samples (id, ord, source) VALUES ('cat', 0, '/photos/cat.png');
        """
    )
    db.close()
    store = RunStore.open(run)
    (row,) = store.samples()
    assert (row.id, row.task, row.inputs) == ("cat", "", {"input": "/photos/cat.png"})
    assert store.pool() == store.pool(IMAGE) == ["an old pool text", "another one"]
    assert store.result("cat")["task"] == IMAGE
    store.close()


def test_a_mixed_run_keeps_a_pool_per_task_and_salvage_copies_them(tmp_path: Path) -> None:
    """pools/TASK.txt hold each task's pool, results say each sample's task, and a salvaged
    copy keeps both."""
    samples = mixed_samples()
    store = open_store(tmp_path / "run", samples)
    assert store.pool(IMAGE) == POOLS[IMAGE] and store.pool(AUDIO) == POOLS[AUDIO]
    assert not (tmp_path / "run" / "pool.txt").exists()
    assert store.result("beep1")["task"] == AUDIO
    store.close()
    RunStore.salvage(tmp_path / "run", tmp_path / "copy")
    copy = RunStore.open(tmp_path / "copy")
    assert copy.pool(AUDIO) == POOLS[AUDIO]
    assert {row.id: row.task for row in copy.samples()} == {s.id: s.task for s in samples}
    copy.close()
