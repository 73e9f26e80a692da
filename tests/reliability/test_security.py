"""Secrets stay secret and LLM replies stay data."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_harness import SECRET, SMALL_LOOP, endpoint_args, mils, query
from fault_proxy import FaultProxy

from benchmarks.llm_server import LoadLLMServer
from mils.adapters.local_stack import TritonServer

pytestmark = pytest.mark.integration

HOSTILE = (
    "1. ../../etc/passwd\n2. $(touch PWNED_SUBST)\n3. `touch PWNED_TICK`\n"
    "4. ; rm -rf ~ && echo gone\n5. /tmp/../{root}/PWNED_PATH\n"
)


def assert_secret_absent(run: Path, *texts: str) -> None:
    for path in run.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    for text in texts:
        assert SECRET not in text


@pytest.mark.parametrize("source", ["env", "file"])
def test_api_key_reaches_the_server_but_no_file_or_output(
    many_images: list[Path],
    load_llm: LoadLLMServer,
    rel_triton: TritonServer,
    tmp_path: Path,
    source: str,
) -> None:
    """The API key, from the environment or --generator-api-key-file, is sent to the endpoint
    and appears in no file of the run directory, nor on stdout/stderr (debug logs included)."""
    run = tmp_path / "run"
    extra: list[str] = []
    env = {}
    if source == "file":
        key_file = tmp_path / "key.txt"
        key_file.write_text(SECRET + "\n")
        extra = ["--generator-api-key-file", str(key_file)]
        env = {"OPENAI_API_KEY": ""}
    with FaultProxy(load_llm.base_url, rates={"500": 0.3}, retry_after_s=0.1, seed=3) as proxy:
        proc = mils(
            [
                "caption",
                *map(str, many_images[:2]),
                "--steps",
                "2",
                *SMALL_LOOP,
                "--out",
                str(run),
                "--no-progress",
                "--log-level",
                "debug",
                *extra,
                *endpoint_args(proxy.base_url, rel_triton),
            ],
            cwd=tmp_path,
            extra_env=env,
        )
        seen = proxy.authorizations
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert seen == {f"Bearer {SECRET}"}
    assert_secret_absent(run, proc.stdout, proc.stderr)


def test_hostile_llm_reply_is_stored_as_plain_text(
    many_images: list[Path], load_llm: LoadLLMServer, rel_triton: TritonServer, tmp_path: Path
) -> None:
    """Shell and path text in an LLM reply is scored and stored verbatim: nothing is executed,
    no path is touched, nothing is written outside the run directory."""
    run, work = tmp_path / "run", tmp_path / "work"
    work.mkdir()
    reply = HOSTILE.format(root=tmp_path.name)
    with FaultProxy(load_llm.base_url, reply=lambda prompt, n: reply) as proxy:
        proc = mils(
            [
                "caption",
                str(many_images[0]),
                "--steps",
                "2",
                *SMALL_LOOP,
                "--out",
                str(run),
                "--no-progress",
                *endpoint_args(proxy.base_url, rel_triton),
            ],
            cwd=work,
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    texts = {row[0] for row in query(run, "SELECT text FROM candidates")}
    assert {"../../etc/passwd", "$(touch PWNED_SUBST)", "; rm -rf ~ && echo gone"} <= texts
    assert not list(tmp_path.rglob("PWNED*")) and not list(Path("/tmp").glob("PWNED*"))
    assert list(work.iterdir()) == []
    assert {p.name for p in tmp_path.iterdir()} == {"run", "work"}
