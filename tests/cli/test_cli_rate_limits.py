"""`--rpm` and `--tpm`: they apply to every generator endpoint, are saved with the run (so
`mils resume` keeps them, and `mils config show` prints them), and a bad value names the
flag."""

from __future__ import annotations

from pathlib import Path

from cli_harness import mils

from mils._args import parser
from mils._config import RunConfig, read_toml
from mils._settings import run_settings
from mils.tasks import get_task

ENDPOINTS = [
    "--generator-url",
    "http://127.0.0.1:9/v1",
    "--generator-url",
    "http://127.0.0.1:10/v1",
    "--scorer-url",
    "127.0.0.1:9",
]


def settings(argv: list[str], saved: RunConfig | None = None) -> RunConfig:
    return run_settings(
        parser().parse_args(argv), saved=saved, task=get_task("image-caption"), file={}
    )


def test_the_limits_apply_to_every_endpoint_and_are_saved_for_resume(tmp_path: Path) -> None:
    """Both endpoints get the limits; the saved config, its TOML form and a resume without
    the flags keep them; a resume with `--rpm` changes that one alone."""
    first = settings(["caption", "x.png", "--rpm", "600", "--tpm", "90000", *ENDPOINTS])
    assert [(g.rpm, g.tpm) for g in first.generator] == [(600, 90000)] * 2
    saved = RunConfig.from_json(first.to_json())
    assert saved == first
    toml = tmp_path / "run.toml"
    toml.write_text(saved.to_toml())
    assert "rpm = 600" in toml.read_text() and read_toml(toml)["endpoints"]["generator"]["tpm"]
    resumed = settings(["resume", "runs/r"], saved=saved)
    assert [(g.rpm, g.tpm) for g in resumed.generator] == [(600, 90000)] * 2
    lowered = settings(["resume", "runs/r", "--rpm", "300"], saved=saved)
    assert [(g.rpm, g.tpm) for g in lowered.generator] == [(300, 90000)] * 2


def test_a_limit_below_one_names_the_flag(tmp_path: Path) -> None:
    """`--rpm 0` exits 2 with a message naming --rpm (unset means no limit)."""
    proc = mils(["caption", "x.png", "--rpm", "0", *ENDPOINTS], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "--rpm" in proc.stderr and "Traceback" not in proc.stderr
