"""Per-request observations, for a caller's metrics (latency histograms, error rates).

`RunStatistics` is a snapshot: counts and gauges a caller can read at any time. A latency
histogram needs every request's duration instead, so the engine reports each attempt to an
endpoint to an optional observer, a plain callable (no metrics library here):

    generator   one chat (or continuation) request to one generator endpoint: the time
                it held its slot, not the wait for one
    scorer      one text batch sent to the scorer (each retry attempt on its own)

The observer is called on the event loop, right after the attempt ends, so it must be quick
and must not block (a Prometheus `Histogram.observe` is). An observer that raises is logged
and ignored: a caller's metrics never fail a request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from mils.engine.errors import EndpointUnavailable
from mils.engine.logs import get_logger

__all__ = ["RequestObserved", "RequestObserver", "observed"]

log = get_logger(__name__)

T = TypeVar("T")

Role = Literal["generator", "scorer"]


@dataclass(frozen=True, slots=True)
class RequestObserved:
    """One attempt to one endpoint ended (cancelled attempts are not reported)."""

    role: Role
    """"generator" (a chat request) or "scorer" (a text batch)."""
    endpoint: str
    """The generator's endpoint or the scorer's name, as `RunStatistics` shows them."""
    seconds: float
    outcome: str
    """"ok", the fault kind of a transient fault ("timeout", "429", "5xx", ...: retried),
    or "error" for any other failure (not retried)."""


RequestObserver = Callable[[RequestObserved], None]


async def observed(
    observer: RequestObserver | None, role: Role, endpoint: str, call: Awaitable[T]
) -> T:
    """Await `call`, then report its duration and outcome to `observer` (if there is one)."""
    if observer is None:
        return await call
    started = time.monotonic()
    try:
        result = await call
    except asyncio.CancelledError:
        raise
    except EndpointUnavailable as exc:
        _report(observer, RequestObserved(role, endpoint, time.monotonic() - started, exc.kind))
        raise
    except Exception:
        _report(observer, RequestObserved(role, endpoint, time.monotonic() - started, "error"))
        raise
    _report(observer, RequestObserved(role, endpoint, time.monotonic() - started, "ok"))
    return result


def _report(observer: RequestObserver, observation: RequestObserved) -> None:
    try:
        observer(observation)
    except Exception:  # a caller's metrics must not fail the request
        log.exception("request_observer_failed", role=observation.role)
