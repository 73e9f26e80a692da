"""Requests-per-minute and tokens-per-minute limits of one endpoint, as token buckets (pure).

Hosted APIs limit each key to so many requests and tokens a minute and answer 429 past
that. The engine stays under both by pacing its requests itself, so a limit costs time and
no failed request. Each limit is a bucket that fills at its rate (per second) and that a
request draws from before it is sent:

    a request may go when no bucket is in debt (level >= 0); it then draws its whole
    amount, so a large draw leaves the bucket in debt, which the refill pays off before the
    next request goes.

So requests leave at exactly the rate (a draw of 1 per request, or the request's tokens)
and a draw larger than what a bucket holds still goes, in its turn. An idle bucket fills up
to `BURST_S` seconds' worth of its rate and no further: after a quiet spell only about one
second's worth goes at once, not a minute's, so the rate the server sees is steady (a
provider enforcing "600 a minute" as 10 a second still sees 10). A new bucket starts empty
(level 0) at its first use: the first request goes at once, the next when the rate allows.

Tokens are known only once the reply arrives, so a request reserves an estimate when it is
sent and is settled with the reply's `usage` afterwards:

    estimate = prompt tokens (characters / 4, `mils.engine.usage`)
             + expected completion: the running mean of the completion tokens of this
               endpoint's replies so far (exponentially weighted, the last ~16), never more
               than `max_tokens`; before the first reply, `max_tokens` itself (or 0 when
               the generator does not say it)

and the settlement draws (or returns) the difference, possibly into debt. A request that
fails is settled at 0 tokens (providers count the tokens of requests they serve); it keeps
its draw from the requests bucket (they count every request).

The limits in force are the configured ones (`RateLimits`), lowered by what the endpoint
says of itself (`learn`: its `x-ratelimit-limit-*` headers, taken as per minute): the lower
of the two. A reply saying a limit is spent (`x-ratelimit-remaining-*` 0) with a reset time
empties that bucket until then.

The asyncio side (waiting in turn, never holding an in-flight slot while waiting) is
`EndpointLimiter.slot` in `mils.engine.limiter`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mils.engine.config import RateLimits
from mils.engine.protocols import ProviderLimits

__all__ = ["BURST_S", "EndpointRate", "RateStatistics", "Reservation", "TokenBucket"]

BURST_S = 1.0
"""An idle bucket holds at most this many seconds' worth of its rate."""
_MEAN_WEIGHT = 1 / 16
"""Weight of the newest reply in the running mean of completion tokens."""


