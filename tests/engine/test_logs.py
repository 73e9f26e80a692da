"""The logging set-up: what a Ray actor forwards to the driver's log."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from mils.engine.logs import configure_logging, get_logger


@pytest.fixture
def forwarded() -> Iterator[tuple[list[dict[str, Any]], io.StringIO]]:
    """structlog configured as a Ray actor's (events forwarded, a console of its own), for
    the test only."""
    events: list[dict[str, Any]] = []
    console = io.StringIO()
    configure_logging(console_level="critical", console=console, forward=events.append)
    yield events, console
    structlog.reset_defaults()


def test_events_from_info_up_are_forwarded_as_plain_data_with_secrets_masked(
    forwarded: tuple[list[dict[str, Any]], io.StringIO],
) -> None:
    events, console = forwarded
    log = get_logger("mils.test")
    log.debug("step_committed", step=1)
    log.info("run_started", samples=2, path=Path("/runs/a"))
    log.warning("endpoint_retry", url="http://user:sk-secret@host/v1", api_key="sk-secret")
    assert [e["event"] for e in events] == ["run_started", "endpoint_retry"]
    assert events[0]["path"] == "/runs/a"  # a str, not a Path: it crosses to another process
    assert events[1]["level"] == "warning" and "timestamp" in events[1]
    assert "sk-secret" not in repr(events)
    assert console.getvalue() == ""  # below critical: the driver's console shows them
