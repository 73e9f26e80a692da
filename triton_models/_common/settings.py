"""Model settings read from the environment (MILS_T2I_STEPS=2, ...) by `initialize`.

A value that does not parse raises ValueError naming the variable and what it takes, so
the model fails to load with that message in the Triton log, instead of serving with a
setting nobody asked for.
"""

from __future__ import annotations

import os


def env_int(name: str, default: int | None, minimum: int = 1) -> int | None:
    """The whole number in `name`, at least `minimum`; `default` when unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ValueError(f"{name} is {raw!r}; set it to a whole number >= {minimum}, or unset it")
    return value


def env_float(name: str, default: float | None, minimum: float = 0.0) -> float | None:
    """The number in `name`, at least `minimum`; `default` when unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= minimum:  # also catches nan
        raise ValueError(f"{name} is {raw!r}; set it to a number >= {minimum}, or unset it")
    return value


def seed_of(value: int) -> int:
    """A SEED input (int64, maybe negative) as the unsigned 64-bit seed torch takes."""
    return int(value) % 2**64
