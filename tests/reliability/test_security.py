"""Secrets stay secret and LLM replies stay data."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_harness import SECRET, SMALL_LOOP, endpoint_args, mils, query
from fault_proxy import FaultProxy

from benchmarks.llm_server import LoadLLMServer
from mils.adapters.local_stack import TritonServer, free_port

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


def test_credentials_in_a_url_are_masked_everywhere(
    many_images: list[Path], load_llm: LoadLLMServer, rel_triton: TritonServer, tmp_path: Path
) -> None:
    """user:password@ in --generator-url reaches no output or file (a failing endpoint's
    errors included); config.json keeps it masked, so a resume asks for the URL again."""
    password = "s3cret-in-url-77"
    good = load_llm.base_url.replace("http://", f"http://user:{password}@")
    dead = f"http://user:{password}@127.0.0.1:{free_port()}/v1"
    outputs = []
    for name, url in (("run", good), ("dead", dead)):
        proc = mils(
            [
                "caption",
                str(many_images[0]),
                "--steps",
                "1",
                *SMALL_LOOP,
                "--out",
                str(tmp_path / name),
                "--no-progress",
                "--retries",
                "2",
                "--log-level",
                "debug",
                *endpoint_args(url, rel_triton),
            ],
            cwd=tmp_path,
        )
        outputs += [proc.stdout, proc.stderr]
        assert proc.returncode == (0 if name == "run" else 1), proc.stderr[-2000:]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path
    assert all(password not in text for text in outputs)
    assert "user:***@" in (tmp_path / "run" / "config.json").read_text()
    assert "user:***@127.0.0.1" in (tmp_path / "dead" / "results.jsonl").read_text()
    again = mils(["resume", str(tmp_path / "dead"), "--no-progress"], cwd=tmp_path)
    assert again.returncode == 2 and "--generator-url" in again.stderr
    assert password not in again.stderr


def test_an_impossible_port_is_a_configuration_error(tmp_path: Path) -> None:
    """Port 99999 is refused before anything runs, naming the flag."""
    image = tmp_path / "x.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    for flag, value in (
        ("--generator-url", "http://127.0.0.1:99999/v1"),
        ("--scorer-url", "127.0.0.1:99999"),
    ):
        args = {"--generator-url": "http://127.0.0.1:9/v1", "--scorer-url": "127.0.0.1:9"} | {
            flag: value
        }
        proc = mils(
            [
                "caption",
                str(image),
                "--out",
                str(tmp_path / "run"),
                *(x for kv in args.items() for x in kv),
            ],
            cwd=tmp_path,
        )
        assert proc.returncode == 2 and "1-65535" in proc.stderr and flag in proc.stderr, (
            proc.stderr
        )
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / "run").exists()
