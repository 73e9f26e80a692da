"""`mils caption` through a real LiteLLM proxy in front of the real llama.cpp server.

The proxy is started from examples/litellm.yaml (lowest-usage routing, no retries of its
own, a master key) with three model groups: `smollm2` (llama.cpp), `smollm2-limited`
(llama.cpp with `rpm: 2`) and `smollm2-pair` (llama.cpp and the load-model server).

What LiteLLM 1.108.7 does, as these tests pin it down: an rpm limit counts requests per UTC
clock minute and refuses once `used + 1 >= rpm` (so `rpm: 2` lets one request a minute
through), answering `429` with `llm_provider-retry-after: 60` (always 60) and a
"No deployments available for selected model" message; a model it does not serve gets
`400` "Invalid model name passed in model=..."; a key other than the master key, with no
database, gets `400` "No connected db.".
"""

from __future__ import annotations

import ast
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_harness import SECRET, assert_complete, endpoint_args, log_events, mils, query
from litellm_proxy import LiteLLMProxy, deployment, find_litellm, write_config

from benchmarks.llm_server import LoadLLMServer
from mils.adapters.local_stack import LlamaServer, TritonServer

pytestmark = pytest.mark.integration

MASTER_KEY = "sk-litellm-master-test-7"
KEY_ENV = "MILS_TEST_LITELLM_KEY"
SMALL_LOOP = ["--keep", "8", "--requested", "5", "--max-tokens", "160"]
RATE_WINDOW_S = 60  # LiteLLM's rpm window: a UTC clock minute


@pytest.fixture(scope="session")
def litellm_bin() -> Path:
    """The `litellm` binary, looked for before any server starts (fails, naming the fix)."""
    return find_litellm()


@pytest.fixture(scope="module")
def proxy(
    litellm_bin: Path,
    llama_server: LlamaServer,
    load_llm: LoadLLMServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiteLLMProxy]:
    """LiteLLM on a free loopback port in front of llama.cpp and the load-model server."""
    root = tmp_path_factory.mktemp("litellm")
    llama = llama_server.base_url
    config = write_config(
        root / "litellm.yaml",
        llama,
        [
            deployment("smollm2-limited", "smollm2", llama, rpm=2),
            deployment("smollm2-pair", "smollm2", llama),
            deployment("smollm2-pair", "load-llm", load_llm.base_url),
        ],
    )
    server = LiteLLMProxy(
        config=config, master_key=MASTER_KEY, log_path=root / "litellm.log", binary=litellm_bin
    )
    started = time.monotonic()
    with server:
        print(f"\nLiteLLM proxy ready in {time.monotonic() - started:.1f} s")
        yield server


def caption(
    images: list[Path],
    out: Path,
    proxy: LiteLLMProxy,
    triton: TritonServer,
    model: str,
    *extra: str,
) -> list[str]:
    return [
        "caption",
        *map(str, images),
        *SMALL_LOOP,
        "--out",
        str(out),
        "--no-progress",
        "--generator-api-key-env",
        KEY_ENV,
        *extra,
        *endpoint_args(proxy.base_url, triton, generator_model=model),
    ]


def run_mils(args: list[str], cwd: Path, proxy: LiteLLMProxy, key: str = MASTER_KEY) -> str:
    """Run the CLI; return its stderr, with the proxy's log tail for failure messages."""
    proc = mils(args, cwd, extra_env={KEY_ENV: key})
    tail = "\n".join(proxy.log_path.read_text(errors="replace").splitlines()[-15:])
    return f"exit {proc.returncode}\n{proc.stderr[-3000:]}\n--- litellm log ---\n{tail}"


def llama_requests(llama: LlamaServer) -> int:
    """Chat requests llama.cpp has served (its access log)."""
    return llama.log_path.read_text(errors="replace").count("POST /v1/chat/completions HTTP")


def summary_faults(stderr: str) -> dict[str, int]:
    found = re.search(r"endpoint faults (\{.*\})", stderr)
    assert found, stderr
    faults: dict[str, int] = ast.literal_eval(found.group(1))
    return faults


def test_a_caption_run_through_the_proxy_completes(
    many_images: list[Path],
    proxy: LiteLLMProxy,
    llama_server: LlamaServer,
    rel_triton: TritonServer,
    tmp_path: Path,
) -> None:
    """Two images, two steps through LiteLLM (its master key read from the variable
    --generator-api-key-env names) finish, every reply from llama.cpp behind it."""
    images, run = many_images[:2], tmp_path / "run"
    before = llama_requests(llama_server)
    args = caption(images, run, proxy, rel_triton, "smollm2", "--steps", "2")
    out = run_mils(args, tmp_path, proxy)
    assert out.startswith("exit 0\n"), out
    assert_complete(run, [p.stem for p in images], 2)
    assert llama_requests(llama_server) - before >= len(images) * 2
    for path in run.iterdir():
        if path.is_file():
            assert MASTER_KEY.encode() not in path.read_bytes(), path
            assert SECRET.encode() not in path.read_bytes(), path


