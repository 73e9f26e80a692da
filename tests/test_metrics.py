"""A run's Prometheus metrics from the API (`mils.MetricsConfig`): served over HTTP and
scraped while a real run goes, added to a caller's own registry, refused on a busy port."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fault_proxy import FaultProxy
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import mils
from benchmarks.llm_server import LoadLLMServer
from mils import ConcurrencyConfig, GeneratorSettings, LoopConfig, MetricsConfig, RetryConfig
from mils._metrics import METRIC_NAMES, RunMetrics
from mils.adapters import ScorerSettings
from mils.adapters.local_stack import TritonServer

POOL = [f"a photo of a small thing number {i}" for i in range(40)]
LOOP = LoopConfig(steps=3, keep=6, requested=5)
FAST_RETRY = RetryConfig(initial_s=0.01, max_s=0.05, jitter_s=0.01)

Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse(text: str) -> Samples:
    """Sample name -> [(labels, value)] of one scrape."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def value(scrape: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    rows = scrape.get(name, [])
    return sum(v for have, v in rows if labels.items() <= have.items())


def by(scrape: Samples, name: str, label: str, **labels: str) -> dict[str, float]:
    """The samples of `name` keyed by one label's value."""
    return {
        have[label]: v
        for have, v in scrape.get(name, [])
        if labels.items() <= have.items() and label in have
    }


def assert_consistent(scrape: Samples, samples: int) -> None:
    """What must hold in any one scrape of a run with a fixed generator limit."""
    in_flight = by(scrape, "mils_generator_in_flight", "endpoint")
    limits = by(scrape, "mils_generator_limit", "endpoint")
    assert in_flight.keys() == limits.keys()
    assert all(0 <= in_flight[e] <= limits[e] for e in limits), (in_flight, limits)
    finished = by(scrape, "mils_samples_finished_total", "status")
    assert sum(finished.values()) <= samples
    for name in ("mils_generator_request_duration_seconds", "mils_scorer_batch_duration_seconds"):
        for endpoint in by(scrape, f"{name}_count", "endpoint"):
            buckets = [
                (float(have["le"]), v)
                for have, v in scrape[f"{name}_bucket"]
                if have["endpoint"] == endpoint
            ]
            counts = [v for _, v in sorted(buckets)]
            assert counts == sorted(counts) and counts[-1] == value(
                scrape, f"{name}_count", endpoint=endpoint
            )


def open_run(
    images: Sequence[Path], generator_url: str, triton: TritonServer, out: Path, **kw: Any
) -> mils.Run:
    """A run of the load-model LLM and Triton's toyclip pair, small and quick."""
    return mils.open_run(
        "image-caption",
        images,
        generator=GeneratorSettings(base_url=generator_url, model="load-llm", max_tokens=200),
        scorer=ScorerSettings(
            url=triton.grpc_url, text_model="toyclip_text", target_model="toyclip_image"
        ),
        out=out,
        loop=LOOP,
        pool=POOL,
        **kw,
    )


@pytest.mark.integration
async def test_metrics_served_and_scraped_while_a_real_run_goes(
    many_images: list[Path], load_llm: LoadLLMServer, rel_triton: TritonServer, tmp_path: Path
) -> None:
    """Scraped over HTTP during a run with injected 5xx faults, every scrape is consistent
    and the steps counter grows; at the end the metrics equal the run's summary; the server
    is gone once the run is closed."""
    images = many_images[:4]
    scrapes: list[Samples] = []
    with FaultProxy(load_llm.base_url, latency_s=0.1, rates={"500": 0.25}, seed=1) as proxy:
        run = open_run(
            images,
            proxy.base_url,
            rel_triton,
            tmp_path / "run",
            concurrency=ConcurrencyConfig(generator_in_flight=2),
            retry=FAST_RETRY,
            metrics=MetricsConfig(port=0),
        )
        async with run, httpx.AsyncClient(timeout=10) as client, asyncio.TaskGroup() as group:
            url = run.metrics_url
            assert url is not None and url.startswith("http://127.0.0.1:")
            waiting = group.create_task(run.wait())
            while not waiting.done():
                scrapes.append(parse((await client.get(url)).text))
                await asyncio.sleep(0.05)
            summary = waiting.result()
            final = parse((await client.get(url)).text)
    assert summary.done == len(images) and summary.failed == 0
    assert summary.faults.get("5xx", 0) > 0, "the proxy injected no fault: nothing was checked"
    for scrape in [*scrapes, final]:
        assert_consistent(scrape, len(images))
    steps = [value(s, "mils_steps_committed_total") for s in scrapes]
    assert len(scrapes) >= 3 and steps == sorted(steps) and steps[-1] > steps[0]
    endpoint = f"{proxy.base_url} (load-llm)"  # as the live display shows it
    assert by(final, "mils_generator_limit", "endpoint") == {endpoint: 2}
    assert by(final, "mils_samples_finished_total", "status") == {
        "done": len(images),
        "failed": 0,
        "cancelled": 0,
    }
    assert value(final, "mils_samples") == len(images)
    assert value(final, "mils_steps_committed_total") == summary.steps == len(images) * LOOP.steps
    assert value(final, "mils_candidates_scored_total") == summary.candidates_scored
    assert value(final, "mils_texts_embedded_total") == summary.texts_evaluated
    assert value(final, "mils_embedding_cache_misses_total") == summary.texts_evaluated
    assert by(final, "mils_endpoint_faults_total", "kind") == summary.faults
    assert value(final, "mils_retries_total") == sum(summary.faults.values())  # none ran out
    # One observation per attempt: the histogram, the requests counter and the summary agree.
    generator = {"role": "generator", "endpoint": endpoint}
    outcomes = by(final, "mils_requests_total", "outcome", **generator)
    assert outcomes["5xx"] == summary.faults["5xx"] and set(outcomes) == {"ok", "5xx"}
    attempts = value(final, "mils_generator_request_duration_seconds_count")
    assert attempts == sum(outcomes.values()) == summary.generator_requests
    assert outcomes["ok"] == len(images) * LOOP.steps
    batches = value(final, "mils_scorer_batch_duration_seconds_count")
    assert batches >= 1 and batches == value(final, "mils_requests_total", role="scorer")
    assert value(final, "mils_generator_in_flight") == 0
    assert {have["run"] for rows in final.values() for have, _ in rows} == {"run"}
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)


