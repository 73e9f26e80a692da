"""Exceptions raised by the engine and its adapters.

Every error the engine reports derives from `MilsError`. The subclasses say what the
caller does next:

    MilsError
    ├── ConfigError            bad configuration or arguments: fatal at start, fix and rerun
    ├── InputError             one sample's input is unusable: that sample fails, the run goes on
    ├── EndpointError          a generator or scorer endpoint misbehaved
    │   ├── EndpointUnavailable  transient (connect error, timeout, 429, 5xx, UNAVAILABLE):
    │   │                        the only kind that is retried
    │   ├── RetriesExhausted     an EndpointUnavailable that outlived its retries: the sample fails
    │   ├── InvalidResponse      the endpoint answered with something unusable: the item fails
    │   └── ModelNotReady        a Triton model is missing or not loaded: fatal at start
    └── StoreError             the run directory cannot be used
        └── RunLocked          another engine process holds the run directory

Adapters translate every third-party exception into one of these at the edge, so no
foreign exception type leaves `adapters/`.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "EndpointError",
    "EndpointUnavailable",
    "InputError",
    "InvalidResponse",
    "MilsError",
    "ModelNotReady",
    "RetriesExhausted",
    "RunLocked",
    "StoreError",
]


class MilsError(Exception):
    """Base class of every error the engine raises on purpose."""


class ConfigError(MilsError):
    """The configuration cannot work; nothing was started."""


class InputError(MilsError):
    """One sample's input is unusable (missing, unreadable, corrupt)."""

    def __init__(self, message: str, *, source: str) -> None:
        super().__init__(message)
        self.source = source


class EndpointError(MilsError):
    """A remote endpoint failed; `endpoint` names its URL (and model, where relevant)."""

    def __init__(self, message: str, *, endpoint: str) -> None:
        super().__init__(message)
        self.endpoint = endpoint


class EndpointUnavailable(EndpointError):
    """A transient fault worth retrying.

    `retry_after` is the server's requested delay in seconds (HTTP Retry-After), if any.
    `kind` is a short label for counting faults ("connect", "timeout", "429", "5xx", ...).
    """

    def __init__(
        self, message: str, *, endpoint: str, kind: str, retry_after: float | None = None
    ) -> None:
        super().__init__(message, endpoint=endpoint)
        self.kind = kind
        self.retry_after = retry_after


class RetriesExhausted(EndpointError):
    """An endpoint stayed unavailable through every retry."""

    def __init__(self, last: EndpointUnavailable, *, attempts: int) -> None:
        super().__init__(
            f"{last} (gave up after {attempts} attempts; check that the endpoint "
            f"{last.endpoint} is up and reachable, or raise `retries`)",
            endpoint=last.endpoint,
        )
        self.last = last
        self.attempts = attempts


class InvalidResponse(EndpointError):
    """The endpoint answered, but the answer cannot be used."""


class ModelNotReady(EndpointError):
    """A scorer model is not loaded on the Triton server."""


class StoreError(MilsError):
    """The run directory or its database cannot be used."""


class RunLocked(StoreError):
    """Another engine process is running on the same run directory."""
