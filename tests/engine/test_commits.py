"""Group commit: steps and sample ends that finish together are written together, each
exactly once; a failed group raises in each of its committers and the next group goes on."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from mils.engine.commits import GroupCommit
from mils.engine.errors import StoreError


class SlowStore:
    """`commit_steps` blocks (in the writer's thread) until `gate` opens."""

    def __init__(self) -> None:
        self.groups: list[list[Any]] = []
        self.ends: list[list[Any]] = []
        self.gate = threading.Event()

    def commit_steps(self, steps: Sequence[Any], ended: Sequence[Any] = ()) -> None:
        assert self.gate.wait(5)
        if -1 in steps:
            raise StoreError("disk full")
        self.groups.append(list(steps))
        self.ends.append(list(ended))


async def test_steps_finishing_together_are_committed_together_each_once() -> None:
    store = SlowStore()
    commits = GroupCommit(store.commit_steps)
    committers = [asyncio.create_task(commits.commit(0))]  # type: ignore[arg-type]
    await asyncio.sleep(0.05)  # the first group is being written: the rest gather
    committers += [asyncio.create_task(commits.commit(i)) for i in range(1, 20)]  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    store.gate.set()
    await asyncio.gather(*committers)
    assert sorted(step for group in store.groups for step in group) == list(range(20))
    assert [len(group) for group in store.groups] == [1, 19]
    assert commits.groups == 2


async def test_a_failed_group_raises_in_each_of_its_committers_and_the_next_goes_on() -> None:
    store = SlowStore()
    commits = GroupCommit(store.commit_steps)
    first = asyncio.create_task(commits.commit(0))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    failing = [asyncio.create_task(commits.commit(i)) for i in (-1, 5)]  # type: ignore[arg-type]
    store.gate.set()
    await first
    for committer in failing:
        with pytest.raises(StoreError, match="disk full"):
            await committer
    await commits.commit(7)  # type: ignore[arg-type]
    assert store.groups == [[0], [7]]


async def test_a_cancelled_committers_step_is_still_written_and_drain_waits_for_it() -> None:
    store = SlowStore()
    commits = GroupCommit(store.commit_steps)
    committer = asyncio.create_task(commits.commit(1))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    committer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await committer
    asyncio.get_running_loop().call_later(0.05, store.gate.set)
    await commits.drain()
    assert store.groups == [[1]]


async def test_sample_ends_go_in_the_group_with_the_steps_that_gathered() -> None:
    store = SlowStore()
    commits = GroupCommit(store.commit_steps)
    first = asyncio.create_task(commits.commit(0))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    gathered = [
        asyncio.create_task(commits.finish("a")),
        asyncio.create_task(commits.commit(1)),  # type: ignore[arg-type]
        asyncio.create_task(commits.finish("b", error="b.png: not an image")),
    ]
    await asyncio.sleep(0.05)
    store.gate.set()
    await asyncio.gather(first, *gathered)
    assert store.groups == [[0], [1]]
    assert store.ends == [[], [("a", None), ("b", "b.png: not an image")]]
