"""`--help` of every command, against snapshots in tests/cli/help/ (the help is written for
users: each option says what it does and its default).

After changing the help on purpose, rewrite the snapshots with MILS_UPDATE_HELP=1.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mils._args import parser

SNAPSHOTS = Path(__file__).with_name("help")


def _commands() -> list[list[str]]:
    """`mils` and every subcommand the parser has (a new one cannot miss its snapshot)."""
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return [[], *([name] for name in sub.choices)]


COMMANDS = _commands()


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0] if c else "mils")
def test_help_matches_its_snapshot(command: list[str]) -> None:
    """The help a user reads is the one reviewed in the snapshot."""
    env = dict(os.environ) | {"COLUMNS": "100"}
    proc = subprocess.run(
        [sys.executable, "-m", "mils", *command, "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    snapshot = SNAPSHOTS / f"{command[0] if command else 'mils'}.txt"
    if os.environ.get("MILS_UPDATE_HELP"):
        SNAPSHOTS.mkdir(exist_ok=True)
        snapshot.write_text(proc.stdout)
    assert proc.stdout == snapshot.read_text()


def test_every_run_option_has_help_with_its_default() -> None:
    """No option of caption or resume is left without a sentence and a default."""
    from mils._args import parser

    top = parser()
    sub = next(a for a in top._actions if a.dest == "command")
    for name in ("caption", "resume"):
        for action in sub.choices[name]._actions:  # type: ignore[union-attr]
            if action.dest in ("help", "inputs", "run_dir"):
                continue
            assert action.help, f"{name} {action.option_strings} has no help"
            assert "(" in action.help or action.help.startswith("--"), (name, action.help)


def test_version() -> None:
    """`mils --version` names the installed version."""
    proc = subprocess.run(
        [sys.executable, "-m", "mils", "--version"], capture_output=True, text=True, check=True
    )
    assert proc.stdout.startswith("mils 0.")
