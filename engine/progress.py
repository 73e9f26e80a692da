"""Live progress: counters kept by the scheduler, drawn on the terminal or logged."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

import structlog

__all__ = ["Progress", "ProgressSnapshot"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    total: int
    done: int
    failed: int
    steps: int
    elapsed_s: float

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.elapsed_s if self.elapsed_s > 0 else 0.0


class Progress:
    """Counts samples and steps; `run()` redraws one status line until cancelled.

    On a terminal the line is redrawn in place; otherwise a `progress` log event is
    written every `log_every_s` seconds.
    """

    def __init__(
        self,
        total: int,
        *,
        stream: TextIO | None = None,
        enabled: bool = True,
        log_every_s: float = 10.0,
    ) -> None:
        self._total = total
        self._stream = stream or sys.stderr
        self._enabled = enabled
        self._log_every_s = log_every_s
        self._done = self._failed = self._steps = 0
        self._start = time.monotonic()

    def sample_finished(self, *, ok: bool) -> None:
        if ok:
            self._done += 1
        else:
            self._failed += 1

    def step_committed(self) -> None:
        self._steps += 1

    def snapshot(self) -> ProgressSnapshot:
        return ProgressSnapshot(
            total=self._total,
            done=self._done,
            failed=self._failed,
            steps=self._steps,
            elapsed_s=time.monotonic() - self._start,
        )

    async def run(self, extra: Callable[[], dict[str, int]]) -> None:
        """Redraw until cancelled; `extra` supplies live gauges (requests in flight, ...)."""
        if not self._enabled:
            return
        tty = self._stream.isatty()
        last_log = 0.0
        try:
            while True:
                await asyncio.sleep(0.5)
                snap, gauges = self.snapshot(), extra()
                if tty:
                    self._stream.write("\r\033[K" + _line(snap, gauges))
                    self._stream.flush()
                elif snap.elapsed_s - last_log >= self._log_every_s:
                    last_log = snap.elapsed_s
                    log.info("progress", **_fields(snap), **gauges)
        finally:
            if tty:
                self._stream.write("\r\033[K")
                self._stream.flush()


def _fields(snap: ProgressSnapshot) -> dict[str, float | int]:
    return {
        "done": snap.done,
        "failed": snap.failed,
        "total": snap.total,
        "steps": snap.steps,
        "steps_per_s": round(snap.steps_per_s, 2),
    }


def _line(snap: ProgressSnapshot, gauges: dict[str, int]) -> str:
    live = " ".join(f"{key}={value}" for key, value in gauges.items())
    return (
        f"samples {snap.done + snap.failed}/{snap.total} (failed {snap.failed}) | "
        f"steps {snap.steps} ({snap.steps_per_s:.2f}/s) | {live}"
    )
