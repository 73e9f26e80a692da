"""Logging: the library's loggers, and the CLI's set-up (JSON lines file + console lines).

Library code logs through `get_logger(name)`: structlog events that follow the program's
structlog configuration once there is one (the `mils` CLI makes one with
`configure_logging`, the only global configuration here). Until then they go to the
standard library's `logging` under the module's name, so a program that embeds the engine
and configured nothing sees warnings on stderr (logging's last resort) and nothing on
stdout. A redaction processor masks values of fields that look like secrets, so an API key
cannot reach a log even by accident.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog

__all__ = ["configure_logging", "get_logger", "redact", "redact_url"]

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_SECRET_FIELD = re.compile(r"(api[_-]?key|authorization|token|secret|password)", re.IGNORECASE)
# The userinfo of a URL ("//user:password@" or "//token@"): a credential.
_USERINFO = re.compile(r"(?P<scheme>//)(?P<user>[^/\s:@]*)(?P<password>:[^/\s@]*)?@")


def redact_url(text: str) -> str:
    """`text` with the credentials of every URL in it masked: //user:***@host, //***@host."""
    if "@" not in text:
        return text
    return _USERINFO.sub(
        lambda m: f"//{m['user']}:***@" if m["password"] is not None else "//***@", text
    )


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask secret-looking fields, and credentials inside URLs."""
    for key, value in event.items():
        if _SECRET_FIELD.search(key):
            event[key] = "***"
        elif isinstance(value, str) and "@" in value:
            event[key] = redact_url(value)
    return event


class _LibraryLogger:
    """A structlog logger for library code: the program's structlog set-up, else `logging`."""

    __slots__ = ("_name", "_stdlib")

    def __init__(self, name: str) -> None:
        self._name = name
        self._stdlib = structlog.wrap_logger(
            logging.getLogger(name),
            processors=[
                structlog.stdlib.filter_by_level,
                structlog.contextvars.merge_contextvars,
                redact,
                structlog.processors.KeyValueRenderer(key_order=["event"]),
            ],
            wrapper_class=structlog.stdlib.BoundLogger,
        )

    def __getattr__(self, method: str) -> Any:
        if structlog.is_configured():
            return getattr(structlog.get_logger(self._name), method)
        return getattr(self._stdlib, method)


def get_logger(name: str) -> Any:
    """The logger of a library module (see the module docstring)."""
    return _LibraryLogger(name)


def _to_sink(_: Any, __: str, event: MutableMapping[str, Any]) -> tuple[Any, ...]:
    """Last processor: hand the whole event to `_Sink.msg` as one argument."""
    return ((event,), {})


class _Sink:
    """Writes every event as JSON to the log file and, from `console_level`, to the console;
    hands events from info up to `forward`, if given."""

    def __init__(
        self,
        log_file: TextIO | None,
        console: TextIO | None,
        console_level: int,
        forward: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._file = log_file
        self._fixed_console = console
        self._console_level = console_level
        self._forward = forward
        self._render = structlog.dev.ConsoleRenderer(colors=self._console.isatty())

    @property
    def _console(self) -> TextIO:
        # sys.stderr looked up at each write: a live display that redirects it (rich) then
        # prints log lines above itself.
        return self._fixed_console or sys.stderr

    def msg(self, event: dict[str, Any]) -> None:
        level = _LEVELS.get(event.get("level", "info"), 20)
        forward = self._forward if level >= _LEVELS["info"] else None
        line = json.dumps(event, default=str) if forward or self._file is not None else ""
        if forward is not None:
            forward(json.loads(line))  # plain data only: it crosses to another process
        if self._file is not None:
            try:
                self._file.write(line + "\n")
                self._file.flush()
            except OSError as exc:  # a full disk must not turn every log call into a crash
                self._file = None
                self._console.write(f"log file disabled: cannot write it ({exc.strerror})\n")
        if level >= self._console_level:
            shown = {k: v for k, v in event.items() if k != "timestamp"}
            self._console.write(self._render(None, "", shown) + "\n")
            self._console.flush()

    debug = info = warning = warn = error = critical = exception = msg


def configure_logging(
    *,
    log_file: Path | None = None,
    console_level: str = "info",
    console: TextIO | None = None,
    forward: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Configure structlog for the process (file gets every level from debug up; `forward`,
    if given, every event from info up, as plain data: a Ray actor's, for the driver's log)."""
    handle = log_file.open("a", encoding="utf-8") if log_file else None
    sink = _Sink(handle, console, _LEVELS[console_level], forward)
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
