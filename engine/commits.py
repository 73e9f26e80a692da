"""Steps and sample ends committed in groups: what finishes while a group is being
written goes in the next one.

At hundreds of steps a second, one transaction and one worker-thread hop per step cost
about as much CPU as the step's request. Here each committer queues its step (or its
sample's end) and waits; a writer task, started when something waits and none is running,
hands whatever has gathered to `commit` (`RunStore.commit_steps`: one transaction; on Ray,
one call to the store actor) in a worker thread, and wakes each committer once its own
write is done, or raises what writing the group raised. Nothing waits to fill a group: a
lone step is written at once.

A committer cancelled while it waits does not take its write back: the writer commits it
anyway (as a thread already committing it would), and a resume starts after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from mils.engine.store import SampleEnd, StepCommit

__all__ = ["GroupCommit"]


class GroupCommit:
    """Commits steps and sample ends in groups through `commit` (called in a worker
    thread).

    Args:
        commit: writes a group of steps, then a group of sample ends, all or none
            (`RunStore.commit_steps`).
    """

    def __init__(self, commit: Callable[[Sequence[StepCommit], Sequence[SampleEnd]], None]) -> None:
        self._commit = commit
        self._steps: list[StepCommit] = []
        self._ends: list[SampleEnd] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._writer: asyncio.Task[None] | None = None
        self.groups = 0
        """Groups written so far."""

    async def commit(self, step: StepCommit) -> None:
        """Return once `step` is committed.

        Raises:
            What `commit` raised for the group `step` was in (a `StoreError`).
        """
        self._steps.append(step)
        await self._written()

    async def finish(self, sample_id: str, *, error: str | None = None) -> None:
        """Return once the sample is marked done (failed, with `error`); after its steps,
        which its committer has seen committed. Raises as `commit` does."""
        self._ends.append((sample_id, error))
        await self._written()

    async def drain(self) -> None:
        """Return once everything queued so far is written (or failed)."""
        while self._writer is not None:
            await asyncio.shield(self._writer)

    async def _written(self) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._waiters.append(done)
        if self._writer is None:
            self._writer = loop.create_task(self._write(), name="group-commit")
        await done

    async def _write(self) -> None:
        try:
            while self._waiters:
                steps, ends, waiters = self._steps, self._ends, self._waiters
                self._steps, self._ends, self._waiters = [], [], []
                self.groups += 1
                try:
                    await asyncio.to_thread(self._commit, steps, ends)
                except Exception as exc:  # each committer of the group raises it
                    for done in waiters:
                        if not done.done():
                            done.set_exception(exc)
                else:
                    for done in waiters:
                        if not done.done():
                            done.set_result(None)
        finally:
            self._writer = None
