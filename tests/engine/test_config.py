"""Config validation names the field and the fix."""

from __future__ import annotations

import pytest

from mils.engine.config import ConcurrencyConfig, LoopConfig, RetryConfig, from_dict, to_dict
from mils.engine.errors import ConfigError


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, "steps must be >= 1"),
        ({"steps": -3}, "pass `steps` 1 or more"),
        ({"keep": 0}, "keep must be >= 1"),
        ({"requested": 0}, "requested must be >= 1"),
        ({"exploration": 1.5}, "exploration must be within"),
        ({"exploration": -0.1}, "pass `exploration` 0.1"),
        ({"patience": 0}, "patience"),
    ],
)
def test_invalid_loop_values_are_refused(kwargs: dict[str, object], message: str) -> None:
    """Each bad loop value raises ConfigError mentioning what to pass instead."""
    with pytest.raises(ConfigError, match=message):
        LoopConfig(**kwargs)  # type: ignore[arg-type]


def test_invalid_concurrency_and_retry_values_are_refused() -> None:
    """Zero windows and negative delays are configuration errors."""
    with pytest.raises(ConfigError, match="pass `samples_in_flight` 1 or more"):
        ConcurrencyConfig(samples_in_flight=0)
    with pytest.raises(ConfigError, match="attempts"):
        RetryConfig(attempts=0)


def test_round_trip_ignores_unknown_keys() -> None:
    """A saved config reloads even if it carries keys a newer version dropped."""
    data = to_dict(LoopConfig(steps=3)) | {"obsolete": 1}
    assert from_dict(LoopConfig, data) == LoopConfig(steps=3)
