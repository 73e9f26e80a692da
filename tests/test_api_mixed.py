"""`mils.open_run` of a folder of images, videos and sounds with no task: one run, each file
captioned by its kind's task with that task's own loop, pool and scorer (fakes here; the
real servers in tests/integration/test_mixed_caption.py)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import FakeGenerator, FakeScorer, vector
from PIL import Image

import mils
from mils import ConfigError, LoopConfig, ScorerSettings
from mils.tasks.motion import write_motion_clips
from mils.tasks.sounds import write_sounds

IMAGE, VIDEO, AUDIO = "image-caption", "video-caption", "audio-caption"
POOLS = {task: [f"{task} pool text {i}" for i in range(8)] for task in (IMAGE, VIDEO, AUDIO)}


class KindScorer(FakeScorer):
    """A fake encoder pair of one kind of media: counts the targets it embedded."""

    def __init__(self, name: str) -> None:
        super().__init__(max_batch_size=16)
        self.name = name
        self.targets = 0

    async def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.batches.append(list(texts))
        return np.stack([vector(f"{self.name}:{t}") for t in texts])

    async def embed_target(self, data: bytes) -> np.ndarray:
        self.targets += 1
        return vector(hashlib.sha256(data).hexdigest())


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Two images, a clip and two sounds in one folder."""
    media = tmp_path / "media"
    media.mkdir()
    for i in range(2):
        Image.new("RGB", (8, 8), (90 * i, 10, 200)).save(media / f"photo{i}.png")
    write_motion_clips(media, 1)
    write_sounds(media, 2)
    return media


def scorers() -> dict[str, KindScorer]:
    return {task: KindScorer(task.split("-")[0]) for task in (IMAGE, VIDEO, AUDIO)}


def read_results(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]


def files(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


async def test_a_folder_of_three_kinds_is_one_run_each_file_by_its_task(
    folder: Path, tmp_path: Path
) -> None:
    """Every sample is done with its kind's task in its result; each task's scorer embedded
    only its own kind's targets and its own pool; the loop given applies to every task,
    and config.json records each task's loop and task "mixed"."""
    own = scorers()
    run = mils.open_run(
        None,
        files(folder),
        generator=FakeGenerator(),
        scorer=own,
        out=tmp_path / "run",
        loop=LoopConfig(steps=2, keep=4, requested=3),
        pool=POOLS,
    )
    assert set(run.tasks) == {IMAGE, VIDEO, AUDIO}
    async with run:
        results = [result async for result in run]
    assert all(r.status == "done" and r.steps == 2 for r in results), results
    lines = read_results(tmp_path / "run")
    tasks = {line["sample_id"]: line["task"] for line in lines}
    assert {task: sorted(s for s, t in tasks.items() if t == task) for task in own} == {
        IMAGE: ["photo0", "photo1"],
        VIDEO: sorted(p.stem for p in folder.glob("*.mp4")),
        AUDIO: sorted(p.stem for p in folder.glob("*.wav")),
    }
    assert (own[IMAGE].targets, own[VIDEO].targets, own[AUDIO].targets) == (2, 1, 2)
    for task, scorer in own.items():
        texts = {t for batch in scorer.batches for t in batch}
        others = {t for name, pool in POOLS.items() if name != task for t in pool}
        assert set(POOLS[task]) <= texts and not texts & others
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["task"] == "mixed"
    assert {name: own["loop"]["steps"] for name, own in config["tasks"].items()} == dict.fromkeys(
        own, 2
    )


async def test_each_task_keeps_its_own_loop_and_a_resume_finishes(
    folder: Path, tmp_path: Path
) -> None:
    """Without a loop each task runs its own (audio: 19 steps, the others 10) — here a
    mapping per task; cancelled after some steps, a resume of the run finishes every sample
    with each task's own step count."""
    loops = {
        IMAGE: LoopConfig(steps=2, keep=4, requested=3),
        VIDEO: LoopConfig(steps=3, keep=4, requested=3),
        AUDIO: LoopConfig(steps=4, keep=4, requested=3),
    }
    out = tmp_path / "run"
    run = mils.open_run(
        None, files(folder), generator=FakeGenerator(), scorer=scorers(), out=out, loop=loops,
        pool=POOLS,
    )  # fmt: skip
    async with run:
        async for _ in run:
            run.cancel()  # the first sample to end stops the others
    first = run.summary
    assert first is not None and first.cancelled > 0
    again = mils.resume_run(out, generator=FakeGenerator(), scorer=scorers())
    async with again:
        results = {r.sample_id: r async for r in again}
    summary = again.summary
    assert summary is not None and summary.done == 5
    lines = {line["sample_id"]: line for line in read_results(out)}
    assert {sid: line["steps"] for sid, line in lines.items()} == {
        sid: loops[line["task"]].steps for sid, line in lines.items()
    }
    assert set(results) <= set(lines)


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        ({"scorer": ScorerSettings(url="localhost:8001")}, r"pass `scorer` as a mapping"),
        ({"pool": ["one", "two"]}, r"pass `pool` as a mapping"),
        ({"loop": {"style-transfer": LoopConfig()}}, r"`loop` names task 'style-transfer'"),
    ],
)
def test_one_scorer_or_pool_for_every_kind_is_refused(
    folder: Path, tmp_path: Path, kw: dict[str, object], error: str
) -> None:
    """One scorer or one pool cannot serve three kinds of media, and a per-task mapping may
    only name the run's tasks; nothing is written."""
    args: dict[str, object] = {"scorer": scorers(), "pool": POOLS} | kw
    with pytest.raises(ConfigError, match=error):
        mils.open_run(
            None, files(folder), generator=FakeGenerator(), out=tmp_path / "run",
            **args,  # type: ignore[arg-type]
        )  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_a_named_task_refuses_files_of_another_kind(folder: Path, tmp_path: Path) -> None:
    """An explicit task given files of another kind is an error naming the first such file."""
    with pytest.raises(ConfigError, match=r"`task` video-caption reads video files, but .*"):
        mils.open_run(
            "video-caption", files(folder), generator=FakeGenerator(), out=tmp_path / "run"
        )
