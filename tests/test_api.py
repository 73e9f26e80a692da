"""The public async API (`mils.open_run`, `mils.resume_run`) as a larger program uses it:
inside its own event loop, next to its own tasks, with its own generator and scorer objects."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import structlog
from fakes import FakeGenerator, FakeScorer, vector
from PIL import Image

import mils
from mils import LoopConfig, SampleResult

POOL = [f"pool caption {i}" for i in range(20)]
LOOP = LoopConfig(steps=3, keep=5, requested=3)


class ImageBytesScorer(FakeScorer):
    """FakeScorer whose targets are real image files' bytes."""

    async def embed_target(self, data: bytes) -> np.ndarray:
        return vector(hashlib.sha256(data).hexdigest())


class SlowGenerator(FakeGenerator):
    async def complete(self, messages):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.02)
        return await super().complete(messages)


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    paths = []
    for i in range(5):
        path = tmp_path / "in" / f"img{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (8, 8), (40 * i, 10, 200)).save(path)
        paths.append(path)
    return paths


def open_run(images: list[Path], out: Path, generator: FakeGenerator, **kw: object) -> mils.Run:
    return mils.open_run(
        "image-caption",
        images,
        generator=generator,
        scorer=ImageBytesScorer(max_batch_size=16),
        out=out,
        loop=LOOP,
        pool=POOL,
        **kw,  # type: ignore[arg-type]
    )


async def test_results_stream_inside_another_program(
    images: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Typed results arrive as samples finish while the host program's own task keeps
    running; the library writes nothing to stdout with logging left unconfigured."""
    structlog.reset_defaults()  # as in a program that never configured structlog
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    events: list[mils.Event] = []
    async with asyncio.TaskGroup() as host:
        beat = host.create_task(heartbeat())
        async with open_run(
            images, tmp_path / "run", SlowGenerator(), on_event=events.append
        ) as run:
            results = [result async for result in run]
            seen_ticks = ticks
        beat.cancel()
    assert seen_ticks > 10
    assert sorted(r.sample_id for r in results) == [f"img{i}" for i in range(5)]
    assert all(isinstance(r, SampleResult) and r.status == "done" for r in results)
    assert all([t.step for t in r.trajectory] == [0, 1, 2, 3] and r.best_text for r in results)
    assert run.summary is not None and (run.summary.done, run.summary.steps) == (5, 15)
    steps = [e for e in events if isinstance(e, mils.StepCommitted)]
    assert len(steps) == 15
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["status"] for line in lines] == ["done"] * 5
    assert capsys.readouterr().out == ""


async def test_cancel_one_sample_then_resume_it_from_code(
    images: list[Path], tmp_path: Path
) -> None:
    """A cancelled sample ends 'cancelled' with its committed steps kept; the others
    finish; `resume_run` completes it without repeating a step."""
    out = tmp_path / "run"
    cancelled_at: dict[str, int] = {}
    runs: list[mils.Run] = []

    def first_step(event: mils.Event) -> None:
        if isinstance(event, mils.StepCommitted) and event.sample_id == "img1":
            cancelled_at.setdefault("img1", event.step)
            runs[0].cancel("img1")

    runs.append(open_run(images, out, SlowGenerator(), on_event=first_step))
    async with runs[0] as run:
        results = {r.sample_id: r async for r in run}
        assert run.cancel("img1") is False  # it has ended
    assert results["img1"].status == "cancelled"
    assert results["img1"].steps == cancelled_at["img1"] < LOOP.steps
    assert all(r.status == "done" for sid, r in results.items() if sid != "img1")

    async with mils.resume_run(
        out, generator=SlowGenerator(), scorer=ImageBytesScorer(max_batch_size=16)
    ) as resumed:
        again = [r async for r in resumed]
    assert [(r.sample_id, r.status, r.steps) for r in again] == [("img1", "done", 3)]
    assert resumed.summary is not None and resumed.summary.skipped == 4


async def test_cancelling_the_caller_stops_the_run_and_keeps_committed_steps(
    images: list[Path], tmp_path: Path
) -> None:
    """Cancelling the task that runs the API leaves no task behind; a resume finishes."""
    out = tmp_path / "run"
    committed = asyncio.Event()

    def on_event(event: mils.Event) -> None:
        if isinstance(event, mils.StepCommitted):
            committed.set()

    async def consume() -> None:
        async with open_run(images, out, SlowGenerator(), on_event=on_event) as run:
            async for _ in run:
                pass

    before = asyncio.all_tasks()
    consumer = asyncio.create_task(consume())
    await committed.wait()
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    await asyncio.sleep(0)
    assert asyncio.all_tasks() <= before | {asyncio.current_task()}

    async with mils.resume_run(
        out, generator=FakeGenerator(), scorer=ImageBytesScorer(max_batch_size=16)
    ) as run:
        summary = await run.wait()
    assert summary.done == 5 and summary.steps < 5 * LOOP.steps  # committed steps kept


async def test_leaving_the_block_early_cancels_the_rest(images: list[Path], tmp_path: Path) -> None:
    """Breaking out after the first result stops the other samples, which end 'cancelled'."""
    one_at_a_time = mils.ConcurrencyConfig(samples_in_flight=1)
    async with open_run(
        images, tmp_path / "run", SlowGenerator(), concurrency=one_at_a_time
    ) as run:
        async for _ in run:
            break
    assert run.summary is not None
    assert (run.summary.done, run.summary.cancelled) == (1, 4)
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["status"] for line in lines].count("done") == 1


def test_bad_arguments_name_the_parameter(images: list[Path], tmp_path: Path) -> None:
    """Configuration errors come before anything is written and name the parameter."""
    with pytest.raises(mils.ConfigError, match="`inputs`"):
        open_run([], tmp_path / "a", FakeGenerator())
    with pytest.raises(mils.ConfigError, match="`pool`"):
        mils.open_run(
            "image-caption", images, generator=FakeGenerator(), out=tmp_path / "b", pool=[]
        )
    with pytest.raises(mils.ConfigError, match="unknown task"):
        mils.open_run("video-poem", images, generator=FakeGenerator(), out=tmp_path / "c")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


async def test_a_pause_met_by_another_worker_holds_the_runs_requests(
    images: list[Path], tmp_path: Path
) -> None:
    """`Run._pause` (what a Ray shard worker is told when another worker met a 429) pauses
    the generator endpoint: no step is committed until it ends, then the run completes."""
    steps: list[float] = []

    def on_event(event: mils.Event) -> None:
        if isinstance(event, mils.StepCommitted):
            steps.append(asyncio.get_running_loop().time())

    async with open_run(images, tmp_path / "run", SlowGenerator(), on_event=on_event) as run:
        endpoint = run.statistics().endpoints[0].endpoint
        started = asyncio.get_running_loop().time()
        run._pause(endpoint, 0.5)
        assert run.statistics().endpoints[0].paused_until is not None
        results = [r async for r in run]
    assert {r.status for r in results} == {"done"}
    assert min(steps) - started >= 0.5
