"""The scheduler over in-process fakes: many samples, failure isolation, resume."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import IMAGE, FakeGenerator
from fakes import fake_scheduler as scheduler
from structlog.testing import capture_logs

from mils.engine.config import LoopConfig, RetryConfig
from mils.engine.errors import ConfigError, EndpointUnavailable, InvalidResponse, RequestRefused
from mils.engine.refusals import DEFAULT_REFUSALS_TO_STOP
from mils.engine.retry import Retrier
from mils.engine.scheduler import Sample
from mils.engine.store import RunStore
from mils.tasks import get_task

POOL = [f"pool caption {i}" for i in range(20)]


_opened: list[RunStore] = []


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    """A test that fails before its `store.close()` leaves no open store (and lock file)
    behind to be reported as unraisable in whichever test runs next."""
    yield
    while _opened:
        _opened.pop().close()


def open_store(path: Path, samples: list[Sample]) -> RunStore:
    store = RunStore.create(path, {}, POOL)
    store.add_samples([(s.id, s.inputs) for s in samples])
    _opened.append(store)
    return store


async def test_every_sample_runs_every_step(tmp_path: Path) -> None:
    """Ten samples, three steps each: thirty committed steps, one generator call per step."""
    samples = [Sample(f"s{i}", {"image": f"img{i}"}) for i in range(10)]
    store = open_store(tmp_path / "run", samples)
    gen = FakeGenerator()
    summary = await scheduler(store, gen).run(samples, {IMAGE: POOL})
    assert (summary.done, summary.failed, summary.steps) == (10, 0, 30)
    assert gen.calls == 30
    assert all(row.status == "done" and row.steps_done == 3 for row in store.samples())
    # The prompt shows scored lines at three decimals.
    assert any(line[:5].count(".") == 1 and ": " in line for line in gen.prompts[0].splitlines())
    store.close()


async def test_initial_pool_is_embedded_once_per_run(tmp_path: Path) -> None:
    """Pool texts are embedded once whatever the number of samples."""
    samples = [Sample(f"s{i}", {"image": f"img{i}"}) for i in range(6)]
    store = open_store(tmp_path / "run", samples)
    sched = scheduler(store, FakeGenerator(lambda n: "1. shared caption\n2. another one"))
    summary = await sched.run(samples, {IMAGE: POOL})
    # 20 pool texts + the 2 distinct generated texts, each once.
    assert summary.texts_evaluated == 22
    assert summary.candidates_scored == 12  # both new texts scored for each sample, once
    store.close()


async def test_bad_sample_fails_alone_with_its_reason(tmp_path: Path) -> None:
    """An unreadable input fails its sample; the others finish."""
    samples = [
        Sample("good1", {"image": "img1"}),
        Sample("bad", {"image": "bad.png"}),
        Sample("good2", {"image": "img2"}),
    ]
    store = open_store(tmp_path / "run", samples)
    summary = await scheduler(store, FakeGenerator()).run(samples, {IMAGE: POOL})
    assert (summary.done, summary.failed) == (2, 1)
    assert summary.failures == [("bad", "bad.png: not an image")]
    rows = {row.id: row for row in store.samples()}
    assert rows["bad"].status == "failed" and "not an image" in (rows["bad"].error or "")
    store.close()


async def test_reply_without_candidates_is_logged_and_the_loop_goes_on(tmp_path: Path) -> None:
    """A chatty reply with no list is a step with zero new candidates, not a failure."""
    samples = [Sample("s", {"image": "img"})]
    store = open_store(tmp_path / "run", samples)
    with capture_logs() as logs:
        summary = await scheduler(store, FakeGenerator(lambda n: "I like this image!")).run(
            samples, {IMAGE: POOL}
        )
    assert (summary.done, summary.steps, summary.candidates_scored) == (1, 3, 0)
    assert summary.replies_without_candidates == 3
    assert sum(e["event"] == "no_candidates_parsed" for e in logs) == 3
    store.close()


async def test_generator_down_fails_samples_with_the_url(tmp_path: Path) -> None:
    """Exhausted retries fail each sample with a message naming the endpoint."""

    class Down(FakeGenerator):
        async def complete(self, messages):  # type: ignore[no-untyped-def]
            raise EndpointUnavailable("connection refused", endpoint=self.endpoint, kind="connect")

    samples = [Sample("a", {"image": "img1"}), Sample("b", {"image": "img2"})]
    store = open_store(tmp_path / "run", samples)
    summary = await scheduler(store, Down()).run(samples, {IMAGE: POOL})
    assert summary.failed == 2 and summary.faults == {"connect": 4}
    assert all("fake://generator" in reason for _, reason in summary.failures)
    store.close()


async def test_resume_continues_from_the_last_committed_step(tmp_path: Path) -> None:
    """A run cancelled mid-way resumes with no step lost or repeated."""
    samples = [Sample(f"s{i}", {"image": f"img{i}"}) for i in range(4)]
    store = open_store(tmp_path / "run", samples)

    class Slow(FakeGenerator):
        async def complete(self, messages):  # type: ignore[no-untyped-def]
            await asyncio.sleep(0.01)
            return await super().complete(messages)

    task = asyncio.ensure_future(
        scheduler(store, Slow(), steps=6, in_flight=2).run(samples, {IMAGE: POOL})
    )
    while not task.done() and sum(row.steps_done for row in store.samples()) < 5:
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    partial = {row.id: row.steps_done for row in store.samples()}
    assert 0 < sum(partial.values()) < 24
    summary = await scheduler(store, Slow(), steps=6).run(samples, {IMAGE: POOL})
    assert summary.steps == 24 - sum(partial.values())
    db_steps = store._db.execute(
        "SELECT sample_id, COUNT(*), MIN(step), MAX(step) FROM steps GROUP BY sample_id"
    ).fetchall()
    assert sorted(db_steps) == [(f"s{i}", 7, 0, 6) for i in range(4)]  # step 0: the pool
    store.close()


async def test_unscorable_texts_are_dropped_alone(tmp_path: Path) -> None:
    """A NaN embedding drops that candidate (and that pool text); the sample carries on."""
    samples = [Sample("s", {"image": "img"})]
    store = RunStore.create(tmp_path / "run", {}, [*POOL, "pool NaN text"])
    store.add_samples([("s", {"image": "img"})])
    gen = FakeGenerator(lambda n: f"1. good {n}\n2. NaN bad {n}")
    with capture_logs() as logs:
        summary = await scheduler(store, gen).run(samples, {IMAGE: [*POOL, "pool NaN text"]})
    assert (summary.done, summary.failed, summary.candidates_scored) == (1, 0, 3)
    assert summary.texts_unscorable == 4  # the pool text and three generated ones
    events = [e["event"] for e in logs]
    assert "pool_texts_dropped" in events and events.count("candidates_unscorable") == 3
    assert all("NaN" not in t for t in store.progress("s").scored_texts)
    store.close()


async def test_echoed_prompt_yields_no_candidate(tmp_path: Path) -> None:
    """An LLM that parrots the prompt yields no candidate: every scored line it repeats was
    shown, and the template describes the list format in words, not numbered examples."""
    samples = [Sample("s", {"image": "img"})]
    store = open_store(tmp_path / "run", samples)
    gen = FakeGenerator()
    gen._reply = lambda n: gen.prompts[-1]  # the user message, verbatim
    summary = await scheduler(store, gen).run(samples, {IMAGE: POOL})
    assert (summary.done, summary.steps, summary.candidates_scored) == (1, 3, 0)
    store.close()


async def test_a_reused_scheduler_counts_each_run_alone(tmp_path: Path) -> None:
    """A second `run` on the same scheduler reports only its own work."""
    first = [Sample("a", {"image": "img1"})]
    second = [Sample("b", {"image": "img2"})]
    store = open_store(tmp_path / "run", [*first, *second])
    sched = scheduler(store, FakeGenerator())
    one = await sched.run(first, {IMAGE: POOL})
    two = await sched.run([*first, *second], {IMAGE: POOL})
    assert (one.done, one.steps, one.generator_requests) == (1, 3, 3)
    assert (two.done, two.skipped, two.steps, two.generator_requests) == (2, 1, 3, 3)
    assert two.texts_evaluated == 9  # its 9 new texts; the pool is cached from the first run
    store.close()


async def test_every_extra_line_is_scored(tmp_path: Path) -> None:
    """A reply with 13 lines for 10 asked has all 13 scored (the published loop does)."""
    samples = [Sample("s", {"image": "img"})]
    store = open_store(tmp_path / "run", samples)
    gen = FakeGenerator(lambda n: "\n".join(f"{i}. caption {n}-{i}" for i in range(1, 14)))
    sched = scheduler(store, gen, loop=LoopConfig(steps=2, keep=5, requested=10))
    summary = await sched.run(samples, {IMAGE: POOL})
    assert summary.candidates_scored == 26 and summary.candidates_over_limit == 0
    store.close()


async def test_a_truncated_reply_loses_only_its_cut_off_line(tmp_path: Path) -> None:
    """finish_reason "length": the partial last line is not scored; the count says so."""
    samples = [Sample("s", {"image": "img"})]
    store = open_store(tmp_path / "run", samples)
    gen = FakeGenerator(lambda n: f"1. caption {n}-a\n2. caption {n}-b\n3. capt")
    gen.truncated = True
    with capture_logs() as logs:
        summary = await scheduler(store, gen).run(samples, {IMAGE: POOL})
    assert (summary.replies_truncated, summary.candidates_scored) == (3, 6)
    assert not any(t.endswith("capt") for t in store.progress("s").scored_texts)
    assert sum(e["event"] == "reply_truncated" for e in logs) == 3
    store.close()


async def test_step_zero_records_the_initial_pool_and_resume_skips_it(tmp_path: Path) -> None:
    """results have step 0 (the best of the pool); a sample that failed right after it
    runs again from the pool, not from step 0's record, which is written once."""
    samples = [Sample("s", {"image": "img"})]
    store = open_store(tmp_path / "run", samples)

    class Refuses(FakeGenerator):
        async def complete(self, messages):  # type: ignore[no-untyped-def]
            raise InvalidResponse("refused", endpoint=self.endpoint)

    assert (await scheduler(store, Refuses()).run(samples, {IMAGE: POOL})).failed == 1
    zero = store.result("s")["trajectory"]
    assert [t["step"] for t in zero] == [0] and zero[0]["new_candidates"] == 0
    best_of_pool = zero[0]["best_score"]
    summary = await scheduler(store, FakeGenerator()).run(samples, {IMAGE: POOL})
    trajectory = store.result("s")["trajectory"]
    assert summary.steps == 3 and [t["step"] for t in trajectory] == [0, 1, 2, 3]
    assert trajectory[0]["best_score"] == best_of_pool
    assert all(t["best_score"] >= best_of_pool for t in trajectory)
    store.close()


