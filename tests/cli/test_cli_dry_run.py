"""`mils caption --dry-run`: a labelled projection of requests, tokens and cost; nothing
is sent or written."""

from __future__ import annotations

from pathlib import Path

import pytest

from mils.cli import main


def test_dry_run_projects_requests_tokens_and_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Samples x steps requests, requested x 20 completion tokens each, priced; no run
    directory is made and no endpoint is called (the URLs lead nowhere)."""
    monkeypatch.chdir(tmp_path)
    images = [tmp_path / f"{name}.png" for name in ("a", "b", "c")]
    for image in images:
        image.touch()
    status = main(
        [
            "caption",
            *map(str, images),
            "--dry-run",
            "--steps",
            "4",
            "--requested",
            "10",
            "--generator-url",
            "http://127.0.0.1:9/v1",
            "--scorer-url",
            "127.0.0.1:9",
            "--price-in",
            "1",
            "--price-out",
            "1000000",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "dry run (an estimate; nothing was sent): 3 samples -> 12 generator requests" in out
    assert "2400 completion tokens" in out  # 12 x 10 x 20
    assert "cost about 24" in out  # the completion tokens alone cost 2400 x 1e6 / 1e6
    assert not (tmp_path / "runs").exists()


def test_dry_run_in_batch_mode_counts_one_job_per_step_and_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """5 samples, 2 in flight, 3 steps in batch mode: 3 windows x 3 steps = 9 jobs."""
    monkeypatch.chdir(tmp_path)
    images = [tmp_path / f"{n}.png" for n in range(5)]
    for image in images:
        image.touch()
    args = ["caption", *map(str, images), "--dry-run", "--steps", "3"]
    args += ["--samples-in-flight", "2", "--generator-mode", "batch"]
    args += ["--generator-url", "http://127.0.0.1:9/v1", "--scorer-url", "127.0.0.1:9"]
    assert main(args) == 0
    assert "15 generator requests" in (out := capsys.readouterr().out)
    assert "in about 9 Batch API jobs" in out
