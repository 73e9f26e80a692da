"""The benchmark scenarios and their synthetic workload (pool, targets), all deterministic.

Latencies are chosen so that each scenario's lower bound is a few seconds to ~20 s on the
bench profile, and so that server time is slept (synthetic), not computed: client and
servers share 2 cores here.

A reply of 50 candidates is about 900 completion tokens, so with `decode_tokens_per_s` D a
generator request holds a slot for about prefill + 900 / D seconds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from benchmarks.llm_server import LLMCostModel, LLMFaults, candidate_lines
from benchmarks.scorer_server import ScorerCostModel

__all__ = ["SCENARIOS", "MemoryReader", "Scenario", "make_pool", "make_targets", "quick"]

WINDOW_S = 30.0
"""The 429 window of `rate-limit-window` (the issue asks 60 s; 30 s keeps the suite short,
and the hand loop's 3 tries at 1 s are as far below either)."""
HAND_PASSES = 5
"""Passes of the hand loop over failed samples where faults make it lose some."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """One benchmark: servers, workload, and which runs to do."""

    name: str
    what: str
    """One line: what this scenario stands for."""
    llm: LLMCostModel
    scorer: ScorerCostModel
    samples: int = 200
    steps: int = 5
    pool: int = 2000
    keep: int = 50
    requested: int = 50
    endpoints: int = 1
    """Generator servers; with 2, the engine runs on 1 and on 2 and the ratio is reported."""
    baseline_samples: int | None = 32
    """Samples the baseline runs (whole groups of 16); its rate is per sample-step, so a
    subset measures it exactly while keeping the run short. None: all; 0: no baseline."""
    scale: bool = False
    """Report peak RSS, RSS over time and engine CPU time / wall time."""
    other_llms: tuple[LLMCostModel, ...] = ()
    """Cost models of endpoints 2, 3, ... when they differ from `llm` (then `endpoints` is
    1 + their number); by default every endpoint is `llm`."""
    faults: LLMFaults | None = None
    """Faults every LLM server injects (transient 500s, a 429 window)."""
    patience: int | None = None
    """The loop's patience: samples stop early, so they differ in cost."""
    hand: tuple[int | None, ...] = (None,)
    """Hand-loop runs, by the size of its semaphore (None: the servers' true capacity)."""
    hand_samples: int | None = None
    """Samples the hand loop runs (the first ones); None: all. Its rate is per sample-step."""
    hand_passes: int = 1
    """Passes of the hand loop over its failed samples (a user rerunning the script)."""

    def __post_init__(self) -> None:
        if self.other_llms and self.endpoints != 1 + len(self.other_llms):
            raise ValueError(
                f"scenario {self.name!r}: endpoints {self.endpoints} but "
                f"{1 + len(self.other_llms)} cost models; set endpoints to match"
            )

    def llm_costs(self) -> list[LLMCostModel]:
        """The cost model of each LLM server, seeded by its position."""
        costs = [self.llm, *self.other_llms] if self.other_llms else [self.llm] * self.endpoints
        return [dataclasses.replace(cost, seed=i) for i, cost in enumerate(costs)]


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="generator-bound",
        what="the usual case: the LLM server is the bottleneck",
        llm=LLMCostModel(capacity=32, prefill_ms=50, decode_tokens_per_s=3000),
        scorer=ScorerCostModel(text_a_ms=2, text_b_ms=0.05),
    ),
    Scenario(
        name="scorer-bound",
        what="a slow scorer (e.g. a renderer in the loop) is the bottleneck",
        llm=LLMCostModel(capacity=32, prefill_ms=20, decode_tokens_per_s=10000),
        scorer=ScorerCostModel(text_a_ms=5, text_b_ms=0.2),
    ),
    Scenario(
        name="balanced",
        what="generator and scorer take about the same time",
        llm=LLMCostModel(capacity=32, prefill_ms=30, decode_tokens_per_s=4000),
        scorer=ScorerCostModel(text_a_ms=3, text_b_ms=0.12),
    ),
    Scenario(
        name="two-endpoints",
        what="generator-bound on 2 LLM servers vs 1",
        llm=LLMCostModel(capacity=16, prefill_ms=50, decode_tokens_per_s=3000),
        scorer=ScorerCostModel(text_a_ms=2, text_b_ms=0.05),
        samples=100,
        endpoints=2,
        baseline_samples=0,
    ),
    Scenario(
        name="scale",
        what="10,000 samples on fast servers: the engine's own cost and memory",
        llm=LLMCostModel(capacity=256, prefill_ms=5, decode_tokens_per_s=100_000),
        scorer=ScorerCostModel(text_a_ms=1, text_b_ms=0.01, image_a_ms=1, image_b_ms=0.05),
        samples=10_000,
        steps=2,
        pool=2000,
        keep=10,
        requested=10,
        baseline_samples=0,
        scale=True,
        hand_samples=2000,
    ),
    # Where infrastructure is not ideal: the hand loop's blind spots.
    Scenario(
        name="capacity-unknown",
        what="generator-bound, 64 slots nobody told the user: hand loop at 8 and 128",
        llm=LLMCostModel(capacity=64, prefill_ms=50, decode_tokens_per_s=3000),
        scorer=ScorerCostModel(text_a_ms=2, text_b_ms=0.05),
        samples=150,
        baseline_samples=0,
        hand=(None, 8, 128),
    ),
    Scenario(
        name="faults-10pct",
        what="generator-bound, 10% of chat requests answer HTTP 500",
        llm=LLMCostModel(capacity=32, prefill_ms=50, decode_tokens_per_s=3000),
        scorer=ScorerCostModel(text_a_ms=2, text_b_ms=0.05),
        faults=LLMFaults(error_rate=0.1),
        baseline_samples=0,
        hand_passes=HAND_PASSES,
    ),
    Scenario(
        name="rate-limit-window",
        what=f"generator-bound, then every request 429 until a {WINDOW_S:g} s window ends",
        llm=LLMCostModel(capacity=32, prefill_ms=50, decode_tokens_per_s=3000),
        scorer=ScorerCostModel(text_a_ms=2, text_b_ms=0.05),
        faults=LLMFaults(rate_limit=500, rate_window_s=WINDOW_S),
        baseline_samples=0,
        hand_passes=HAND_PASSES,
    ),
    Scenario(
        name="unequal-endpoints",
        what="2 LLM servers, the second 4x slower to decode (hand loop: round-robin)",
        llm=LLMCostModel(capacity=32, prefill_ms=50, decode_tokens_per_s=3000),
        other_llms=(LLMCostModel(capacity=32, prefill_ms=50, decode_tokens_per_s=750),),
        scorer=ScorerCostModel(text_a_ms=2, text_b_ms=0.05),
        endpoints=2,
        baseline_samples=0,
    ),
    Scenario(
        name="slow-scorer-small-replies",
        what="scorer slower than the generator, 10 candidates a step (batching across samples)",
        llm=LLMCostModel(capacity=64, prefill_ms=20, decode_tokens_per_s=10000),
        scorer=ScorerCostModel(text_a_ms=8, text_b_ms=0.1),
        samples=400,
        keep=10,
        requested=10,
        baseline_samples=0,
    ),
    Scenario(
        name="unequal-samples",
        what="generator-bound, 10 steps with patience 1: samples stop after 2 to 10 steps",
        llm=LLMCostModel(capacity=32, prefill_ms=50, decode_tokens_per_s=3000),
        scorer=ScorerCostModel(text_a_ms=2, text_b_ms=0.05),
        steps=10,
        patience=1,
        baseline_samples=0,
    ),
)


