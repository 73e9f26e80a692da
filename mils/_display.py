"""The CLI's live progress line, drawn from `Run.statistics()` snapshots."""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from mils._api import Run
from mils.engine import RunStatistics
from mils.engine.logs import get_logger

__all__ = ["show_progress"]

log = get_logger(__name__)


async def show_progress(
    run: Run, *, enabled: bool = True, stream: TextIO | None = None, log_every_s: float = 10.0
) -> None:
    """Redraw one status line until cancelled.

    On a terminal the line is redrawn in place; otherwise a `progress` log event is written
    every `log_every_s` seconds.
    """
    if not enabled:
        return
    out = stream or sys.stderr
    tty = out.isatty()
    last_log = 0.0
    try:
        while True:
            await asyncio.sleep(0.5)
            stats = run.statistics()
            if tty:
                out.write("\r\033[K" + _line(stats))
                out.flush()
            elif stats.elapsed_s - last_log >= log_every_s:
                last_log = stats.elapsed_s
                log.info(
                    "progress",
                    done=stats.done,
                    failed=stats.failed,
                    total=stats.total,
                    steps=stats.steps,
                    steps_per_s=round(stats.steps_per_s, 2),
                    gen_in_flight=stats.generator_in_flight,
                    gen_limit=stats.generator_limit,
                    score_queued=stats.score_queued,
                )
    finally:
        if tty:
            out.write("\r\033[K")
            out.flush()


def _line(stats: RunStatistics) -> str:
    return (
        f"samples {stats.done + stats.failed}/{stats.total} (failed {stats.failed}) | "
        f"steps {stats.steps} ({stats.steps_per_s:.2f}/s) | "
        f"generator {stats.generator_in_flight}/{stats.generator_limit} in flight, "
        f"{stats.generator_waiting} waiting | scorer {stats.score_in_flight} in flight, "
        f"{stats.score_queued} queued"
    )
