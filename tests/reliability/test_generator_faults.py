"""A run through a fault-injecting proxy finishes every sample, with its faults accounted."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from cli_harness import SMALL_LOOP, assert_complete, endpoint_args, log_events, mils, query
from fault_proxy import FAULT_KINDS, FaultProxy, spread

from benchmarks.llm_server import LoadLLMServer
from mils.adapters.local_stack import TritonServer

pytestmark = pytest.mark.integration

# What the engine calls each injected fault (EndpointUnavailable.kind).
ENGINE_KIND = {
    "429": "429",
    "500": "5xx",
    "502": "5xx",
    "503": "5xx",
    "stall": "timeout",
    "reset": "reset",
    "truncated": "protocol",
    "non_json": "non_json",
    "empty_choices": "empty_choices",
}
RETRIES = 8
STEPS = 3


def test_120_samples_with_15_percent_faults_all_complete(
    many_images: list[Path], load_llm: LoadLLMServer, rel_triton: TritonServer, tmp_path: Path
) -> None:
    """With ~15% of generator calls faulted (every kind), all 120 samples get exactly `steps`
    steps, and the summary and log.jsonl count each fault by kind, the retried ones within
    the bound."""
    run = tmp_path / "run"
    pool = tmp_path / "pool.txt"
    pool.write_text(
        "".join(
            f"a {c} photo of something {i}\n"
            for i, c in enumerate(["red", "blue", "green", "dark", "bright", "white"] * 3)
        )
    )
    with FaultProxy(
        load_llm.base_url, rates=spread(0.15, FAULT_KINDS), seed=7, stall_s=8.0, retry_after_s=0.5
    ) as proxy:
        proc = mils(
            [
                "caption",
                *map(str, many_images),
                "--steps",
                str(STEPS),
                *SMALL_LOOP,
                "--init-pool",
                str(pool),
                "--out",
                str(run),
                "--no-progress",
                "--retries",
                str(RETRIES),
                "--generator-timeout",
                "4",  # a stall (8 s) always times out; a loaded normal reply never does
                "--generator-in-flight",
                "16",
                *endpoint_args(proxy.base_url, rel_triton),
            ],
            cwd=tmp_path,
        )
        injected = Counter(proxy.statistics()["injected"])
        requests = proxy.statistics()["chat_requests"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = [p.stem for p in many_images]
    assert_complete(run, ids, STEPS)

    # Every retried fault the proxy injected is counted once, under the engine's name for it.
    expected = Counter()
    for kind, n in injected.items():
        if kind in ENGINE_KIND:
            expected[ENGINE_KIND[kind]] += n
    summary = re.search(r"endpoint faults (\{.*\})", proc.stderr)
    assert summary, proc.stderr[-2000:]
    assert eval(summary.group(1)) == dict(expected)
    # A 429 pauses its endpoint and is sent again: counted, but never a retry.
    retries = [e for e in log_events(run) if e["event"] == "endpoint_retry"]
    assert Counter(e["fault"] for e in retries) == expected - Counter({"429": injected["429"]})
    assert max(e["attempt"] for e in retries) < RETRIES
    # Faults that are not retried still cost nothing but new candidates: their steps exist.
    empty_steps = query(run, "SELECT COUNT(*) FROM steps WHERE n_new = 0 AND step > 0")[0][0]
    assert empty_steps >= injected["no_candidates"] + injected["echo_prompt"]
    assert 0.10 <= sum(injected.values()) / requests <= 0.20
    assert len(injected) == len(FAULT_KINDS), injected
    print(f"\nfaults injected {dict(injected)} in {requests} requests; engine {dict(expected)}")
