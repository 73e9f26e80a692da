"""Provider rate limits honoured, measured at the server: a run through the public API
against the load-model server keeps to a requests- or tokens-per-minute limit, given as an
option or learned from the server's `x-ratelimit-*` headers alone, with no 429s.

Each run has more samples waiting than the limit lets through, so the limit, not the
server or the loop, sets the pace; rates are measured from the server's own record of when
each request arrived and how many tokens it used.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import FakeScorer, vector
from PIL import Image

import mils
from benchmarks.llm_server import LLMCostModel, LLMFaults, LoadLLMServer
from mils import ConcurrencyConfig, GeneratorSettings, LoopConfig

pytestmark = pytest.mark.integration

FAST = LLMCostModel(capacity=64, prefill_ms=5, decode_tokens_per_s=50_000, seed=0)
SAMPLES, STEPS = 12, 4
"""48 requests: about 5 s at 600 a minute."""
IN_FLIGHT = 4
"""Requests in flight per endpoint: those sent before the first reply stated a limit."""
LOOP = LoopConfig(steps=STEPS, keep=20, requested=20)
POOL = [f"a pool caption number {i}" for i in range(30)]


class ImageScorer(FakeScorer):
    async def embed_target(self, data: bytes) -> np.ndarray:
        return vector(hashlib.sha256(data).hexdigest())


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    paths = []
    for i in range(SAMPLES):
        path = tmp_path / "in" / f"img{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (8, 8), (20 * i, 7, 90)).save(path)
        paths.append(path)
    return paths


async def run_against(
    images: list[Path], tmp_path: Path, faults: LLMFaults, **limits: int
) -> tuple[dict[str, Any], mils.RunStatistics]:
    """Run every image through the load-model server; its /stats with arrivals, and the
    run's last statistics."""
    with LoadLLMServer(cost=FAST, faults=faults, log_path=tmp_path / "llm.log") as llm:
        settings = GeneratorSettings(base_url=llm.base_url, model="load-llm", **limits)
        async with mils.open_run(
            "image-caption",
            images,
            generator=settings,
            scorer=ImageScorer(max_batch_size=64),
            out=tmp_path / "run",
            loop=LOOP,
            pool=POOL,
            concurrency=ConcurrencyConfig(samples_in_flight=SAMPLES, generator_in_flight=IN_FLIGHT),
        ) as run:
            results = [result async for result in run]
            statistics = run.statistics()
        assert [r.status for r in results] == ["done"] * SAMPLES
        return llm.stats(arrivals=True), statistics


def per_minute(arrivals: list[list[float]]) -> tuple[float, float]:
    """Requests and tokens per minute at the server: what arrived before the last request,
    over the time from the first to the last."""
    span = arrivals[-1][0] - arrivals[0][0]
    tokens = sum(tokens for _, tokens, _ in arrivals[:-1])
    return 60 * (len(arrivals) - 1) / span, 60 * tokens / span


async def test_a_requests_per_minute_option_is_kept_at_the_server(
    images: list[Path], tmp_path: Path
) -> None:
    """With `rpm` 600, the server sees 600 requests a minute (within 5%), from the first
    request on: no burst at the start."""
    stats, run = await run_against(images, tmp_path, LLMFaults(), rpm=600)
    assert stats["requests"] == SAMPLES * STEPS and stats["rate_limited"] == 0
    rpm, _ = per_minute(stats["arrivals"])
    assert rpm == pytest.approx(600, rel=0.05), stats["arrivals"]
    rate = run.endpoints[0].rate
    assert rate is not None and (rate.rpm, rate.rpm_learned) == (600, False)
    print(f"\nrpm option 600: {rpm:.1f} requests a minute at the server")


async def test_a_requests_limit_stated_by_the_server_is_learned_and_kept(
    images: list[Path], tmp_path: Path
) -> None:
    """With no option, a server enforcing 600 a minute (10 a second) that states it in its
    headers sees 600 a minute (within 5%) once its first replies told the engine, and
    answers no 429."""
    faults = LLMFaults(rpm=600, limit_burst_s=1.0)
    stats, run = await run_against(images, tmp_path, faults)
    assert stats["requests"] == SAMPLES * STEPS and stats["rate_limited"] == 0
    rpm, _ = per_minute(stats["arrivals"][IN_FLIGHT:])  # sent before any reply stated it
    assert rpm == pytest.approx(600, rel=0.05), stats["arrivals"]
    rate = run.endpoints[0].rate
    assert rate is not None and (rate.rpm, rate.rpm_learned) == (600, True)
    print(f"\nrpm learned 600: {rpm:.1f} requests a minute at the server")


@pytest.mark.parametrize("learned", [False, True], ids=["option", "learned"])
async def test_a_tokens_per_minute_limit_is_kept_at_the_server(
    images: list[Path], tmp_path: Path, learned: bool
) -> None:
    """With `tpm` 300,000 (as an option, or stated by an enforcing server), the server sees
    300,000 tokens a minute within 5%. Requests reserve an estimate and settle at the
    server's own count when the reply arrives, so only the requests in flight at the end
    carry estimates, a few hundred tokens of the ~25,000 measured; no 429."""
    faults = LLMFaults(tpm=300_000, limit_burst_s=1.0) if learned else LLMFaults()
    stats, run = await run_against(
        images, tmp_path, faults, **({} if learned else {"tpm": 300_000})
    )
    assert stats["requests"] == SAMPLES * STEPS and stats["rate_limited"] == 0
    _, tpm = per_minute(stats["arrivals"][IN_FLIGHT if learned else 0 :])
    assert tpm == pytest.approx(300_000, rel=0.05), stats["arrivals"]
    rate = run.endpoints[0].rate
    assert rate is not None and (rate.tpm, rate.tpm_learned) == (300_000, learned)
    print(f"\ntpm {'learned' if learned else 'option'} 300000: {tpm:.0f} tokens a minute")
