"""Benchmark harness: synthetic-latency load-model servers, the published loop, the engine.

The servers are real over the wire (HTTP for the LLM, Triton gRPC for the scorer) and
synthetic in latency: their reply time follows a stated cost model, and they account for
their own busy time, so a run's lower bound on wall time comes from the servers themselves.

    python -m benchmarks.llm_server ...     the load-model OpenAI-compatible server
    python -m benchmarks.run [--quick]      every scenario, a table and one JSON per scenario
"""

from __future__ import annotations

__all__: list[str] = []