@pytest.mark.integration
async def test_metrics_join_your_own_registry_for_the_run_only(
    many_images: list[Path], load_llm: LoadLLMServer, rel_triton: TritonServer, tmp_path: Path
) -> None:
    """With `registry=`, no server starts; the run's metrics are in the caller's registry
    while it is open (a second open run is refused there) and leave it when it ends."""
    registry = CollectorRegistry(auto_describe=True)  # as prometheus_client's global one
    images = many_images[4:6]
    config = MetricsConfig(registry=registry)
    run = open_run(images, load_llm.base_url, rel_triton, tmp_path / "mine", metrics=config)
    async with run:
        assert run.metrics_url is None
        other = open_run(images, load_llm.base_url, rel_triton, tmp_path / "other", metrics=config)
        with pytest.raises(mils.ConfigError, match="already holds metrics"):
            async with other:
                pass
        summary = await run.wait()
        scrape = parse(generate_latest(registry).decode())
    assert not (tmp_path / "other" / "run.db").exists()
    assert summary.done == len(images)
    assert by(scrape, "mils_samples_finished_total", "status", run="mine")["done"] == len(images)
    assert value(scrape, "mils_steps_committed_total", run="mine") == summary.steps
    assert value(scrape, "mils_generator_request_duration_seconds_count") >= summary.steps
    families = {family.name for family in text_string_to_metric_families(
        generate_latest(registry).decode()
    )}  # fmt: skip
    assert not {name for name in families if name.startswith("mils_")}


async def test_a_busy_metrics_port_is_a_config_error_before_anything_is_written(
    tmp_path: Path,
) -> None:
    """The error names the port and what to do; the run directory gets no run.db."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = mils.open_run(
            "image-caption",
            ["never-read.png"],
            generator=GeneratorSettings(base_url="http://127.0.0.1:9/v1", model="m"),
            scorer=ScorerSettings(url="127.0.0.1:9"),
            out=tmp_path / "run",
            pool=POOL,
            metrics=MetricsConfig(port=port),
        )
        with pytest.raises(mils.ConfigError) as caught:
            async with run:
                pass
    message = str(caught.value)
    assert f"metrics port {port} on 127.0.0.1 is in use" in message
    assert "pass another `port`" in message
    assert not (tmp_path / "run" / "run.db").exists()


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, "need a `port`"),
        ({"port": 70000}, "metrics port 70000 is out of range"),
        ({"port": -1}, "out of range"),
    ],
)
def test_metrics_config_refuses_what_cannot_work(fields: dict[str, int], expected: str) -> None:
    """No destination, or a port outside 0-65535, is a ConfigError naming the setting."""
    with pytest.raises(mils.ConfigError, match=expected):
        MetricsConfig(**fields)  # type: ignore[arg-type]


async def test_every_listed_metric_name_is_exposed() -> None:
    """METRIC_NAMES (the README's list) is exactly what a registry holding a run shows."""
    registry = CollectorRegistry()
    config = MetricsConfig(registry=registry)
    async with RunMetrics(config, run="r", statistics=lambda: None):
        text = generate_latest(registry).decode()
    shown = Counter(
        f"{family.name}_total" if family.type == "counter" else family.name
        for family in text_string_to_metric_families(text)
    )
    assert set(shown) == set(METRIC_NAMES) and max(shown.values()) == 1
