"""Steps committed in groups: the steps that finish while a group is being written go in
the next one.

At hundreds of steps a second, one transaction and one worker-thread hop per step cost
about as much CPU as the step's request. Here each committer queues its step and waits;
a writer task, started when steps wait and none is running, hands whatever has gathered to
`commit` (`RunStore.commit_steps`: one transaction; on Ray, one call to the store actor)
in a worker thread, and wakes each committer once its own step is written, or raises
what writing it raised. Nothing waits to fill a group: a lone step is written at once.

A committer cancelled while it waits does not take its step back: the writer commits it
anyway (as a thread already committing it would), and a resume starts after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from mils.engine.store import StepCommit

__all__ = ["GroupCommit"]


class GroupCommit:
    """Commits steps in groups through `commit` (called in a worker thread).

    Args:
        commit: writes a group of steps, all or none (`RunStore.commit_steps`).
    """

    def __init__(self, commit: Callable[[Sequence[StepCommit]], None]) -> None:
        self._commit = commit
        self._waiting: list[tuple[StepCommit, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.groups = 0
        """Groups written so far."""

    async def commit(self, step: StepCommit) -> None:
        """Return once `step` is committed.

        Raises:
            What `commit` raised for the group `step` was in (a `StoreError`).
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._waiting.append((step, done))
        if self._writer is None:
            self._writer = loop.create_task(self._write(), name="group-commit")
        await done

    async def drain(self) -> None:
        """Return once every step queued so far is written (or failed)."""
        while self._writer is not None:
            await asyncio.shield(self._writer)

    async def _write(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting, []
                self.groups += 1
                try:
                    await asyncio.to_thread(self._commit, [step for step, _ in group])
                except Exception as exc:  # each committer of the group raises it
                    for _, done in group:
                        if not done.done():
                            done.set_exception(exc)
                else:
                    for _, done in group:
                        if not done.done():
                            done.set_result(None)
        finally:
            self._writer = None
