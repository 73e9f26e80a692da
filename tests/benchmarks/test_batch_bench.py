"""Smoke test of the batch-mode benchmark: live and batch rows of one tiny workload, with
the accounting that makes them comparable (no timing asserts)."""

from __future__ import annotations

from benchmarks.batch import QUICK, format_table, run_batch_benchmark


def test_batch_rows_send_one_job_per_step_for_the_same_tokens_at_half_the_cost() -> None:
    """Batch mode sends one job per step holding every sample's request, the server counts
    the same tokens as live mode, and the cost at batch prices is half."""
    report = run_batch_benchmark(QUICK, [0.0])
    live, batch = report["rows"]
    assert live["done"] == batch["done"] == QUICK.samples
    assert (live["jobs"], batch["jobs"]) == (0, QUICK.steps)
    assert batch["lines"] == QUICK.samples * QUICK.steps
    tokens = ("prompt_tokens", "completion_tokens")
    assert [batch[t] for t in tokens] == [live[t] for t in tokens]
    assert abs(batch["cost_vs_live"] - 0.5) < 1e-9
    assert "batch, queue 0 s" in format_table(report)