async def test_completion_mode_continues_the_scored_list(tmp_path: Path) -> None:
    """With a generator in the "completion" prompting mode each step sends a continuation
    prompt, and the continued lines (the first one without its score) are the candidates."""
    samples = [Sample("s", {"image": "img"})]
    store = open_store(tmp_path / "run", samples)
    gen = FakeGenerator(lambda n: f" caption {n}-a\n0.99: caption {n}-b")
    gen.prompt_mode = "completion"
    summary = await scheduler(store, gen).run(samples, {IMAGE: POOL})
    assert (summary.steps, summary.candidates_scored) == (3, 6)
    header, *listed, start = gen.prompts[0].splitlines()
    assert header == get_task("image-caption").completion_header
    assert len(listed) == 5 and start.endswith(":") and float(start[:-1]) > float(listed[-1][:5])
    assert {"caption 1-a", "caption 1-b"} <= set(store.progress("s").scored_texts)
    store.close()


class RefusesAll(FakeGenerator):
    """Refuses every request alike, as a proxy does for a model name it does not serve."""

    async def complete(self, messages):  # type: ignore[no-untyped-def]
        self.calls += 1
        await asyncio.sleep(0)
        raise RequestRefused(
            "refused (HTTP 400): Invalid model name passed in model=nope",
            endpoint=self.endpoint,
            status=400,
            detail="Invalid model name passed in model=nope",
        )


