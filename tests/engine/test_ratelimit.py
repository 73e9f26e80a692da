"""The requests- and tokens-per-minute buckets, on a fake clock: rate, burst, debt and
settlement, and limits learned from a reply's headers."""

from __future__ import annotations

import itertools

import pytest

from mils.engine.config import RateLimits
from mils.engine.errors import ConfigError
from mils.engine.protocols import ProviderLimits
from mils.engine.ratelimit import EndpointRate, TokenBucket


def send_times(rate: EndpointRate, n: int, *, start: float = 100.0, prompt: int = 0) -> list[float]:
    """When `n` requests, all waiting from `start`, are let go."""
    now, times = start, []
    for _ in range(n):
        now += rate.delay(now)
        rate.take(prompt, now)
        times.append(now)
    return times


def test_requests_leave_evenly_at_the_rate() -> None:
    """600 a minute lets a backlog go one every 0.1 s, the first at once, with no burst."""
    times = send_times(EndpointRate(RateLimits(rpm=600)), 50)
    assert times[0] == 100.0
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == pytest.approx([0.1] * 49)


def test_an_idle_bucket_lets_one_seconds_worth_go_at_once() -> None:
    """After an idle minute, 10 requests of a 600-a-minute limit go at once (one second's
    worth, not a minute's), then the rate holds."""
    rate = EndpointRate(RateLimits(rpm=600))
    send_times(rate, 1, start=0.0)
    times = send_times(rate, 12, start=60.0)
    assert times[:10] == [60.0] * 10
    assert times[10:] == pytest.approx([60.1, 60.2])


def test_a_bucket_in_debt_pays_it_off_before_the_next_draw() -> None:
    """A draw bigger than the bucket holds still goes; the next waits until the refill has
    paid the debt."""
    bucket = TokenBucket(rate=100.0, burst=100.0)
    assert bucket.delay(0.0) == 0.0
    bucket.draw(500, 0.0)
    assert bucket.delay(0.0) == pytest.approx(5.0)
    assert bucket.delay(4.0) == pytest.approx(1.0)
    assert bucket.delay(5.0) == 0.0


def test_tokens_are_reserved_then_settled_at_what_the_reply_used() -> None:
    """Before any reply a request reserves its prompt plus `max_tokens`; settling at the
    reply's usage gives back the excess, and the next request reserves the running mean."""
    rate = EndpointRate(RateLimits(tpm=60_000, max_tokens=1000))  # 1000 tokens a second
    first = rate.take(200, 0.0)
    assert first.tokens == 1200
    assert rate.delay(0.0) == pytest.approx(1.2)
    rate.settle(first, 0.0, tokens=500, completion=300)
    assert rate.delay(0.0) == pytest.approx(0.5)
    second = rate.take(200, 0.5)
    assert second.tokens == 500  # 200 of prompt + the mean completion, 300
    rate.settle(second, 0.5, tokens=0)  # it failed: all of it back
    assert rate.delay(0.5) == 0.0
    rate.settle(second, 0.5, tokens=9999)  # settled once only
    assert rate.delay(0.5) == 0.0


def test_the_expected_completion_follows_replies_within_max_tokens() -> None:
    """The expected completion is a running mean of replies, never above `max_tokens`."""
    rate = EndpointRate(RateLimits(tpm=6000, max_tokens=400))
    for completion in (100, 100, 1000, 1000):
        rate.settle(rate.take(0, 0.0), 0.0, tokens=completion, completion=completion)
    assert 100 < rate.expected_completion <= 400
    uncapped = EndpointRate(RateLimits(tpm=6000))
    assert uncapped.expected_completion == 0.0
    uncapped.settle(uncapped.take(0, 0.0), 0.0, tokens=80, completion=80)
    assert uncapped.expected_completion == 80


def test_a_learned_limit_applies_only_when_lower_than_the_option() -> None:
    """Headers stating 120 a minute lower an option of 600 (and say it was learned); 1000
    leaves 600 in force; with no option, the stated limit alone paces requests."""
    rate = EndpointRate(RateLimits(rpm=600))
    rate.learn(ProviderLimits(requests=120, tokens=90_000), 0.0)
    stats = rate.statistics()
    assert (stats.rpm, stats.rpm_learned, stats.tpm, stats.tpm_learned) == (120, True, 90_000, True)
    # a second idle at 2 a second: two at once, then one every 0.5 s
    assert send_times(rate, 4, start=1.0) == pytest.approx([1.0, 1.0, 1.5, 2.0])
    rate.learn(ProviderLimits(requests=1000), 2.0)
    assert (rate.statistics().rpm, rate.statistics().rpm_learned) == (600, False)

    unset = EndpointRate(RateLimits())
    assert not unset.limited and unset.statistics().rpm is None
    unset.learn(ProviderLimits(requests=60), 0.0)
    assert unset.limited and send_times(unset, 2, start=5.0) == [5.0, 6.0]


def test_a_limit_said_to_be_spent_holds_requests_until_its_reset() -> None:
    """`x-ratelimit-remaining-requests: 0` with a 2 s reset lets no request go for 2 s."""
    rate = EndpointRate(RateLimits(rpm=6000))
    rate.learn(ProviderLimits(remaining_requests=0, reset_requests_s=2.0), 10.0)
    assert rate.delay(10.0) == pytest.approx(2.0)
    assert rate.delay(12.0) == 0.0


@pytest.mark.parametrize("field", ["rpm", "tpm", "max_tokens"])
def test_limits_below_one_are_refused_by_name(field: str) -> None:
    """A limit of 0 is a ConfigError naming the parameter (unset means no limit)."""
    with pytest.raises(ConfigError, match=f"`{field}`"):
        RateLimits(**{field: 0})


def test_a_share_of_the_endpoint_takes_its_share_of_learned_limits() -> None:
    """A Ray actor with a quarter of the endpoint: headers stating the account's 600 a
    minute pace it at 150; a larger share (a shard ended) raises that at once."""
    rate = EndpointRate(RateLimits())
    rate.configure(RateLimits(), 0.25, 0.0)
    rate.learn(ProviderLimits(requests=600, tokens=100_000), 0.0)
    stats = rate.statistics()
    assert (stats.rpm, stats.rpm_learned, stats.tpm) == (150, True, 25_000)
    rate.configure(RateLimits(rpm=200), 0.5, 1.0)
    assert (rate.statistics().rpm, rate.statistics().tpm) == (200, 50_000)
