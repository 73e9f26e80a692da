"""`mils caption` of a folder of several kinds of media, without servers: the dry run projects
each task with its own loop, and `mils config show` of a mixed run is a settings file that
gives each task its own loop and models again."""

from __future__ import annotations

from pathlib import Path

from cli_harness import mils
from PIL import Image

from mils._config import MIXED, RunConfig, TaskSettings
from mils.adapters import ScorerSettings
from mils.engine import LoopConfig, RunStore
from mils.tasks.sounds import write_sounds

ENDPOINTS = ("--generator-url", "http://127.0.0.1:9/v1", "--scorer-url", "127.0.0.1:9")


def folder(dest: Path) -> Path:
    """Two images and a sound."""
    dest.mkdir()
    for i in range(2):
        Image.new("RGB", (8, 8), (90 * i, 10, 200)).save(dest / f"photo{i}.png")
    write_sounds(dest, 1)
    return dest


def test_a_dry_run_of_a_mixed_folder_projects_each_task(tmp_path: Path) -> None:
    """Each task is projected with its own default loop (images 10 steps, sounds 19), and a
    --steps flag applies to both."""
    media = folder(tmp_path / "media")
    own = mils(["caption", str(media), "--dry-run", *ENDPOINTS], tmp_path)
    assert own.returncode == 0, own.stderr
    assert "tasks: image-caption (for 2 image file(s)), audio-caption (for 1 audio" in own.stderr
    assert "image-caption: dry run (an estimate; nothing was sent): 2 samples -> 20 " in own.stdout
    assert "audio-caption: dry run (an estimate; nothing was sent): 1 samples -> 19 " in own.stdout
    flag = mils(["caption", str(media), "--dry-run", "--steps", "3", *ENDPOINTS], tmp_path)
    assert "2 samples -> 6 generator requests" in flag.stdout
    assert "1 samples -> 3 generator requests" in flag.stdout


def test_config_show_of_a_mixed_run_gives_each_task_its_own_again(tmp_path: Path) -> None:
    """The TOML of a mixed run keeps each task's loop and models in its own section (none in
    [scorer]); given back with --config it sets each task's loop again, and a --text-model
    flag (one model for every kind) is refused."""
    scorer = ScorerSettings(url="127.0.0.1:9", text_model="scene_text", target_model="scene_image")
    config = RunConfig(
        task=MIXED,
        loop=LoopConfig(steps=2),
        scorer=scorer,
        tasks={
            "image-caption": TaskSettings(
                loop=LoopConfig(steps=2), text_model="scene_text", target_model="scene_image"
            ),
            "audio-caption": TaskSettings(
                loop=LoopConfig(steps=5, keep=10),
                text_model="sound_text",
                target_model="sound_audio",
                target_input="AUDIO",
            ),
        },
    )
    RunStore.create(tmp_path / "run", config.to_json(), {"image-caption": ["a"]}).close()
    shown = mils(["config", "show", str(tmp_path / "run")], tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert '[tasks."audio-caption".scorer]\ntext_model = "sound_text"' in shown.stdout
    assert "[scorer]\nurl" in shown.stdout and "scene_text" not in shown.stdout.split("[tasks")[0]
    (tmp_path / "run.toml").write_text(shown.stdout)
    media = folder(tmp_path / "media")
    again = mils(["caption", str(media), "--dry-run", "--config", "run.toml", *ENDPOINTS], tmp_path)
    assert again.returncode == 0, again.stderr
    assert "2 samples -> 4 generator requests" in again.stdout
    assert "1 samples -> 5 generator requests" in again.stdout
    model = mils(["caption", str(media), "--text-model", "x", *ENDPOINTS], tmp_path)
    assert model.returncode == 2
    assert "--text-model gives one model to a run of 2 tasks" in model.stderr