@pytest.mark.parametrize("in_flight", [1, 4])
async def test_a_generator_refusing_every_first_request_stops_the_run(
    tmp_path: Path, in_flight: int
) -> None:
    """The same refusal for the first requests, none served, is a setting: the run stops
    with a ConfigError quoting the server after a few requests, and no sample is marked
    failed (a window smaller than the threshold included), so a resume runs them all."""
    samples = [Sample(f"s{i}", {"image": f"img{i}"}) for i in range(40)]
    store = open_store(tmp_path / "run", samples)
    gen = RefusesAll()
    with pytest.raises(ExceptionGroup) as caught:
        await scheduler(store, gen, in_flight=in_flight).run(samples, {IMAGE: POOL})
    error = _leaf(caught.value)
    assert isinstance(error, ConfigError)
    assert "(HTTP 400: Invalid model name passed in model=nope)" in str(error)
    # Each held refusal frees its window slot for another sample, whose request may decide:
    # at most threshold - 1 requests beyond the window start before the verdict.
    assert gen.calls <= in_flight + DEFAULT_REFUSALS_TO_STOP - 1
    assert not [row for row in store.samples() if row.status == "failed"]
    summary = await scheduler(store, FakeGenerator()).run(samples, {IMAGE: POOL})
    assert (summary.done, summary.failed) == (40, 0)
    store.close()


