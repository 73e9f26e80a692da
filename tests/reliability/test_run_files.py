"""Run directories at the edges: other people's folders, hand-edited or damaged run files."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import pytest
from cli_harness import SMALL_LOOP, endpoint_args, mils, results

from benchmarks.llm_server import LoadLLMServer
from mils.adapters.local_stack import TritonServer

pytestmark = pytest.mark.integration


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def caption(
    images: list[Path], out: Path, llm: LoadLLMServer, triton: TritonServer, cwd: Path
) -> list[str]:
    return [
        "caption",
        *map(str, images),
        "--steps",
        "2",
        *SMALL_LOOP,
        "--out",
        str(out),
        "--no-progress",
        *endpoint_args(llm.base_url, triton),
    ]


def test_a_folder_that_is_not_a_run_is_never_written(
    many_images: list[Path], load_llm: LoadLLMServer, rel_triton: TritonServer, tmp_path: Path
) -> None:
    """`--out` on a user's folder (or `--out .`) and `mils resume` on another tool's folder
    are refused, and every byte there stays as it was (no log, lock or table added)."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "config.json").write_text('{"learning_rate": 0.1}\n')
    (theirs / "pool.txt").write_text("their own pool\n")
    (theirs / "results.jsonl").write_text('{"their": "results"}\n')

    db = sqlite3.connect(theirs / "run.db")  # another tool's database
    db.execute("CREATE TABLE experiments (id INTEGER)")
    db.commit()
    db.close()
    before = snapshot(theirs)
    for out, cwd in ((theirs, tmp_path), (Path("."), theirs)):
        proc = mils(caption(many_images[:1], out, load_llm, rel_triton, cwd), cwd=cwd)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "holds no mils run" in proc.stderr and "Traceback" not in proc.stderr
        assert snapshot(theirs) == before
    proc = mils(["resume", str(theirs), "--no-progress"], cwd=tmp_path)
    assert proc.returncode == 2 and "not a mils run directory" in proc.stderr, proc.stderr
    assert snapshot(theirs) == before


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: "{not json", "cannot read"),
        (lambda c: "", "cannot read"),
        (lambda c: "null", "the file is NoneType"),
        (
            lambda c: json.dumps({**c, "loop": {**c["loop"], "steps": "five"}}),
            "loop.steps is 'five'",
        ),
        (lambda c: json.dumps({**c, "loop": []}), "loop is list"),
        (lambda c: json.dumps({k: v for k, v in c.items() if k != "task"}), "task is None"),
        (
            lambda c: json.dumps(
                {
                    **c,
                    "endpoints": {
                        **c["endpoints"],
                        "generator": {
                            **c["endpoints"]["generator"],
                            "base_urls": "http://127.0.0.1:1/v1",
                        },
                    },
                }
            ),
            "base_urls is 'http://127.0.0.1:1/v1'",
        ),
    ],
)
def test_a_hand_edited_config_is_refused_naming_the_key(
    many_images: list[Path],
    load_llm: LoadLLMServer,
    rel_triton: TritonServer,
    tmp_path: Path,
    edit: object,
    message: str,
) -> None:
    """A damaged config.json gives exit 2 and a message naming what is wrong; no traceback."""
    run = tmp_path / "run"
    proc = mils(caption(many_images[:1], run, load_llm, rel_triton, tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(edit(config))  # type: ignore[operator]
    proc = mils(["resume", str(run), "--no-progress"], cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_a_damaged_database_is_refused_and_salvaged(
    many_images: list[Path], load_llm: LoadLLMServer, rel_triton: TritonServer, tmp_path: Path
) -> None:
    """Random bytes in run.db: resume refuses it, changes nothing and names `mils salvage`;
    the salvaged copy resumes to a complete run."""
    run = tmp_path / "run"
    proc = mils(caption(many_images[:12], run, load_llm, rel_triton, tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = bytearray((run / "run.db").read_bytes())
    page = 4096
    middle = (len(data) // page // 2) * page
    data[middle : middle + page] = random.Random(7).randbytes(page)
    (run / "run.db").write_bytes(bytes(data))
    before = snapshot(run)
    proc = mils(["resume", str(run), "--no-progress"], cwd=tmp_path)
    assert proc.returncode == 2 and "damaged" in proc.stderr, proc.stderr[-2000:]
    assert f"mils salvage {run}" in proc.stderr and "Traceback" not in proc.stderr
    kept = ("run.db", "config.json", "pool.txt", "results.jsonl")
    assert [snapshot(run)[name] for name in kept] == [before[name] for name in kept]
    copy = tmp_path / "copy"
    salvaged = mils(["salvage", str(run), str(copy)], cwd=tmp_path)
    assert salvaged.returncode == 0, salvaged.stderr[-2000:]
    assert "committed steps" in salvaged.stderr
    resumed = mils(["resume", str(copy), "--no-progress"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = results(copy)
    assert rows and all(row["status"] == "done" and row["steps"] == 2 for row in rows.values())