def test_a_litellm_rate_limit_pauses_the_run_until_its_minute_passes(
    many_images: list[Path], proxy: LiteLLMProxy, rel_triton: TritonServer, tmp_path: Path
) -> None:
    """LiteLLM's 429 for an rpm limit (`llm_provider-retry-after: 60`) pauses the run for
    the 60 s it names, and then the step goes through: with `--retries 1` no sample fails."""
    # One request a minute gets through; the second must meet the 429 in the same clock
    # minute, so start well before a minute ends (waits at most 15 s, 2 s on average).
    if (second := time.time() % RATE_WINDOW_S) > 45:
        time.sleep(RATE_WINDOW_S - second + 0.5)
    images, run = many_images[2:3], tmp_path / "run"
    extra = ("--steps", "2", "--generator-in-flight", "1", "--retries", "1",
             "--max-rate-limit-wait", "90")  # fmt: skip
    started = time.monotonic()
    out = run_mils(
        caption(images, run, proxy, rel_triton, "smollm2-limited", *extra), tmp_path, proxy
    )
    wall = time.monotonic() - started
    assert out.startswith("exit 0\n"), out
    assert_complete(run, [p.stem for p in images], 2)
    faults = summary_faults(out)
    assert set(faults) == {"429"} and faults["429"] >= 1, faults
    paused = [e for e in log_events(run) if e["event"] == "endpoint_paused"]
    assert paused and all(e["told_by_server"] and e["wait_s"] == 60 for e in paused), paused
    assert wall >= RATE_WINDOW_S
    print(f"\nrate limit: {faults['429']} 429s, {len(paused)} pauses, run {wall:.1f} s")


@pytest.mark.parametrize(
    ("model", "key", "message"),
    [
        ("nope", MASTER_KEY, "Invalid model name passed in model=nope"),
        ("smollm2", "sk-not-the-master-key", "No connected db."),
    ],
    ids=["wrong-model", "wrong-key"],
)
def test_a_setting_the_proxy_refuses_stops_the_run_with_exit_2(
    many_images: list[Path],
    proxy: LiteLLMProxy,
    llama_server: LlamaServer,
    rel_triton: TritonServer,
    tmp_path: Path,
    model: str,
    key: str,
    message: str,
) -> None:
    """A model LiteLLM does not serve (or a key it cannot check) stops a 6-image run with
    exit 2 quoting LiteLLM's message; no sample is marked failed and llama.cpp saw nothing."""
    images, run = many_images[3:9], tmp_path / "run"
    before = llama_requests(llama_server)
    args = caption(images, run, proxy, rel_triton, model, "--steps", "1")
    out = run_mils(args, tmp_path, proxy, key=key)
    assert out.startswith("exit 2\n"), out
    error = out.split("\n--- litellm log ---")[0].strip().splitlines()[-1]
    assert error.startswith("mils: error: generator ") and "HTTP 400" in error, error
    assert message in error and "--generator-model" in error, error
    statuses = Counter(status for (status,) in query(run, "SELECT status FROM samples"))
    assert statuses["failed"] == 0, statuses
    assert llama_requests(llama_server) == before
    print(f"\n{error}")


def test_two_backends_in_one_model_group_both_serve_the_run(
    many_images: list[Path],
    proxy: LiteLLMProxy,
    llama_server: LlamaServer,
    load_llm: LoadLLMServer,
    rel_triton: TritonServer,
    tmp_path: Path,
) -> None:
    """A LiteLLM model group of llama.cpp and the load-model server, under lowest-usage
    routing, spreads one run's requests over both backends and the run completes."""
    images, run = many_images[9:11], tmp_path / "run"
    llama_before, load_before = llama_requests(llama_server), load_llm.stats()["requests"]
    extra = ("--steps", "2", "--generator-in-flight", "1")
    out = run_mils(caption(images, run, proxy, rel_triton, "smollm2-pair", *extra), tmp_path, proxy)
    assert out.startswith("exit 0\n"), out
    assert_complete(run, [p.stem for p in images], 2)
    by_llama = llama_requests(llama_server) - llama_before
    by_load = load_llm.stats()["requests"] - load_before
    assert by_llama >= 1 and by_load >= 1, (by_llama, by_load)
    assert by_llama + by_load >= len(images) * 2
    print(f"\nmodel group: llama.cpp served {by_llama}, the load-model server {by_load}")
