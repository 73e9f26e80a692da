"""Logging set-up: structlog to JSON lines in the run directory and readable console lines.

Called once by the CLI (the only global configuration in the engine). A redaction processor
masks values of fields that look like secrets, so an API key cannot reach a log even by
accident.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog

__all__ = ["configure_logging", "redact"]

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_SECRET_FIELD = re.compile(r"(api[_-]?key|authorization|token|secret|password)", re.IGNORECASE)


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask the value of every secret-looking field."""
    for key in event:
        if _SECRET_FIELD.search(key):
            event[key] = "***"
    return event


def _to_sink(_: Any, __: str, event: MutableMapping[str, Any]) -> tuple[Any, ...]:
    """Last processor: hand the whole event to `_Sink.msg` as one argument."""
    return ((event,), {})


class _Sink:
    """Writes every event as JSON to the log file and, from `console_level`, to the console."""

    def __init__(self, log_file: TextIO | None, console: TextIO, console_level: int) -> None:
        self._file = log_file
        self._console = console
        self._console_level = console_level
        self._render = structlog.dev.ConsoleRenderer(colors=console.isatty())
        self._clear = "\r\033[K" if console.isatty() else ""

    def msg(self, event: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(event, default=str) + "\n")
            self._file.flush()
        if _LEVELS.get(event.get("level", "info"), 20) >= self._console_level:
            shown = {k: v for k, v in event.items() if k != "timestamp"}
            # On a terminal, first clear the progress line the event would run into.
            self._console.write(self._clear + self._render(None, "", shown) + "\n")
            self._console.flush()

    debug = info = warning = warn = error = critical = exception = msg


def configure_logging(
    *, log_file: Path | None = None, console_level: str = "info", console: TextIO | None = None
) -> None:
    """Configure structlog for the process (file gets every level from debug up)."""
    handle = log_file.open("a", encoding="utf-8") if log_file else None
    sink = _Sink(handle, console or sys.stderr, _LEVELS[console_level])
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            _to_sink,
        ],
        logger_factory=lambda *_: sink,
        cache_logger_on_first_use=False,
    )
