"""`mils caption --metrics-port`: Prometheus metrics scraped from a live run, as a
monitoring system would, and the errors a user meets setting it up."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import httpx
import pytest
from cli_harness import SMALL_LOOP, endpoint_args, mils, spawn
from fault_proxy import FaultProxy
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.llm_server import LoadLLMServer
from mils.adapters.local_stack import TritonServer

Scrape = dict[str, list[tuple[dict[str, str], float]]]


def scrape(url: str) -> Scrape:
    found: Scrape = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def total(found: Scrape, name: str) -> float:
    return sum(v for _, v in found.get(name, []))


def per_endpoint(found: Scrape, name: str) -> dict[str, float]:
    return {labels["endpoint"]: v for labels, v in found.get(name, [])}


def printed_url(log: Path, deadline: float) -> str:
    """The URL `mils` prints on stderr once its metrics server listens."""
    while time.monotonic() < deadline:
        if log.exists() and (m := re.search(r"metrics: (http://\S+)", log.read_text())):
            return m[1]
        time.sleep(0.05)
    raise AssertionError(f"no metrics URL printed: {log.read_text() if log.exists() else ''}")


@pytest.mark.integration
def test_metrics_scraped_during_a_live_caption_run(
    many_images: list[Path], load_llm: LoadLLMServer, rel_triton: TritonServer, tmp_path: Path
) -> None:
    """While `mils caption --metrics-port 0` runs, every scrape holds requests in flight
    within the endpoint's limit and the steps counter grows between scrapes; the server
    stops with the run."""
    images = many_images[10:16]
    run = tmp_path / "run"
    scrapes: list[Scrape] = []
    with FaultProxy(load_llm.base_url, latency_s=0.2) as proxy:
        proc = spawn(
            [
                "caption",
                *map(str, images),
                "--steps",
                "4",
                *SMALL_LOOP,
                "--generator-in-flight",
                "2",
                "--out",
                str(run),
                "--no-progress",
                "--metrics-port",
                "0",
                *endpoint_args(proxy.base_url, rel_triton),
            ],
            tmp_path,
        )
        try:
            url = printed_url(tmp_path / "spawned.log", time.monotonic() + 60)
            assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
            while proc.poll() is None:
                try:
                    scrapes.append(scrape(url))
                except httpx.TransportError:  # the run ended between poll() and the scrape
                    break
                time.sleep(0.1)
        finally:
            code = proc.wait(timeout=120)
    assert code == 0, (tmp_path / "spawned.log").read_text()[-3000:]
    endpoint = f"{proxy.base_url} (load-llm)"
    busy = []
    for found in scrapes:
        in_flight = per_endpoint(found, "mils_generator_in_flight")
        limit = per_endpoint(found, "mils_generator_limit")
        assert limit == {endpoint: 2}
        assert 0 <= in_flight[endpoint] <= 2
        busy.append(in_flight[endpoint])
        assert total(found, "mils_samples") == len(images)
    assert max(busy) > 0, "no scrape saw a request in flight"
    steps = [total(found, "mils_steps_committed_total") for found in scrapes]
    assert len(steps) >= 3 and steps == sorted(steps) and steps[0] < steps[-1] <= 24
    done = [total(found, "mils_samples_finished_total") for found in scrapes]
    assert done == sorted(done) and done[-1] <= len(images)
    last = scrapes[-1]
    assert total(last, "mils_generator_request_duration_seconds_count") >= steps[-1]
    assert total(last, "mils_scorer_batch_duration_seconds_count") >= 1
    assert total(last, "mils_embedding_cache_misses_total") > 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)


def test_a_busy_metrics_port_names_the_flag(tmp_path: Path) -> None:
    """Exit 2 with the port and what to do, before the run writes anything."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = mils(
            [
                "caption",
                str(tmp_path / "never-read.png"),
                "--out",
                str(tmp_path / "run"),
                "--generator-url",
                "http://127.0.0.1:9/v1",
                "--scorer-url",
                "127.0.0.1:9",
                "--metrics-port",
                str(port),
            ],
            cwd=tmp_path,
            timeout=60,
        )
    assert proc.returncode == 2, proc.stderr
    assert f"metrics port {port} on 127.0.0.1 is in use" in proc.stderr
    assert "pass another --metrics-port (0 picks a free one)" in proc.stderr
    assert not (tmp_path / "run" / "run.db").exists()


def test_metrics_host_without_a_port_is_refused(tmp_path: Path) -> None:
    """--metrics-host alone would silently serve nothing: exit 2 saying so."""
    proc = mils(
        [
            "caption",
            str(tmp_path / "never-read.png"),
            "--generator-url",
            "http://127.0.0.1:9/v1",
            "--scorer-url",
            "127.0.0.1:9",
            "--metrics-host",
            "0.0.0.0",
        ],
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--metrics-host needs --metrics-port" in proc.stderr
