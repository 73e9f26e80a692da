"""Bad inputs each fail with a clear message naming them; nothing else is lost.

The table of inputs tried and what the user sees is in the report of this suite; each row is
a case below.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from pathlib import Path

import pytest
from cli_harness import SMALL_LOOP, endpoint_args, log_events, mils, query, results
from fault_proxy import FaultProxy

from benchmarks.llm_server import LoadLLMServer
from mils.adapters.local_stack import TritonServer, free_port
from mils.cli import main

pytestmark = pytest.mark.integration

SAFE_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png() -> bytes:
    """A 100 kB-or-less PNG claiming 30000 x 30000 pixels (a decompression bomb header)."""
    header = struct.pack(">IIBBBBB", 30000, 30000, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 4000))
        + png_chunk(b"IEND", b"")
    )


def tree(root: Path, skip: Path) -> set[str]:
    return {str(p) for p in root.rglob("*") if skip not in p.parents and p != skip}


def test_many_bad_files_fail_alone_and_the_good_ones_finish(
    many_images: list[Path], load_llm: LoadLLMServer, rel_triton: TritonServer, tmp_path: Path
) -> None:
    """Corrupt, truncated, empty, non-image, huge, bomb, unsupported, missing, FIFO and dangling
    inputs each fail naming the file; good files (odd and non-UTF-8 names, duplicates counted
    once) finish with safe sample ids; exit 1; nothing is written outside the run directory."""
    d = tmp_path / "in"
    d.mkdir()
    good_bytes = many_images[0].read_bytes()
    (d / "good.png").write_bytes(good_bytes)
    bad = {
        "corrupt.png": b"\x89PNG\r\n\x1a\n" + b"garbage" * 50,
        "truncated.png": many_images[1].read_bytes()[:60],
        "empty.png": b"",
        "notes.png": b"just some text, not an image\n",
        "bomb.png": bomb_png(),
        "drawing.svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        "picture.ppm": b"P6\n2 2\n255\n" + b"\x00" * 12,
    }
    for name, data in bad.items():
        (d / name).write_bytes(data)
    with open(d / "huge.png", "wb") as f:  # sparse: 60 MB on paper, a few bytes on disk
        f.write(b"\x89PNG\r\n\x1a\n")
        f.truncate(60 * 1024 * 1024)
    os.mkfifo(d / "pipe.png")
    (d / "dangling.png").symlink_to(d / "gone.png")
    odd = [d / "we ird;$(touch pwned) name.png", d / "..hidden.png", d / "---.png"]
    for path in odd:
        path.write_bytes(good_bytes)
    raw_name = os.fsencode(d) + b"/caf\xe9-\xff.png"  # not UTF-8
    with open(raw_name, "wb") as f:
        f.write(good_bytes)
    failing = [
        *(d / n for n in bad),
        d / "huge.png",
        d / "pipe.png",
        d / "dangling.png",
        d / "missing.jpg",
    ]
    inputs = [
        str(d / "good.png"),
        str(d / "good.png"),
        f"{d}/./good.png",
        *map(str, failing),
        *map(str, odd),
        os.fsdecode(raw_name),
    ]
    run = tmp_path / "run"
    before = tree(tmp_path, run)
    proc = mils(
        [
            "caption",
            *inputs,
            "--steps",
            "2",
            *SMALL_LOOP,
            "--out",
            str(run),
            "--no-progress",
            *endpoint_args(load_llm.base_url, rel_triton),
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    res = results(run)
    assert len(res) == 1 + len(failing) + len(odd) + 1, sorted(res)  # duplicates counted once
    by_source = {row["source"]: row for row in res.values()}
    for path in failing:
        row = by_source[str(path)]
        assert row["status"] == "failed" and str(path) in row["error"], row
    for row in res.values():
        assert SAFE_ID.match(row["sample_id"]), row["sample_id"]
        if row["status"] == "done":
            assert row["steps"] == 2
    done = {row["sample_id"] for row in res.values() if row["status"] == "done"}
    assert len(done) == 1 + len(odd) + 1, res
    assert tree(tmp_path, run) == before, "something was written outside the run directory"
    reasons = {Path(s).name: by_source[s]["error"] for s in map(str, failing)}
    for name, words in {
        "corrupt.png": "cannot decode",
        "truncated.png": "cannot decode",
        "empty.png": "0 bytes",
        "notes.png": "accepted format",
        "bomb.png": "cannot decode",
        "drawing.svg": "accepted format",
        "picture.ppm": "accepted format",
        "huge.png": "limit",
        "pipe.png": "not a regular file",
        "dangling.png": "does not exist",
        "missing.jpg": "does not exist",
    }.items():
        assert words in reasons[name], (name, reasons[name])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no inputs"),  # an empty directory
        (["--steps", "-1"], "steps must be >= 1"),
        (["--keep", "0"], "keep must be >= 1"),
        (["--requested", "0"], "requested must be >= 1"),
        (["--exploration", "1.5"], "exploration must be within [0, 1]"),
        (["--exploration", "nan"], "exploration must be within [0, 1]"),
        (["--task", "video-poem"], "unknown task 'video-poem'"),
        (["--init-pool", "EMPTY"], "has no text lines"),
        (["--init-pool", "DUPES"], "all the same text"),
        (["--init-pool", "MISSING"], "cannot read the initial pool"),
        (["--init-pool", "LATIN1"], "cannot read the initial pool"),
        (["--generator-timeout", "0"], "read_timeout"),
        (["--samples-in-flight", "0"], "samples_in_flight must be >= 1"),
        (["--retries", "0"], "retry attempts must be >= 1"),
        (["--temperature", "9"], "temperature"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_invalid_configuration_is_refused_before_anything_runs(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each invalid setting exits 2 with a message naming it and the fix, no traceback, and no
    run directory is created."""
    (tmp_path / "EMPTY").write_text("\n  \n")
    (tmp_path / "DUPES").write_text("a cat\n" * 20)
    (tmp_path / "LATIN1").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    empty_dir = tmp_path / "nothing"
    empty_dir.mkdir()
    image = tmp_path / "x.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    inputs = [str(empty_dir)] if not args else [str(image)]
    args = [str(tmp_path / a) if a in ("EMPTY", "DUPES", "MISSING", "LATIN1") else a for a in args]
    run = tmp_path / "run"
    code = main(
        [
            "caption",
            *inputs,
            "--out",
            str(run),
            "--generator-url",
            "http://127.0.0.1:9/v1",
            "--scorer-url",
            "127.0.0.1:9",
            *args,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not run.exists()


def test_no_inputs_at_all_is_a_usage_error(tmp_path: Path) -> None:
    """`mils caption` with no inputs is refused by the argument parser (exit 2, usage)."""
    proc = mils(["caption", "--out", str(tmp_path / "run")], cwd=tmp_path)
    assert proc.returncode == 2 and "inputs" in proc.stderr


@pytest.mark.parametrize(
    ("text_model", "message"),
    [
        ("no_such_model", "'no_such_model' is not ready"),
        ("wrong_names", "no TYPE_STRING input 'TEXT'"),
        ("wrong_dims", "TEXT dims [2]"),
    ],
)
def test_unusable_triton_model_is_a_clear_start_error(
    many_images: list[Path],
    load_llm: LoadLLMServer,
    rel_triton: TritonServer,
    tmp_path: Path,
    text_model: str,
    message: str,
) -> None:
    """A missing model, or one with the wrong tensor names or dims, stops the run at start
    (exit 2) naming the model and the fix; resume with the right model then completes."""
    run = tmp_path / "run"
    base = ["--steps", "1", *SMALL_LOOP, "--no-progress"]
    proc = mils(
        [
            "caption",
            str(many_images[0]),
            "--out",
            str(run),
            *base,
            *endpoint_args(load_llm.base_url, rel_triton, text_model=text_model),
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    fixed = mils(
        ["resume", str(run), "--text-model", "toyclip_text", "--no-progress"], cwd=tmp_path
    )
    assert fixed.returncode == 0, fixed.stderr[-2000:]


def test_unreachable_scorer_is_a_clear_start_error(
    many_images: list[Path], load_llm: LoadLLMServer, tmp_path: Path
) -> None:
    """Nothing listening on the scorer port: exit 2 after the retries, naming the address."""
    url = f"127.0.0.1:{free_port()}"
    proc = mils(
        [
            "caption",
            str(many_images[0]),
            "--out",
            str(tmp_path / "run"),
            "--retries",
            "2",
            "--no-progress",
            "--generator-url",
            load_llm.base_url,
            "--scorer-url",
            url,
            "--text-model",
            "toyclip_text",
            "--image-model",
            "toyclip_image",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and url in proc.stderr and "2 attempts" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_llm_returning_the_prompt_back_records_empty_steps(
    many_images: list[Path], load_llm: LoadLLMServer, rel_triton: TritonServer, tmp_path: Path
) -> None:
    """An LLM that echoes the prompt yields no new candidate (shown lines and the template's
    own example lines are dropped): every step is recorded, the run completes."""
    run = tmp_path / "run"
    with FaultProxy(load_llm.base_url, rates={"echo_prompt": 1.0}) as proxy:
        proc = mils(
            [
                "caption",
                *map(str, many_images[:3]),
                "--steps",
                "3",
                *SMALL_LOOP,
                "--out",
                str(run),
                "--no-progress",
                *endpoint_args(proxy.base_url, rel_triton),
            ],
            cwd=tmp_path,
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert query(run, "SELECT COUNT(*) FROM steps WHERE step > 0") == [(9,)]
    assert query(run, "SELECT COUNT(*) FROM candidates") == [(0,)]
    assert query(run, "SELECT SUM(n_new) FROM steps") == [(0,)]
    assert "9 replies without candidates" in proc.stderr
    assert all(row["status"] == "done" for row in results(run).values())


def test_a_warning_given_before_the_run_starts_reaches_its_log(
    many_images: list[Path], load_llm: LoadLLMServer, rel_triton: TritonServer, tmp_path: Path
) -> None:
    """Repeated pool lines are dropped with a warning that lands in the run's log.jsonl."""
    pool = tmp_path / "pool.txt"
    pool.write_text("a red car\na red car\na blue boat\na green tree\n")
    run = tmp_path / "run"
    proc = mils(
        [
            "caption",
            str(many_images[0]),
            "--steps",
            "1",
            *SMALL_LOOP,
            "--init-pool",
            str(pool),
            "--out",
            str(run),
            "--no-progress",
            *endpoint_args(load_llm.base_url, rel_triton),
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    warned = [e for e in log_events(run) if e["event"] == "initial_pool_duplicates_dropped"]
    assert [(e["level"], e["dropped"]) for e in warned] == [("warning", 1)]


def test_relative_paths_resume_from_another_folder(
    many_images: list[Path], load_llm: LoadLLMServer, rel_triton: TritonServer, tmp_path: Path
) -> None:
    """Samples given as relative paths are found again by a resume run from elsewhere."""
    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    (start / "imgs").mkdir(parents=True)
    elsewhere.mkdir()
    for image in many_images[:2]:
        (start / "imgs" / image.name).write_bytes(image.read_bytes())
    run = tmp_path / "run"
    dead = f"http://127.0.0.1:{free_port()}/v1"
    first = mils(
        [
            "caption",
            "imgs",
            "--steps",
            "1",
            *SMALL_LOOP,
            "--out",
            str(run),
            "--no-progress",
            "--retries",
            "1",
            *endpoint_args(dead, rel_triton),
        ],
        cwd=start,
    )
    assert first.returncode == 1  # the generator is down: both samples failed
    resumed = mils(
        ["resume", str(run), "--no-progress", "--generator-url", load_llm.base_url],
        cwd=elsewhere,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [row["status"] for row in results(run).values()] == ["done", "done"]