def quick(scenario: Scenario) -> Scenario:
    """A small version of `scenario` (for --quick and the smoke test)."""
    return dataclasses.replace(
        scenario,
        samples=min(scenario.samples, 500 if scenario.scale else 32),
        steps=2,
        pool=min(scenario.pool, 300),
        baseline_samples=scenario.baseline_samples and 16,
        hand_samples=scenario.hand_samples and min(scenario.hand_samples, 200),
    )


def make_pool(size: int, seed: int = 1) -> list[str]:
    """`size` distinct synthetic captions."""
    pool: dict[str, None] = {}
    batch = 0
    while len(pool) < size:
        for line in candidate_lines(f"pool {batch}", max(size, 64), seed):
            pool.setdefault(line)
        batch += 1
    return list(pool)[:size]


def make_targets(count: int, seed: int = 2) -> list[tuple[str, bytes]]:
    """(sample id, target bytes): a target is a caption-like description of "the image"."""
    lines = candidate_lines("targets", count, seed)
    return [(f"s{i:05d}", line.encode()) for i, line in enumerate(lines)]


class MemoryReader:
    """`MediaReader` over in-memory targets: the source is the sample id."""

    def __init__(self, targets: dict[str, bytes]) -> None:
        self._targets = targets

    async def read(self, source: str) -> bytes:
        """The target bytes of `source`."""
        return self._targets[source]