async def test_refusals_after_a_served_request_fail_their_samples_alone(tmp_path: Path) -> None:
    """Once the endpoint has served, a refused request is that sample's problem: it fails
    alone and the run goes on."""
    samples = [Sample(f"s{i}", {"image": f"img{i}"}) for i in range(6)]
    store = open_store(tmp_path / "run", samples)

    class RefusesSome(FakeGenerator):
        async def complete(self, messages):  # type: ignore[no-untyped-def]
            if self.calls >= 1 and self.calls % 2:
                self.calls += 1
                raise RequestRefused("refused", endpoint=self.endpoint, status=400, detail="no")
            return await super().complete(messages)

    summary = await scheduler(store, RefusesSome(), in_flight=1).run(samples, {IMAGE: POOL})
    assert summary.failed >= 3 and summary.done + summary.failed == 6
    assert all("refused" in reason for _, reason in summary.failures)
    store.close()


async def test_a_run_smaller_than_the_threshold_fails_its_refused_samples(
    tmp_path: Path,
) -> None:
    """Two samples, both refused: nothing else can decide, so they fail alone (no hang)."""
    samples = [Sample("a", {"image": "img1"}), Sample("b", {"image": "img2"})]
    store = open_store(tmp_path / "run", samples)
    summary = await asyncio.wait_for(scheduler(store, RefusesAll()).run(samples, {IMAGE: POOL}), 10)
    assert (summary.done, summary.failed) == (0, 2)
    store.close()


async def test_a_rate_limit_costs_no_retry_and_is_counted(tmp_path: Path) -> None:
    """A 429 pauses the endpoint and the request goes again: with one attempt per call
    every sample still finishes; the summary counts the 429s, not as retries."""
    samples = [Sample(f"s{i}", {"image": f"img{i}"}) for i in range(5)]
    store = open_store(tmp_path / "run", samples)

    class LimitedOnce(FakeGenerator):
        async def complete(self, messages):  # type: ignore[no-untyped-def]
            if self.calls == 0:
                self.calls += 1
                raise EndpointUnavailable(
                    "slow down", endpoint=self.endpoint, kind="429", retry_after=0.05
                )
            return await super().complete(messages)

    sched = scheduler(store, LimitedOnce())
    sched._retrier = Retrier(RetryConfig(attempts=1))
    summary = await sched.run(samples, {IMAGE: POOL})
    assert (summary.done, summary.failed, summary.faults) == (5, 0, {"429": 1})
    assert sched.statistics().retries == 0
    store.close()


def _leaf(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group
