"""The price table (`--prices FILE`, mils/_prices.py): loading, lookup by the generator's
model, batch prices, precedence of --price-in/--price-out, and errors that name the file,
the key or line, and the models it has."""

from __future__ import annotations

from pathlib import Path

import pytest

from mils._args import parser
from mils._config import read_toml
from mils._prices import BATCH_DISCOUNT, prices_for, read_prices
from mils._settings import run_settings
from mils.engine import Budget, ConfigError
from mils.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
TABLE = """\
[models."gpt-4o-mini"]
input = 0.15
output = 0.60
batch_input = 0.075
batch_output = 0.30

[models.local]
input = 1
output = 3
"""


@pytest.fixture
def table(tmp_path: Path) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(TABLE, encoding="utf-8")
    return path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_example_loads() -> None:
    """examples/prices.toml is a valid table whose every model has live prices."""
    prices = read_prices(REPO / "examples" / "prices.toml")
    assert "gpt-4o-mini" in prices and len(prices) >= 2
    assert all({"input", "output"} <= set(entry) for entry in prices.values())


def test_lookup_gives_live_and_batch_prices(table: Path) -> None:
    """A model's live prices are its input/output; its batch prices are batch_input/
    batch_output where given, else half the live ones."""
    assert prices_for(table, "gpt-4o-mini") == (0.15, 0.60)
    assert prices_for(table, "gpt-4o-mini", batch=True) == (0.075, 0.30)
    assert prices_for(table, "local") == (1.0, 3.0)
    assert prices_for(table, "local", batch=True) == (BATCH_DISCOUNT * 1, BATCH_DISCOUNT * 3)


def test_a_model_missing_from_the_table_names_the_file_and_its_models(table: Path) -> None:
    """Looking up a model the table lacks is a ConfigError naming the file, the model,
    the models it has and the flags that would do instead."""
    with pytest.raises(ConfigError) as info:
        prices_for(table, "gpt-5")
    said = str(info.value)
    assert str(table) in said and "'gpt-5'" in said
    assert "'gpt-4o-mini', 'local'" in said and "`price_in`" in said


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[models."m"]\ninput = 0.1\noutput = \n', "line 3"),
        ('[models."m"]\ninput = "cheap"\noutput = 1\n', "models.\"m\".input is 'cheap'"),
        ('[models."m"]\ninput = -1\noutput = 1\n', 'models."m".input is -1'),
        ('[models."m"]\ninput = nan\noutput = 1\n', 'models."m".input is nan'),
        ('[models."m"]\ninput = 1\n', 'models."m" has no output'),
        ('[models."m"]\ninput = 1\noutput = 1\nbatch = 0.5\n', 'unknown key models."m".batch'),
        ("[models]\nm = 3\n", 'models."m" is 3, not a table'),
        ("[model.m]\ninput = 1\n", "unknown key 'model'"),
        ("", "no [models] tables"),
    ],
)
def test_a_malformed_table_names_the_file_and_the_line_or_key(
    tmp_path: Path, text: str, named: str
) -> None:
    """Invalid TOML names the line; a wrong, missing or unknown price names its key; both
    name the file."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        read_prices(path)
    assert str(path) in str(info.value) and named in str(info.value), str(info.value)


def test_an_unreadable_table_names_the_file(tmp_path: Path) -> None:
    """A price table that is not there is a ConfigError naming it and the parameter."""
    with pytest.raises(ConfigError, match=r"cannot read the price table .*nope\.toml.*`prices`"):
        read_prices(tmp_path / "nope.toml")


def budget_of(table: Path, *flags: str, file: Path | None = None) -> Budget:
    """The budget `mils caption` would run with, for these flags (no server needed)."""
    args = parser().parse_args(
        ["caption", "x.png", "--generator-url", "http://127.0.0.1:9/v1", "--scorer-url",
         "127.0.0.1:9", "--prices", str(table), *flags]
    )  # fmt: skip
    settings = run_settings(
        args, saved=None, task=get_task("image-caption"), file=read_toml(file) if file else {}
    )
    return settings.budget


def test_the_generator_models_prices_come_from_the_table(table: Path) -> None:
    """--prices gives the --generator-model's prices to the run's budget."""
    budget = budget_of(table, "--generator-model", "gpt-4o-mini")
    assert (budget.price_in, budget.price_out) == (0.15, 0.60)


def test_explicit_prices_win_over_the_table_and_the_table_over_the_config_file(
    table: Path, tmp_path: Path
) -> None:
    """--price-in/--price-out override the table's prices one by one; the table overrides
    prices from a --config file."""
    budget = budget_of(table, "--generator-model", "local", "--price-in", "9")
    assert (budget.price_in, budget.price_out) == (9.0, 3.0)
    budget = budget_of(table, "--generator-model", "local", "--price-in", "9", "--price-out", "8")
    assert (budget.price_in, budget.price_out) == (9.0, 8.0)
    config = tmp_path / "run.toml"
    config.write_text("[budget]\nprice_in = 5.0\nprice_out = 6.0\nmax_cost = 2.0\n")
    budget = budget_of(table, "--generator-model", "local", file=config)
    assert (budget.price_in, budget.price_out, budget.max_cost) == (1.0, 3.0, 2.0)


def test_the_table_is_looked_up_for_the_default_model_too(table: Path) -> None:
    """With no --generator-model the model is 'default', which the table must hold."""
    with pytest.raises(ConfigError, match="model 'default' is not in the price table"):
        budget_of(table)
