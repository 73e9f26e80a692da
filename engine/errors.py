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
    │   │   └── RateLimitExceeded  rate limited (429) past the run's wait bound: the sample fails
    │   ├── InvalidResponse      the endpoint answered with something unusable: the item fails
    │   │   └── RequestRefused     a client error (HTTP 400, 422, ...): the item fails, unless
    │   │                          every request is refused alike (the scheduler then stops the
    │   │                          run with a ConfigError: a wrong model name, key or URL)
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
    "RateLimitExceeded",
    "RequestRefused",
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

    `retry_after` is the server's requested delay in seconds (HTTP Retry-After or a rate
    limit's reset time), if any. `kind` is a short label for counting faults ("connect",
    "timeout", "429", "5xx", ...). A generator's "429" is not retried call by call: the
    router pauses the whole endpoint (`mils.engine.router`).
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
            f"{last} (gave up after {attempts} attempts; {_what_to_do(last)})",
            endpoint=last.endpoint,
        )
        self.last = last
        self.attempts = attempts


class RateLimitExceeded(RetriesExhausted):
    """An endpoint kept answering 429 for longer than the run may wait for it.

    `limited_s` is how long it had been rate limited with no request served, `wait_s` how
    much longer it asked for, `max_wait_s` the bound (`max_rate_limit_wait_s`).
    """

    def __init__(
        self, last: EndpointUnavailable, *, limited_s: float, wait_s: float, max_wait_s: float
    ) -> None:
        EndpointError.__init__(
            self,
            f"{last} (gave up: rate limited for {limited_s:.0f} s with no request served, "
            f"and {wait_s:.0f} s more would pass `max_rate_limit_wait_s` ({max_wait_s:g} s); "
            f"{_what_to_do(last)})",
            endpoint=last.endpoint,
        )
        self.last = last
        self.attempts = 1
        self.limited_s = limited_s
        self.wait_s = wait_s
        self.max_wait_s = max_wait_s


def _what_to_do(last: EndpointUnavailable) -> str:
    """The fix for an endpoint that stayed unavailable, by how it failed."""
    if last.kind == "429":
        return (
            "to stay under the rate limit lower `generator_in_flight`, raise the provider's "
            "limit for this key and model, or raise `max_rate_limit_wait_s` to wait longer"
        )
    return f"check that the endpoint {last.endpoint} is up and reachable, or raise `retries`"


class InvalidResponse(EndpointError):
    """The endpoint answered, but the answer cannot be used."""


class RequestRefused(InvalidResponse):
    """The endpoint refused the request with a client error (HTTP 400, 422, ...).

    One refused request fails its sample; the same refusal for every request (a model name
    the server does not serve, a key it cannot check) is a setting, and the scheduler stops
    the run instead (`mils.engine.refusals`). `status` is the HTTP status, `detail` the
    server's own message.
    """

    def __init__(self, message: str, *, endpoint: str, status: int, detail: str) -> None:
        super().__init__(message, endpoint=endpoint)
        self.status = status
        self.detail = detail


class ModelNotReady(EndpointError):
    """A scorer model is not loaded on the Triton server."""


class StoreError(MilsError):
    """The run directory or its database cannot be used."""


class RunLocked(StoreError):
    """Another engine process is running on the same run directory."""
