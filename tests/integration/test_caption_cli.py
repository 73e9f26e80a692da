"""`mils caption` / `mils resume` end to end, over the real Triton and llama.cpp servers."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from cli_harness import SECRET, mils, results, spawn, step_rows
from cli_harness import endpoint_args as cli_endpoint_args

from mils.adapters.local_stack import LlamaServer, TritonServer, free_port, load_state
from mils.adapters.media import bundled_samples
from mils.tasks.motion import write_motion_clips
from mils.tasks.sounds import write_sounds

pytestmark = pytest.mark.integration

SMALL_LOOP = ["--keep", "8", "--requested", "5", "--max-tokens", "160"]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return bundled_samples(tmp_path_factory.mktemp("images"))


def endpoint_args(llama: LlamaServer, triton: TritonServer) -> list[str]:
    return cli_endpoint_args(llama.base_url, triton, generator_model="smollm2")


def test_caption_two_images_three_steps(
    images: list[Path], llama_server: LlamaServer, triton_server: TritonServer, tmp_path: Path
) -> None:
    """Two images, three steps: captions printed, store and results.jsonl complete."""
    run = tmp_path / "run"
    proc = mils(
        [
            "caption",
            *map(str, images[:2]),
            "--steps",
            "3",
            *SMALL_LOOP,
            "--out",
            str(run),
            "--no-progress",
            *endpoint_args(llama_server, triton_server),
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    printed = [line.split("\t") for line in proc.stdout.splitlines()]
    assert [p[0] for p in printed] == ["astronaut", "chelsea"]
    assert all(len(p) == 3 and p[2] for p in printed)
    assert step_rows(run) == [(sid, s) for sid in ("astronaut", "chelsea") for s in (1, 2, 3)]
    res = results(run)
    for sid in ("astronaut", "chelsea"):
        row = res[sid]
        assert row["status"] == "done" and row["steps"] == 3
        assert [t["step"] for t in row["trajectory"]] == [0, 1, 2, 3]  # 0: the initial pool
        bests = [t["best_score"] for t in row["trajectory"]]
        assert bests == sorted(bests)  # the best never gets worse: kept candidates carry over
        assert row["best_score"] == bests[-1] and row["best_text"]
    config = json.loads((run / "config.json").read_text())
    assert config["loop"]["steps"] == 3 and config["endpoints"]["generator"]["model"] == "smollm2"
    for path in run.iterdir():
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_sigkill_mid_run_then_resume_loses_and_repeats_nothing(
    images: list[Path], llama_server: LlamaServer, triton_server: TritonServer, tmp_path: Path
) -> None:
    """A SIGKILLed run resumes from its last committed steps to exactly `steps` per sample."""
    run = tmp_path / "run"
    args = [
        "caption",
        *map(str, images[:3]),
        "--steps",
        "4",
        *SMALL_LOOP,
        "--out",
        str(run),
        "--no-progress",
        "--generator-in-flight",
        "1",
        *endpoint_args(llama_server, triton_server),
    ]
    proc = spawn(args, tmp_path)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if (run / "run.db").exists() and len(step_rows(run)) >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, (tmp_path / "spawned.log").read_text()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = step_rows(run)
    assert 3 <= len(before) < 12

    resumed = mils(["resume", str(run), "--no-progress"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    rows = step_rows(run)
    ids = [p.stem for p in images[:3]]
    assert rows == [(sid, s) for sid in sorted(ids) for s in (1, 2, 3, 4)]
    assert set(before) <= set(rows)
    assert all(r["status"] == "done" and r["steps"] == 4 for r in results(run).values())


def test_bad_inputs_fail_alone_with_clear_reasons(
    images: list[Path], llama_server: LlamaServer, triton_server: TritonServer, tmp_path: Path
) -> None:
    """A missing file and a corrupt image fail; the good image finishes; exit code 1."""
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    missing = tmp_path / "missing.jpg"
    run = tmp_path / "run"
    proc = mils(
        [
            "caption",
            str(images[0]),
            str(corrupt),
            str(missing),
            "--steps",
            "1",
            *SMALL_LOOP,
            "--out",
            str(run),
            "--no-progress",
            *endpoint_args(llama_server, triton_server),
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    res = results(run)
    assert res["astronaut"]["status"] == "done"
    assert res["corrupt"]["status"] == "failed"
    assert str(corrupt) in res["corrupt"]["error"] and "cannot decode" in res["corrupt"]["error"]
    assert res["missing"]["status"] == "failed"
    assert str(missing) in res["missing"]["error"]
    assert "FAILED" in proc.stdout


def test_unreachable_generator_fails_samples_naming_the_url(
    images: list[Path], triton_server: TritonServer, tmp_path: Path
) -> None:
    """With nothing listening, every sample fails after the retries with the URL named."""
    url = f"http://127.0.0.1:{free_port()}/v1"
    run = tmp_path / "run"
    proc = mils(
        [
            "caption",
            str(images[0]),
            "--out",
            str(run),
            "--no-progress",
            "--generator-url",
            url,
            "--scorer-url",
            triton_server.grpc_url,
            "--text-model",
            "toyclip_text",
            "--image-model",
            "toyclip_image",
            "--retries",
            "2",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    error = results(run)["astronaut"]["error"]
    assert url in error and "after 2 attempts" in error


def test_model_not_loaded_is_a_clear_start_error(
    images: list[Path], llama_server: LlamaServer, triton_server: TritonServer, tmp_path: Path
) -> None:
    """A scorer model the server has not loaded stops the run at start, naming the model."""
    proc = mils(
        [
            "caption",
            str(images[0]),
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
            "--generator-url",
            llama_server.base_url,
            "--scorer-url",
            triton_server.grpc_url,
            "--text-model",
            "no_such_model",
            "--image-model",
            "toyclip_image",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "no_such_model" in proc.stderr and "not ready" in proc.stderr


def test_no_endpoints_and_no_local_stack_says_what_to_do(tmp_path: Path) -> None:
    """Without endpoints or a local stack the CLI says how to get one."""
    proc = mils(["caption", "x.png", "--out", str(tmp_path / "run")], cwd=tmp_path)
    assert proc.returncode == 2
    assert "mils local up" in proc.stderr


def test_local_stack_up_caption_down(
    images: list[Path], tiny_clip_dir: Path, tmp_path: Path
) -> None:
    """`mils local up` starts both servers (and the models `mils models pull` installed),
    `mils caption` finds them with no endpoint flags (for images, a clip and a sound, each
    with its kind's scorer), `mils local down` stops them (status then reports nothing)."""
    pulled = mils(["models", "pull", str(tiny_clip_dir), "--as", "tiny"], cwd=tmp_path)
    assert pulled.returncode == 0, pulled.stderr
    # The pulled pair is pinned to its weights: MILS_CLIP_MODEL is for the shipped clip_*.
    up = mils(["local", "up"], cwd=tmp_path, extra_env={"MILS_CLIP_MODEL": "/nonexistent"})
    servers = load_state(tmp_path / ".mils" / "local.json")
    try:
        assert up.returncode == 0, up.stderr
        assert "tiny_image, tiny_text" in up.stdout
        assert sorted(servers) == ["llama", "triton"]
        status = mils(["local", "status"], cwd=tmp_path)
        assert status.returncode == 0 and status.stdout.count("running") == 2
        run = tmp_path / "run"
        proc = mils(
            [
                "caption",
                str(images[2]),
                "--steps",
                "1",
                *SMALL_LOOP,
                "--out",
                str(run),
                "--no-progress",
            ],
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        assert results(run)["coffee"]["status"] == "done"
        # asked the way the local model follows best (benchmarks/quality.py chose it)
        generator = json.loads((run / "config.json").read_text())["endpoints"]["generator"]
        assert generator["prompt_mode"] == "completion"
        # The pulled CLIP pair (a tiny random one here) scores a run of its own.
        proc = mils(
            ["caption", str(images[2]), "--steps", "1", *SMALL_LOOP, "--out", str(tmp_path / "r2"),
             "--no-progress", "--text-model", "tiny_text", "--image-model", "tiny_image"],
            cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert results(tmp_path / "r2")["coffee"]["status"] == "done"
        # A clip and a sound, each scored by the local stack's scorer for its kind.
        media = [*write_motion_clips(tmp_path / "av", 1), *write_sounds(tmp_path / "av", 1)]
        for path, task, models in (
            (media[0], "video-caption", ("motion_text", "motion_video")),
            (media[1], "audio-caption", ("sound_text", "sound_audio")),
        ):
            out = tmp_path / task
            proc = mils(
                ["caption", str(path), "--steps", "1", *SMALL_LOOP, "--out", str(out),
                 "--no-progress"],
                cwd=tmp_path,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            assert f"task: {task}" in proc.stderr
            assert results(out)[path.stem]["status"] == "done"
            scorer = json.loads((out / "config.json").read_text())["endpoints"]["scorer"]
            assert (scorer["text_model"], scorer["target_model"]) == models
    finally:
        down = mils(["local", "down"], cwd=tmp_path)
    assert down.returncode == 0
    assert mils(["local", "status"], cwd=tmp_path).returncode == 1
    assert not (tmp_path / ".mils" / "local.json").exists()
    assert not any(info.is_running() for info in servers.values())


def test_reply_format_json_on_llama_cpp_falls_back_to_lines_and_records_it(
    images: list[Path], llama_server: LlamaServer, triton_server: TritonServer, tmp_path: Path
) -> None:
    """llama-cpp-python's server answers a json_schema `response_format` with HTTP 500; a
    --reply-format json run falls back to numbered lines, completes, and config.json records
    json asked, lines used and the server's refusal."""
    run = tmp_path / "run"
    proc = mils(
        ["caption", str(images[0]), "--steps", "1", *SMALL_LOOP, "--out", str(run),
         "--no-progress", "--reply-format", "json", *endpoint_args(llama_server, triton_server)],
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert results(run)["astronaut"]["status"] == "done"
    config = json.loads((run / "config.json").read_text())
    assert config["endpoints"]["generator"]["reply_format"] == "json"
    used = config["reply_formats_used"][f"{llama_server.base_url} (smollm2)"]
    assert used["reply_format"] == "lines" and "HTTP 500" in used["refusal"], used
