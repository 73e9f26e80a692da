"""Settings files: `mils config show` prints a run's settings as a file that `--config`
accepts; flags override the file; unknown keys are errors naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_harness import SMALL_LOOP, endpoint_args, mils

from benchmarks.llm_server import LoadLLMServer
from mils.adapters.local_stack import TritonServer

pytestmark = pytest.mark.integration


def saved(run: Path) -> dict[str, object]:
    return json.loads((run / "config.json").read_text())


def test_config_round_trip_and_flags_over_the_file(
    many_images: list[Path], load_llm: LoadLLMServer, rel_triton: TritonServer, tmp_path: Path
) -> None:
    """show -> --config gives the same run settings; a flag on top wins."""
    image = str(many_images[0])
    first = mils(
        [
            "caption",
            image,
            "--steps",
            "2",
            *SMALL_LOOP,
            "--temperature",
            "0.7",
            "--samples-in-flight",
            "3",
            "--retries",
            "4",
            "--generator-in-flight",
            "5",
            "--out",
            str(tmp_path / "one"),
            "--no-progress",
            *endpoint_args(load_llm.base_url, rel_triton),
        ],
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stderr[-2000:]
    shown = mils(["config", "show", str(tmp_path / "one")], cwd=tmp_path)
    assert shown.returncode == 0 and "[loop]" in shown.stdout and "steps = 2" in shown.stdout
    (tmp_path / "run.toml").write_text(shown.stdout)
    args = ["caption", image, "--config", "run.toml", "--no-progress"]
    second = mils([*args, "--out", str(tmp_path / "two")], cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert saved(tmp_path / "two") == saved(tmp_path / "one")
    third = mils([*args, "--steps", "1", "--out", str(tmp_path / "three")], cwd=tmp_path)
    assert third.returncode == 0, third.stderr[-2000:]
    expected = saved(tmp_path / "one")
    expected["loop"]["steps"] = 1  # type: ignore[index]
    assert saved(tmp_path / "three") == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[loop]\nstepz = 3\n", "unknown key loop.stepz"),
        ("[loops]\nsteps = 3\n", "unknown key 'loops'"),
        ("[loop]\nsteps = 'five'\n", "loop.steps is 'five'"),
        ("[loop\n", "cannot read the settings file"),
    ],
)
def test_a_bad_settings_file_names_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    """Unknown keys, wrong types and broken TOML exit 2 with the key named."""
    (tmp_path / "bad.toml").write_text(text)
    image = tmp_path / "x.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    proc = mils(
        [
            "caption",
            str(image),
            "--config",
            "bad.toml",
            "--generator-url",
            "http://127.0.0.1:9/v1",
            "--scorer-url",
            "127.0.0.1:9",
            "--out",
            str(tmp_path / "run"),
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()
