"""Tells a misconfigured generator endpoint from one bad request, before samples fail for it.

A client error that every request meets - a model name the server does not serve (LiteLLM:
`400 Invalid model name passed in model=...`), a key the proxy cannot check (LiteLLM without
its database: `400 No connected db.`) - would fail each sample alone, one by one: a
10,000-image run would end with 10,000 failed rows and exit 1 for one wrong setting.

So until an endpoint has served a request, a sample whose request it refused
(`RequestRefused`) is held, not failed: its committed steps stay, and it waits for the
verdict on the endpoint.

    the endpoint serves a request      the refusals were about those requests: each held
                                       sample fails alone, as any refused request does
    `threshold` refusals in a row,     it refuses everything: a setting. A `ConfigError`
    alike (status and message)         with the server's message stops the run; no sample
                                       was marked failed for it, and a resume continues
    a different refusal                the streak starts again; the held samples fail alone
    nothing else can decide            (every running sample is held and none is left to
                                       start: a run smaller than `threshold`) the held
                                       samples fail alone (`settle`)

Once an endpoint has served, its refusals fail their samples at once. The gate holds no
task of its own: held callers await a future; the scheduler owns them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from mils.engine.errors import ConfigError, RequestRefused
from mils.engine.logs import get_logger

__all__ = ["DEFAULT_REFUSALS_TO_STOP", "RefusalGate"]

log = get_logger(__name__)

DEFAULT_REFUSALS_TO_STOP = 3
"""Identical refusals, with no request served, that make an endpoint's setting wrong."""

_Verdict = asyncio.Future[ConfigError | None]


@dataclass(slots=True)
class _Endpoint:
    served: bool = False
    streak: int = 0
    """Refusals in a row, each like `last`."""
    last: tuple[int, str] | None = None
    held: list[_Verdict] = field(default_factory=list)
    misconfigured: str | None = None
    """The verdict's message, once given: later refusals repeat it."""


class RefusalGate:
    """Holds refused requests of endpoints that have not served one yet, until judged.

    Args:
        threshold: identical refusals in a row, none served, that stop the run.
    """

    def __init__(self, *, threshold: int = DEFAULT_REFUSALS_TO_STOP) -> None:
        if threshold < 1:
            raise ValueError(f"threshold must be >= 1, got {threshold}")
        self._threshold = threshold
        self._endpoints: dict[str, _Endpoint] = {}

    @property
    def held(self) -> int:
        """Callers waiting for a verdict."""
        return sum(not v.done() for e in self._endpoints.values() for v in e.held)

    def served(self, endpoint: str) -> None:
        """`endpoint` served a request: its held refusals fail alone, and so will later ones."""
        state = self._endpoints.setdefault(endpoint, _Endpoint())
        if not state.served:
            state.served = True
            _release(state)

    def hold(self, refused: RequestRefused) -> _Verdict | None:
        """Hold one refusal; await the result for the verdict (None: fail the sample alone).

        Returns None when there is nothing to wait for (the endpoint has served before).

        Raises:
            ConfigError: this refusal completes `threshold` alike: the endpoint's setting is
                wrong (the held callers get the same verdict).
        """
        state = self._endpoints.setdefault(refused.endpoint, _Endpoint())
        if state.served:
            return None
        if state.misconfigured is not None:
            raise ConfigError(state.misconfigured)
        key = (refused.status, refused.detail)
        if key != state.last:
            _release(state)
            state.last, state.streak = key, 0
        state.streak += 1
        if state.streak >= self._threshold:
            error = _misconfigured(refused, state.streak)
            state.misconfigured = str(error)
            log.error(
                "generator_refuses_every_request",
                endpoint=refused.endpoint,
                status=refused.status,
                detail=refused.detail,
                refusals=state.streak,
            )
            _release(state, error)
            raise error
        verdict: _Verdict = asyncio.get_running_loop().create_future()
        state.held.append(verdict)
        log.info(
            "generator_refusal_held",
            endpoint=refused.endpoint,
            status=refused.status,
            refusals=state.streak,
        )
        return verdict

    def settle(self) -> None:
        """Nothing else can decide: every held refusal fails its sample alone."""
        for state in self._endpoints.values():
            _release(state)


def _release(state: _Endpoint, error: ConfigError | None = None) -> None:
    for verdict in state.held:
        if not verdict.done():  # a holder cancelled while waiting cancels its future
            verdict.set_result(error)
    state.held.clear()


def _misconfigured(refused: RequestRefused, count: int) -> ConfigError:
    return ConfigError(
        f"generator {refused.endpoint} refused each of the first {count} requests alike, "
        f"and has served none (HTTP {refused.status}: {refused.detail}); that is a setting, "
        "not a bad sample: check `model` (a model the server serves, as its /v1/models "
        "lists), the API key (`api_key_env`, `api_key_file`) and `base_url`. The run "
        "stopped with no sample marked failed for it; fix the setting and resume the run"
    )
