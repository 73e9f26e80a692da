"""Run configuration as frozen, validated data.

Four parts: `LoopConfig` (the MILS method, per sample), `ConcurrencyConfig` (how hard the
engine drives its endpoints), `RetryConfig` (transient-fault handling) and `Budget` (the
generator's token prices and the spend at which a run stops); and, per generator endpoint,
its provider's `RateLimits`. Each validates itself on construction and raises `ConfigError`
naming the field and the fix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mils.engine.errors import ConfigError

__all__ = [
    "CANDIDATE_LIMIT_FACTOR",
    "DEFAULT_KEEP",
    "DEFAULT_MAX_RATE_LIMIT_WAIT_S",
    "DEFAULT_REQUESTED",
    "DEFAULT_STEPS",
    "Budget",
    "ConcurrencyConfig",
    "LoopConfig",
    "RateLimits",
    "RetryConfig",
    "from_dict",
    "to_dict",
]

DEFAULT_KEEP = 50
DEFAULT_REQUESTED = 50
DEFAULT_STEPS = 10
DEFAULT_TOP_K = 10
CANDIDATE_LIMIT_FACTOR = 4
DEFAULT_SAMPLES_IN_FLIGHT = 256
DEFAULT_COOLDOWN_S = 5.0
DEFAULT_SCORE_BATCH = 64
DEFAULT_SCORE_WAIT_MS = 5.0
DEFAULT_SCORE_IN_FLIGHT = 8
DEFAULT_CACHE_SIZE = 50_000
DEFAULT_MAX_RATE_LIMIT_WAIT_S = 600.0


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopConfig:
    """The per-sample MILS loop (DESIGN.md, "The method, precisely")."""

    steps: int = DEFAULT_STEPS
    """Optimisation steps per sample."""
    keep: int = DEFAULT_KEEP
    """Top-scored candidates shown to the generator each step and carried to the next."""
    requested: int = DEFAULT_REQUESTED
    """New candidates asked of the generator each step."""
    exploration: float = 0.0
    """Fraction of the `keep` slots in the prompt filled with random picks from the rest."""
    patience: int | None = None
    """Stop a sample early when its best has not improved for this many steps."""
    top_k: int = DEFAULT_TOP_K
    """K of the mean-of-top-K recorded per step."""
    candidate_limit: int | None = None
    """Most new candidates scored per step. A reply may hold more lines than asked for;
    each is scored, as in the published loop, up to this safety limit (default
    `CANDIDATE_LIMIT_FACTOR` x `requested`); what the limit drops is counted."""
    seed: int = 0
    """Seeds exploration; a sample's draws depend only on (seed, sample id, step)."""

    def __post_init__(self) -> None:
        _require(self.steps >= 1, f"steps must be >= 1, got {self.steps}; pass `steps` 1 or more")
        _require(self.keep >= 1, f"keep must be >= 1, got {self.keep}; pass `keep` 1 or more")
        _require(
            self.requested >= 1,
            f"requested must be >= 1, got {self.requested}; pass `requested` 1 or more",
        )
        _require(
            0.0 <= self.exploration <= 1.0,
            f"exploration must be within [0, 1], got {self.exploration}; pass `exploration` 0.1",
        )
        _require(
            self.patience is None or self.patience >= 1,
            f"patience must be >= 1 or unset, got {self.patience}",
        )
        _require(self.top_k >= 1, f"top_k must be >= 1, got {self.top_k}")
        _require(
            self.candidate_limit is None or self.candidate_limit >= self.requested,
            f"candidate_limit must be >= requested ({self.requested}), got "
            f"{self.candidate_limit}; pass `candidate_limit` {self.requested} or more",
        )

    @property
    def window(self) -> int | None:
        """How many of a sample's ranked candidates are ever read: the top `keep` (or
        `top_k`, for a step's mean) without exploration; all of them (None) with it."""
        return None if self.exploration else max(self.keep, self.top_k)

    @property
    def max_new(self) -> int:
        """The number of new candidates scored per step at most."""
        if self.candidate_limit is not None:
            return self.candidate_limit
        return CANDIDATE_LIMIT_FACTOR * self.requested


