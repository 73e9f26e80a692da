"""Helpers of the CLI tests: run the `mils` CLI, inspect a run directory."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mils.adapters.local_stack import ServerInfo, TritonServer, save_state

REPO = Path(__file__).resolve().parents[1]
TEST_MODELS = Path(__file__).resolve().parent / "reliability" / "triton_models"
MODELS = ("toyclip_text", "toyclip_image", "bad_text", "bad_image", "wrong_names", "wrong_dims")


def model_repository(dest: Path) -> Path:
    """A repository holding the toyclip pair and the test-only models (copied, small)."""
    for name in MODELS:
        src = REPO / "triton_models" / name
        if not src.is_dir():
            src = TEST_MODELS / name
        shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


SECRET = "sk-reliability-never-log-this-42"
# Small per-step work; keep and requested small so 100+ samples run in seconds.
SMALL_LOOP = ("--keep", "6", "--requested", "5", "--max-tokens", "200")


def endpoint_args(
    generator_url: str,
    triton: TritonServer,
    *,
    generator_model: str = "load-llm",
    text_model: str = "toyclip_text",
    image_model: str = "toyclip_image",
) -> list[str]:
    return [
        "--generator-url",
        generator_url,
        "--generator-model",
        generator_model,
        "--scorer-url",
        triton.grpc_url,
        "--text-model",
        text_model,
        "--image-model",
        image_model,
    ]


def env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return dict(os.environ) | {"OPENAI_API_KEY": SECRET} | dict(extra or {})


def mils(
    args: Sequence[str],
    cwd: Path,
    *,
    timeout: float = 300,
    extra_env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mils", *args],
        cwd=cwd,
        env=env(extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
        errors="backslashreplace",
    )


def spawn(args: Sequence[str], cwd: Path) -> subprocess.Popen[bytes]:
    with (cwd / "spawned.log").open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "mils", *args],
            cwd=cwd,
            env=env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def query(run: Path, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(run / "run.db")
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def step_rows(run: Path) -> list[tuple[str, int]]:
    if not (run / "run.db").exists():
        return []
    try:
        return [
            (sid, step)
            for sid, step in query(
                run, "SELECT sample_id, step FROM steps WHERE step > 0 ORDER BY sample_id, step"
            )
        ]
    except sqlite3.OperationalError:  # created, tables not yet there
        return []


def results(run: Path) -> dict[str, dict[str, Any]]:
    lines = (run / "results.jsonl").read_text(encoding="utf-8").splitlines()
    return {row["sample_id"]: row for row in map(json.loads, lines)}


def log_events(run: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in (run / "log.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def assert_complete(run: Path, sample_ids: Sequence[str], steps: int) -> None:
    """Every sample done with exactly steps 1..steps, each once; results.jsonl agrees."""
    rows = step_rows(run)
    assert len(rows) == len(set(rows)), "a step was committed twice"
    per_sample = Counter(sid for sid, _ in rows)
    expected = {sid: steps for sid in sample_ids}
    assert dict(per_sample) == expected, {
        sid: per_sample.get(sid) for sid in sample_ids if per_sample.get(sid) != steps
    }
    assert rows == sorted((sid, s) for sid in sample_ids for s in range(1, steps + 1))
    assert query(run, "PRAGMA integrity_check") == [("ok",)]
    res = results(run)
    assert set(res) == set(sample_ids)
    for _sid, row in res.items():
        assert row["status"] == "done" and row["steps"] == steps, row
        assert [t["step"] for t in row["trajectory"]] == list(range(steps + 1))


def on_local_stack(cwd: Path, triton: TritonServer, llm: Any) -> None:
    """Make `triton` and `llm` (a LlamaServer or a load-model server) the local stack of
    `mils` run in `cwd`, as `mils local up` records it: no endpoint or model flag needed."""
    (cwd / ".mils").mkdir(exist_ok=True)
    servers: dict[str, ServerInfo] = {"triton": triton.info(), "llama": llm.info()}
    save_state(cwd / ".mils" / "local.json", servers)


def inferences(triton: TritonServer) -> dict[str, int]:
    """Items each model of `triton` has processed so far (Triton's per-model statistics)."""
    with urllib.request.urlopen(f"http://{triton.http_url}/v2/models/stats", timeout=10) as r:
        stats = json.load(r)["model_stats"]
    return {m["name"]: m["inference_count"] for m in stats}