@dataclass(slots=True)
class TokenBucket:
    """A bucket of `rate` units per second that may go into debt (see the module docstring).

    Times are seconds of one monotonic clock, passed in (`now`), so the arithmetic is
    tested with a fake clock.
    """

    rate: float
    """Units added per second."""
    burst: float
    """The most units an idle bucket holds."""
    level: float = 0.0
    """Units held at `stamp`; negative: in debt."""
    stamp: float | None = None
    """When `level` was last brought up to date; None: not used yet (it fills from its
    first use, not from its creation)."""

    def _refill(self, now: float) -> None:
        if self.stamp is None:
            self.stamp = now
        elif now > self.stamp:
            self.level = min(self.burst, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def delay(self, now: float) -> float:
        """Seconds from `now` until a draw may go (0: now)."""
        self._refill(now)
        return 0.0 if self.level >= 0 else -self.level / self.rate

    def draw(self, amount: float, now: float) -> None:
        """Take `amount` (negative: give it back), into debt if need be."""
        self._refill(now)
        self.level = min(self.burst, self.level - amount)

    def hold(self, seconds: float, now: float) -> None:
        """Let no draw go for `seconds` from `now` (a debt that takes that long to pay)."""
        self._refill(now)
        self.level = min(self.level, -seconds * self.rate)

    def set_rate(self, rate: float, burst: float, now: float) -> None:
        """Change the rate from `now` on; what the bucket holds (or owes) stays."""
        self._refill(now)
        self.rate, self.burst = rate, burst
        self.level = min(self.level, burst)


@dataclass(slots=True)
class Reservation:
    """What one request drew before it was sent; settled once its reply (or failure) is in."""

    tokens: int = 0
    """Tokens reserved (0 where there is no tokens limit)."""
    paced: bool = True
    """Whether it went through the rate limits (False: none was in force when it was made)."""
    settled: bool = False


@dataclass(frozen=True, slots=True)
class RateStatistics:
    """The rate limits in force on one endpoint."""

    rpm: float | None
    """Requests per minute the engine keeps to; None: no limit."""
    tpm: float | None
    """Tokens per minute the engine keeps to; None: no limit."""
    rpm_learned: bool = False
    """`rpm` is what the endpoint said (`x-ratelimit-limit-requests`), lower than any option."""
    tpm_learned: bool = False
    """`tpm` is what the endpoint said (`x-ratelimit-limit-tokens`), lower than any option."""
    expected_completion: float | None = None
    """Completion tokens a request is expected to use (what it reserves beyond its prompt)."""


def _per_minute(configured: int | None, learned: int | None) -> tuple[float | None, bool]:
    """The limit in force (the lower of the two) and whether it is the learned one."""
    if learned is not None and (configured is None or learned < configured):
        return float(learned), True
    return (float(configured) if configured is not None else None), False


class EndpointRate:
    """The requests and tokens buckets of one endpoint, the configured and learned limits,
    and the running mean of completion tokens that tokens are reserved by."""

    def __init__(self, limits: RateLimits) -> None:
        self._limits = limits
        self._share = 1.0
        """The part of the provider's limits this run may use (a Ray actor's 1/N): limits
        learned from headers are the whole account's."""
        self._learned_rpm: int | None = None
        self._learned_tpm: int | None = None
        self._requests: TokenBucket | None = None
        self._tokens: TokenBucket | None = None
        self._completion_mean: float | None = None
        self._apply(None)

    @property
    def limited(self) -> bool:
        """Whether any limit is in force (else requests need not wait here)."""
        return self._requests is not None or self._tokens is not None

    @property
    def expected_completion(self) -> float:
        """Completion tokens a request reserves: the running mean, at most `max_tokens`."""
        cap = self._limits.max_tokens
        if self._completion_mean is None:
            return float(cap or 0)
        return min(self._completion_mean, cap) if cap is not None else self._completion_mean

    def delay(self, now: float) -> float:
        """Seconds from `now` until the next request may go (0: now)."""
        buckets = (b for b in (self._requests, self._tokens) if b is not None)
        return max((b.delay(now) for b in buckets), default=0.0)

    def take(self, prompt_tokens: int, now: float) -> Reservation:
        """Draw one request and its estimated tokens (call when `delay` is 0)."""
        if self._requests is not None:
            self._requests.draw(1, now)
        if self._tokens is None:
            return Reservation()
        tokens = prompt_tokens + round(self.expected_completion)
        self._tokens.draw(tokens, now)
        return Reservation(tokens)

    def settle(
        self,
        reservation: Reservation,
        now: float,
        *,
        tokens: int = 0,
        completion: int | None = None,
    ) -> None:
        """Settle a request at the `tokens` it used (0: it failed); `completion`, its
        completion tokens, joins the running mean."""
        if reservation.settled:
            return
        reservation.settled = True
        if completion is not None:
            mean = self._completion_mean
            self._completion_mean = (
                completion if mean is None else mean + _MEAN_WEIGHT * (completion - mean)
            )
        if self._tokens is not None:
            self._tokens.draw(tokens - reservation.tokens, now)

    def configure(self, limits: RateLimits | None, share: float, now: float) -> None:
        """Take new configured limits (None keeps them) and a new `share` of learned ones
        (the run's share of the endpoint changed); the buckets keep what they hold."""
        self._limits, self._share = limits or self._limits, share
        self._apply(now)

    def _learned(self, learned: int | None) -> int | None:
        return None if learned is None else max(1, math.floor(learned * self._share))

    def learn(self, said: ProviderLimits, now: float) -> None:
        """Adopt the limits a reply's headers state (per minute; the lower of option and
        learned is in force), and wait out a limit the reply says is spent."""
        changed = False
        if said.requests is not None and said.requests > 0 and said.requests != self._learned_rpm:
            self._learned_rpm, changed = said.requests, True
        if said.tokens is not None and said.tokens > 0 and said.tokens != self._learned_tpm:
            self._learned_tpm, changed = said.tokens, True
        if changed:
            self._apply(now)
        for bucket, remaining, reset in (
            (self._requests, said.remaining_requests, said.reset_requests_s),
            (self._tokens, said.remaining_tokens, said.reset_tokens_s),
        ):
            if bucket is not None and remaining == 0 and reset:
                bucket.hold(reset, now)

    def _apply(self, now: float | None) -> None:
        """(Re)build the buckets for the limits in force, keeping what they hold."""
        rpm, _ = _per_minute(self._limits.rpm, self._learned(self._learned_rpm))
        tpm, _ = _per_minute(self._limits.tpm, self._learned(self._learned_tpm))
        self._requests = _bucket(self._requests, rpm, unit=1.0, now=now)
        self._tokens = _bucket(self._tokens, tpm, unit=0.0, now=now)

    def statistics(self) -> RateStatistics:
        rpm, rpm_learned = _per_minute(self._limits.rpm, self._learned(self._learned_rpm))
        tpm, tpm_learned = _per_minute(self._limits.tpm, self._learned(self._learned_tpm))
        return RateStatistics(
            rpm=rpm,
            tpm=tpm,
            rpm_learned=rpm_learned,
            tpm_learned=tpm_learned,
            expected_completion=self.expected_completion if tpm is not None else None,
        )


def _bucket(
    bucket: TokenBucket | None, per_minute: float | None, *, unit: float, now: float | None
) -> TokenBucket | None:
    """A bucket at `per_minute` (None: none) holding `BURST_S` seconds' worth, less the
    `unit` that the draw allowed at level 0 adds; `bucket`'s level carries over."""
    if per_minute is None:
        return None
    rate = per_minute / 60.0
    burst = max(0.0, rate * BURST_S - unit)
    if bucket is None or now is None:
        return TokenBucket(rate=rate, burst=burst, stamp=now)
    bucket.set_rate(rate, burst, now)
    return bucket