@dataclass(frozen=True, slots=True, kw_only=True)
class ConcurrencyConfig:
    """How many things the engine keeps in flight at once (its backpressure)."""

    samples_in_flight: int = DEFAULT_SAMPLES_IN_FLIGHT
    """Samples running at once; memory is bounded by this window, not by the dataset."""
    generator_in_flight: int | None = None
    """Chat requests in flight per generator endpoint; None adapts it to the endpoint's
    latency (see `engine.limiter`)."""
    generator_cooldown_s: float = DEFAULT_COOLDOWN_S
    """Pause for an endpoint after repeated failures (doubles on relapse, capped)."""
    score_batch: int = DEFAULT_SCORE_BATCH
    """Most texts per scorer request (capped by the Triton model's max_batch_size)."""
    score_wait_ms: float = DEFAULT_SCORE_WAIT_MS
    """How long a partial batch waits for more texts before it is sent."""
    score_in_flight: int = DEFAULT_SCORE_IN_FLIGHT
    """Scorer requests in flight at once."""
    cache_size: int = DEFAULT_CACHE_SIZE
    """Text embeddings kept in memory (LRU; the initial pool is held separately); older ones
    move to a file on disk, so each unique text is still embedded once per run."""

    def __post_init__(self) -> None:
        for name in ("samples_in_flight", "generator_in_flight", "score_batch", "score_in_flight"):
            value = getattr(self, name)
            _require(
                (value is None and name == "generator_in_flight") or value >= 1,
                f"{name} must be >= 1, got {value}; pass `{name}` 1 or more",
            )
        _require(
            self.generator_cooldown_s >= 0,
            f"generator_cooldown_s must be >= 0, got {self.generator_cooldown_s}",
        )
        _require(self.score_wait_ms >= 0, f"score_wait_ms must be >= 0, got {self.score_wait_ms}")
        _require(self.cache_size >= 0, f"cache_size must be >= 0, got {self.cache_size}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryConfig:
    """Retries of transient endpoint faults: exponential backoff with jitter, capped."""

    attempts: int = 6
    """Tries per call, the first included."""
    initial_s: float = 0.5
    """First backoff delay."""
    max_s: float = 20.0
    """Cap on one backoff delay (a server's Retry-After is honoured up to 4x this)."""
    jitter_s: float = 0.5
    """Random extra delay added to each backoff."""
    max_rate_limit_wait_s: float = DEFAULT_MAX_RATE_LIMIT_WAIT_S
    """Longest a generator endpoint may stay rate limited (HTTP 429, no request served)
    while the run waits for it; past it, calls to it fail. A 429 pauses the endpoint for
    every caller and costs no retry attempt."""

    def __post_init__(self) -> None:
        _require(self.attempts >= 1, f"retry attempts must be >= 1, got {self.attempts}")
        _require(
            self.max_rate_limit_wait_s >= 0,
            f"max_rate_limit_wait_s must be >= 0, got {self.max_rate_limit_wait_s}; pass "
            "`max_rate_limit_wait_s` 0 (never wait) or more",
        )
        _require(
            0 <= self.initial_s <= self.max_s,
            f"retry delays must satisfy 0 <= initial ({self.initial_s}) <= max ({self.max_s})",
        )
        _require(self.jitter_s >= 0, f"retry jitter must be >= 0, got {self.jitter_s}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Budget:
    """What generator tokens cost, and the spend at which a run stops cleanly.

    A limit counts the spend of the whole run directory, every session (`resume`) included,
    read back from its committed steps; a run that reaches one sends no new generator
    request, lets those in flight finish and commit, and leaves its samples resumable (with
    a higher limit). Prices are currency units (say USD) per million tokens.
    """

    price_in: float | None = None
    """Price of a million prompt tokens; None: tokens are counted, not priced."""
    price_out: float | None = None
    """Price of a million completion tokens; None: tokens are counted, not priced."""
    max_cost: float | None = None
    """Stop once the run's cost reaches this (needs `price_in` and `price_out`)."""
    max_tokens_total: int | None = None
    """Stop once the run's prompt plus completion tokens reach this."""
    max_requests: int | None = None
    """Send at most this many generator requests (one per step) over the whole run."""

    def __post_init__(self) -> None:
        for name in ("price_in", "price_out", "max_cost", "max_tokens_total", "max_requests"):
            value = getattr(self, name)
            _require(
                value is None or value >= 0,
                f"{name} must be >= 0 or unset, got {value}; pass `{name}` 0 or more",
            )
        _require(
            self.max_cost is None or self.priced,
            f"max_cost {self.max_cost} needs the prices of the generator's tokens; pass "
            "`price_in` and `price_out` (per million tokens)",
        )

    @property
    def priced(self) -> bool:
        """Whether both prices are known, so tokens have a cost."""
        return self.price_in is not None and self.price_out is not None

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """What these tokens cost, or None when unpriced."""
        if self.price_in is None or self.price_out is None:
            return None
        return (prompt_tokens * self.price_in + completion_tokens * self.price_out) / 1e6


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimits:
    """A generator endpoint's provider limits, which the engine paces its requests under
    (`mils.engine.ratelimit`), on top of its in-flight limit. None: no limit of that kind
    (one the endpoint states in its `x-ratelimit-*` headers still applies)."""

    rpm: int | None = None
    """Requests per minute."""
    tpm: int | None = None
    """Prompt plus completion tokens per minute."""
    max_tokens: int | None = None
    """The most completion tokens one reply may hold (the request's `max_tokens`): the
    bound of what a request reserves for its reply under `tpm`."""

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "max_tokens"):
            value = getattr(self, name)
            _require(
                value is None or value >= 1,
                f"{name} must be >= 1 or unset, got {value}; pass `{name}` 1 or more, or "
                "leave it unset for no limit",
            )


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-able dict of a config dataclass (for the run store)."""
    return dataclasses.asdict(config)


def from_dict(cls: type[Any], data: dict[str, Any]) -> Any:
    """Rebuild a config dataclass, ignoring keys it no longer has."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
