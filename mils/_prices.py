"""Token prices per model from a small TOML file (`mils caption --prices FILE`).

    [models."gpt-4o-mini"]
    input = 0.15          # per million prompt tokens
    output = 0.60         # per million completion tokens
    batch_input = 0.075   # optional: the Batch API's prices (default: half of the above)
    batch_output = 0.30

One file can hold every model a user runs, so the price of a run follows from the model it
names instead of being typed as --price-in/--price-out each time. The prices a run uses are
saved with it (its `Budget`), so a resume never needs the file again. Wiring, not engine:
the engine only ever sees the two numbers.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mils.engine import ConfigError

__all__ = ["BATCH_DISCOUNT", "prices_for", "read_prices"]

BATCH_DISCOUNT = 0.5
"""What batch jobs cost relative to live requests when the table gives no batch prices:
the hosted providers (OpenAI, Anthropic, Google) bill their batch APIs at half price."""

_REQUIRED = ("input", "output")
_OPTIONAL = ("batch_input", "batch_output")


def prices_for(path: Path, model: str, *, batch: bool = False) -> tuple[float, float]:
    """The (prompt, completion) prices per million tokens of `model` in the table at `path`.

    Args:
        batch: the prices of the Batch API (`batch_input`, `batch_output`); a table that
            gives none charges `BATCH_DISCOUNT` (half) of the live prices, as the hosted
            providers bill batch jobs.

    Raises:
        ConfigError: the file cannot be read or parsed (the message names the file and the
            line or key), or it has no table for `model` (it names the models it has).
    """
    table = read_prices(path)
    if model not in table:
        has = ", ".join(repr(name) for name in sorted(table)) or "none"
        raise ConfigError(
            f"model {model!r} is not in the price table {path} (it has {has}); add a "
            f'[models."{model}"] table with input and output to it, or pass `price_in` '
            "and `price_out`"
        )
    prices = table[model]
    if not batch:
        return prices["input"], prices["output"]
    return (
        prices.get("batch_input", prices["input"] * BATCH_DISCOUNT),
        prices.get("batch_output", prices["output"] * BATCH_DISCOUNT),
    )


def read_prices(path: Path) -> dict[str, dict[str, float]]:
    """Every model's prices in the table at `path`, checked: model -> {"input": ...,
    "output": ..., and "batch_input"/"batch_output" where given}.

    Raises:
        ConfigError: as `prices_for`, for the whole file.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"cannot read the price table {path} ({reason}); pass `prices` with a TOML file"
        ) from None
    except tomllib.TOMLDecodeError as exc:  # its message names the line and column
        raise ConfigError(f"price table {path} is not valid TOML: {exc}; correct it") from None
    unknown = sorted(set(data) - {"models"})
    if unknown or not isinstance(data.get("models"), dict):
        what = f"unknown key {unknown[0]!r}" if unknown else "no [models] tables"
        raise ConfigError(
            f'price table {path}: {what}; the file holds [models."NAME"] tables with '
            "input and output prices per million tokens"
        )
    return {name: _model_prices(path, name, entry) for name, entry in data["models"].items()}


def _model_prices(path: Path, name: str, entry: Any) -> dict[str, float]:
    """One model's checked prices; ConfigError naming the file and the key otherwise."""
    where = f'models."{name}"'
    if not isinstance(entry, Mapping):
        raise ConfigError(
            f"price table {path}: {where} is {entry!r}, not a table; write it as "
            f'[models."{name}"] with input = PRICE and output = PRICE'
        )
    unknown = sorted(set(entry) - {*_REQUIRED, *_OPTIONAL})
    if unknown:
        raise ConfigError(
            f"price table {path}: unknown key {where}.{unknown[0]}; a model's table takes "
            f"{', '.join((*_REQUIRED, *_OPTIONAL))}"
        )
    missing = [key for key in _REQUIRED if key not in entry]
    if missing:
        raise ConfigError(
            f"price table {path}: {where} has no {missing[0]}; give it {missing[0]} = the "
            "price per million tokens"
        )
    prices: dict[str, float] = {}
    for key, value in entry.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and value >= 0):
            raise ConfigError(
                f"price table {path}: {where}.{key} is {value!r}; it must be a price per "
                "million tokens, 0 or more"
            )
        prices[key] = float(value)
    return prices
