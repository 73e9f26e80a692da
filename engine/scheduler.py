"""Runs many samples through the MILS loop in one event loop.

Each sample is a task in a `TaskGroup`; a window of `samples_in_flight` bounds how many run
at once, so memory follows the window and not the dataset. While one sample waits on the
generator, others score: generation and scoring overlap across samples. Generator calls go
through a per-endpoint limiter, values through the run's `Objective`, and every endpoint call
through the one retry loop. Each finished step is committed to the store before the sample
plans its next one; the steps that finish together are committed together
(`mils.engine.commits`).

One run may hold samples of several tasks (images, videos and sounds of one folder): each
`Route` is one task's prompt, loop, objective and readers, and each sample names its route.
Every route has its own objective, so nothing one scorer computed (a cached text embedding)
serves another; the generator endpoints, their limits and the budget are the run's, shared
by every route.

A sample fails alone: input errors, exhausted retries and unusable replies are recorded as
its reason and the run goes on. Configuration and store errors stop the run, and so does a
generator endpoint that refuses its first requests alike (`mils.engine.refusals`): until it
has served one, a sample it refused waits for that verdict instead of failing. A rate limit
pauses its endpoint for every sample (`mils.engine.router`). One sample can be cancelled
(`cancel_sample`); its committed steps stay and a resume continues it.

Every generator request's tokens are counted (`mils.engine.usage`) and stored with its step.
A `Budget` limit stops the run cleanly: once reached, no sample sends another request;
requests in flight finish and commit, and the samples not done stay resumable.

While a run goes on, the garbage collector skips the objects that existed before it and
collects young objects less often (`mils.engine._collector`): at thousands of requests a
second it would otherwise take about a quarter of the engine's CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import structlog

from mils.engine._collector import collector_tuned
from mils.engine.commits import GroupCommit
from mils.engine.config import Budget, ConcurrencyConfig, LoopConfig, RateLimits
from mils.engine.errors import ConfigError, InputError, MilsError, RequestRefused, StoreError
from mils.engine.limiter import LimiterStatistics
from mils.engine.logs import get_logger
from mils.engine.objectives import Evaluation, Objective, ObjectiveStatistics
from mils.engine.observe import RequestObserver
from mils.engine.optimizer import SampleOptimizer, Scored, StepPlan, rank
from mils.engine.prompt import build_continuation, build_messages, parse_reply
from mils.engine.protocols import Generator, MediaReader, Reply, TaskSpec
from mils.engine.refusals import RefusalGate
from mils.engine.retry import Retrier
from mils.engine.router import GeneratorRouter
from mils.engine.store import CANCELLED, DONE, FAILED, PENDING, RunStore, SampleProgress
from mils.engine.usage import Usage, budget_reached, reply_usage

__all__ = [
    "Event",
    "Route",
    "RunStatistics",
    "RunSummary",
    "Sample",
    "SampleFinished",
    "Scheduler",
    "StepCommitted",
]

log = get_logger(__name__)

_NOTHING_COMMITTED = SampleProgress(last=None, scored_texts=[], best_history=[])


@dataclass(frozen=True, slots=True)
class Route:
    """How the samples of one task run: the task's prompt, its loop, its objective (with
    its own scorer and cache) and one reader per input name of the task."""

    task: TaskSpec
    loop: LoopConfig
    objective: Objective
    readers: Mapping[str, MediaReader]


@dataclass(frozen=True, slots=True)
class Sample:
    """One target of the loop: its id, its named inputs (input name -> source) and the name
    of its route ("" when the run has one)."""

    id: str
    inputs: Mapping[str, str]
    task: str = ""

    @property
    def source(self) -> str:
        """The inputs as one line, for messages: the source itself when there is one."""
        if len(self.inputs) == 1:
            return next(iter(self.inputs.values()))
        return ", ".join(f"{name}={source}" for name, source in self.inputs.items())


@dataclass(frozen=True, slots=True)
class StepCommitted:
    """Progress event: a sample committed a step."""

    sample_id: str
    step: int
    best_text: str
    best_score: float
    new_candidates: int


@dataclass(frozen=True, slots=True)
class SampleFinished:
    """Progress event: a sample ended (status "done", "failed" or "cancelled")."""

    sample_id: str
    status: str
    error: str | None = None


Event = StepCommitted | SampleFinished


@dataclass(frozen=True, slots=True)
class RunStatistics:
    """A snapshot of a run in progress, for a caller's own display."""

    total: int
    """Samples this run works on (already finished ones not counted)."""
    done: int
    failed: int
    cancelled: int
    steps: int
    elapsed_s: float
    generator_in_flight: int
    generator_limit: int
    generator_waiting: int
    score_in_flight: int
    score_queued: int
    endpoints: tuple[LimiterStatistics, ...] = ()
    """Per generator endpoint: requests in flight, limit, waiting, latency."""
    faults: dict[str, int] = field(default_factory=dict)
    """Endpoint faults seen so far in this run, by kind ("429": rate-limited requests)."""
    retries: int = 0
    """Endpoint calls retried after a transient fault."""
    candidates_scored: int = 0
    """New candidates scored and committed with their steps."""
    texts_evaluated: int = 0
    """Texts sent to the scorer (or renderer)."""
    cache_hits: int = 0
    """Texts whose embedding came from the run's cache (or was already on its way)."""
    cache_misses: int = 0
    """Texts the cache did not hold, queued for the scorer."""
    usage: Usage = field(default_factory=Usage)
    """Generator requests answered in this session and their tokens."""
    cost: float | None = None
    """What `usage` cost at the run's `Budget` prices; None when unpriced."""

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def paused_until(self) -> float | None:
        """While rate limits pause every generator endpoint: the wall-clock time
        (`time.time()`) the first takes requests again; else None."""
        pauses = [e.paused_until for e in self.endpoints]
        if not pauses or None in pauses:
            return None
        return min(p for p in pauses if p is not None)


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What a run (or a resume) did."""

    samples: int
    done: int
    failed: int
    skipped: int
    """Already done before this run started (resume)."""
    steps: int
    wall_s: float
    candidates_scored: int
    texts_evaluated: int
    """Texts sent to the scorer: each unique text once per run with the embedding objective."""
    generator_requests: int
    replies_without_candidates: int
    """Generator replies that held no new candidate (unparseable, or only texts already
    shown or scored); the step still counts."""
    candidates_too_long: int
    """Reply lines longer than the task's `max_candidate_chars`: not candidates."""
    candidates_over_limit: int
    """New candidates past the loop's `candidate_limit` in a reply: not scored."""
    replies_truncated: int
    """Replies cut off by the generator's token limit (their last, partial line dropped)."""
    texts_unscorable: int
    """Texts the scorer could not score (NaN, wrong shape, rejected): dropped alone."""
    faults: dict[str, int]
    cancelled: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    """Generator requests of this session's committed steps and their tokens."""
    cost: float | None = None
    """What `usage` cost at the run's `Budget` prices; None when unpriced."""
    run_usage: Usage = field(default_factory=Usage)
    """The same over the whole run directory, earlier sessions included."""
    run_cost: float | None = None
    budget_reached: str | None = None
    """Which `Budget` limit stopped the run, and what was spent; None if none did. The
    samples it stopped are counted as cancelled and stay resumable."""


class _BudgetReached(Exception):
    """A sample may not send its next request: the run's budget is spent."""


@dataclass(slots=True)
class _Counts:
    """What one `run` call has done so far (a fresh one per run)."""

    total: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    steps: int = 0
    candidates_scored: int = 0
    empty_replies: int = 0
    too_long: int = 0
    over_limit: int = 0
    truncated: int = 0
    usage: Usage = field(default_factory=Usage)
    """Committed steps' generator usage."""
    answered: Usage = field(default_factory=Usage)
    """Every answered request's usage (committed or not): what a budget counts."""
    sending: int = 0
    """Generator requests sent and not yet answered."""
    budget_reached: str | None = None
    started: float = field(default_factory=time.monotonic)
    faults_before: Counter[str] = field(default_factory=Counter)
    retries_before: int = 0
    objective_before: ObjectiveStatistics = field(
        default_factory=lambda: ObjectiveStatistics(
            texts_evaluated=0, unscorable=0, in_flight=0, queued=0
        )
    )
    failures: list[tuple[str, str]] = field(default_factory=list)


class Scheduler:
    """Wires the pure loop to the endpoints, the objective and the store.

    Args:
        routes: one `Route` per task of the run, by name (the name samples give as
            `Sample.task`); each route's objective is entered by `run`.
        concurrency: samples in flight and generator limits (shared by every route).
        retrier: the run's retry loop (shared with the objectives).
        generator: one or several generator endpoints (shared by every route).
        store: the run directory.
        on_event: called (on the event loop) for every committed step and finished sample.
        on_request: called (on the event loop) after every generator request
            (`mils.engine.observe`); the objective takes its own for the scorer.
        budget: token prices and the spend at which the run stops (none by default).
    """

    def __init__(
        self,
        *,
        routes: Mapping[str, Route],
        concurrency: ConcurrencyConfig,
        retrier: Retrier,
        generator: Generator | Sequence[Generator],
        store: RunStore,
        on_event: Callable[[Event], None] | None = None,
        on_request: RequestObserver | None = None,
        budget: Budget | None = None,
    ) -> None:
        if not routes:
            raise ConfigError("no routes: pass at least one task's `Route`")
        self._routes = dict(routes)
        self._budget = budget or Budget()
        self._spent_before = Usage()
        """The run directory's usage from earlier sessions (read when `run` starts)."""
        self._concurrency = concurrency
        self._store = store
        self._commits = GroupCommit(store.commit_steps)
        self._on_event = on_event or (lambda event: None)
        self._retrier = retrier
        generators = [generator] if not isinstance(generator, Sequence) else list(generator)
        self._generator_names = {g.endpoint for g in generators}
        self._refusals = RefusalGate()
        self._router = GeneratorRouter(
            generators,
            limit=concurrency.generator_in_flight,
            cooldown_s=concurrency.generator_cooldown_s,
            max_rate_limit_wait_s=retrier.config.max_rate_limit_wait_s,
            on_request=on_request,
            on_served=self._refusals.served,
        )
        self._running = 0
        """Sample tasks not yet ended."""
        self._launching = False
        """Whether `_run_all` may still start samples."""
        self._counts = _Counts()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancel_requested: set[str] = set()
        self._stopping = False
        self._pool_ready: dict[str, asyncio.Task[None]] = {}
        self._untouched: set[str] = set()
        """Samples with nothing committed when the run started: no progress to read."""
        self._window: asyncio.Semaphore | None = None
        """Slots for samples in flight, while `_run_all` runs."""

    async def run(
        self, samples: Sequence[Sample], pools: Mapping[str, Sequence[str]]
    ) -> RunSummary:
        """Run every sample not yet done; return what happened.

        Args:
            samples: the run's samples, each naming its route.
            pools: the initial pool of each route, by route name; a route with no sample
                left to do does not score its pool.

        Raises:
            ConfigError: a sample names no route of the run, or a route to run has no pool.
        """
        rows = self._store.samples()
        finished = {row.id for row in rows if row.status == DONE}
        # A sample never started has nothing committed to read back.
        self._untouched = {row.id for row in rows if row.status == PENDING}
        todo = [sample for sample in samples if sample.id not in finished]
        active = {self._route_name(sample) for sample in todo}
        if unpooled := sorted(active - set(pools)):
            raise ConfigError(f"no initial pool for task {unpooled[0]!r}; pass one in `pools`")
        retry_before = self._retrier.statistics()
        stats_before = self._objective_statistics()
        self._counts = counts = _Counts(
            total=len(todo),
            faults_before=self._faults(),
            retries_before=retry_before.retries,
            objective_before=stats_before,
        )
        self._cancel_requested.clear()
        self._stopping = False
        self._spent_before = await asyncio.to_thread(self._store.usage)
        if todo and (reached := self._budget_check()) is not None:
            counts.budget_reached = reached  # spent before this session: start nothing
            self._stopping = True
            log.warning("budget_reached", reason=reached)
        requests_before = self._generator_requests()
        log.info(
            "run_started",
            samples=len(samples),
            todo=len(todo),
            pool=sum(len(pools[name]) for name in active),
            **({"tasks": sorted(active)} if len(self._routes) > 1 else {}),
        )
        async with contextlib.AsyncExitStack() as objectives:
            objectives.enter_context(collector_tuned())
            for route in self._routes.values():
                await objectives.enter_async_context(route.objective)
            try:
                async with asyncio.TaskGroup() as group:
                    self._pool_ready = {}
                    if not self._stopping:  # samples prepare targets while the pools score
                        for name in sorted(active):
                            objective = self._routes[name].objective
                            self._pool_ready[name] = group.create_task(
                                objective.set_pool(pools[name]), name=f"initial-pool-{name}"
                            )
                    await self._run_all(todo)
            finally:  # steps of cancelled samples may still be being written
                await self._commits.drain()
        stats = self._objective_statistics()
        summary = RunSummary(
            samples=len(samples),
            done=counts.done + len(finished),
            failed=counts.failed,
            skipped=len(finished),
            steps=counts.steps,
            wall_s=time.monotonic() - counts.started,
            candidates_scored=counts.candidates_scored,
            texts_evaluated=stats.texts_evaluated - stats_before.texts_evaluated,
            generator_requests=self._generator_requests() - requests_before,
            replies_without_candidates=counts.empty_replies,
            candidates_too_long=counts.too_long,
            candidates_over_limit=counts.over_limit,
            replies_truncated=counts.truncated,
            texts_unscorable=stats.unscorable - stats_before.unscorable,
            faults=dict(self._faults() - counts.faults_before),
            cancelled=counts.cancelled,
            failures=list(counts.failures),
            usage=counts.usage,
            cost=self._cost(counts.usage),
            run_usage=self._spent_before + counts.usage,
            run_cost=self._cost(self._spent_before + counts.usage),
            budget_reached=counts.budget_reached,
        )
        log.info("run_finished", **{k: v for k, v in asdict(summary).items() if k != "failures"})
        return summary

    def cancel_sample(self, sample_id: str) -> bool:
        """Stop one sample of the running run; its committed steps are kept.

        Returns False when the sample is not part of the run or has already ended.
        """
        task = self._tasks.get(sample_id)
        if task is not None and task.done():
            return False
        self._cancel_requested.add(sample_id)
        if task is not None:
            task.cancel()
        return True

    def cancel_all(self) -> None:
        """Stop every sample: running ones are cancelled, waiting ones never start.

        `run` then returns its summary, with these samples counted as cancelled.
        """
        self._stopping = True
        for sample_id in list(self._tasks):
            self.cancel_sample(sample_id)
        for pool_ready in self._pool_ready.values():
            pool_ready.cancel()

    def statistics(self) -> RunStatistics:
        gen = self._router.statistics()
        obj = self._objective_statistics()
        counts = self._counts
        retry = self._retrier.statistics()
        faults = self._faults() - counts.faults_before
        before = counts.objective_before
        return RunStatistics(
            total=counts.total,
            done=counts.done,
            failed=counts.failed,
            cancelled=counts.cancelled,
            steps=counts.steps,
            elapsed_s=time.monotonic() - counts.started,
            generator_in_flight=sum(stat.in_flight for stat in gen),
            generator_limit=sum(stat.limit for stat in gen),
            generator_waiting=sum(stat.waiting for stat in gen),
            score_in_flight=obj.in_flight,
            score_queued=obj.queued,
            endpoints=tuple(gen),
            faults=dict(faults),
            retries=retry.retries - counts.retries_before,
            candidates_scored=counts.candidates_scored,
            texts_evaluated=obj.texts_evaluated - before.texts_evaluated,
            cache_hits=obj.cache_hits - before.cache_hits,
            cache_misses=obj.cache_misses - before.cache_misses,
            usage=counts.answered,
            cost=self._cost(counts.answered),
        )

    def _objective_statistics(self) -> ObjectiveStatistics:
        """Every route's objective statistics, summed."""
        each = [route.objective.statistics() for route in self._routes.values()]
        return ObjectiveStatistics(
            texts_evaluated=sum(s.texts_evaluated for s in each),
            unscorable=sum(s.unscorable for s in each),
            in_flight=sum(s.in_flight for s in each),
            queued=sum(s.queued for s in each),
            cache_hits=sum(s.cache_hits for s in each),
            cache_misses=sum(s.cache_misses for s in each),
        )

    def _route_name(self, sample: Sample) -> str:
        """The name of the route `sample` runs on.

        Raises:
            ConfigError: it names none of the run's routes (or none when there are several).
        """
        if sample.task in self._routes:
            return sample.task
        if not sample.task and len(self._routes) == 1:
            return next(iter(self._routes))
        raise ConfigError(
            f"sample {sample.id!r} is for task {sample.task or '(none)'!r}, which this run "
            f"does not run; its tasks are {', '.join(sorted(self._routes))}"
        )

    def _cost(self, usage: Usage) -> float | None:
        return self._budget.cost(usage.prompt_tokens, usage.completion_tokens)

    def _budget_check(self) -> str | None:
        """Which budget limit the run has reached, counting requests in flight; or None."""
        counts = self._counts
        spent = self._spent_before + counts.answered
        return budget_reached(self._budget, spent, sending=counts.sending)

    def _generator_requests(self) -> int:
        return sum(stat.completed for stat in self._router.statistics())

    def _faults(self) -> Counter[str]:
        """Endpoint faults by kind: those the retry loop saw, and the generators' 429s
        (handled by pausing the endpoint, not by retrying)."""
        faults = Counter(self._retrier.statistics().faults)
        faults["429"] += sum(stat.rate_limited for stat in self._router.statistics())
        return +faults  # drops the zero

    def reshare(
        self,
        concurrency: ConcurrencyConfig,
        rates: Mapping[str, RateLimits],
        share: float = 1.0,
        budget: Budget | None = None,
    ) -> None:
        """Take a share of the samples window and of the endpoints: a fixed generator
        limit, the configured rates of the endpoints `rates` names, and `share` of the
        limits the endpoints' replies state; and a new `budget` (None: keep it; a sample
        the old one stopped stays stopped). On Ray, each actor takes 1/N, and the actors
        still running take over the share of one whose shard has ended. The window only
        grows."""
        if budget is not None:
            self._budget = budget
        grow = concurrency.samples_in_flight - self._concurrency.samples_in_flight
        if grow > 0:
            self._concurrency = replace(
                self._concurrency, samples_in_flight=concurrency.samples_in_flight
            )
            if self._window is not None:
                for _ in range(grow):
                    self._window.release()
        self._router.reshare(concurrency.generator_in_flight, rates, share)

    def pause(self, endpoint: str, seconds: float) -> None:
        """Pause a generator endpoint for `seconds` (`GeneratorRouter.pause`)."""
        self._router.pause(endpoint, seconds)

    async def _run_all(self, samples: Sequence[Sample]) -> None:
        window = self._window = asyncio.Semaphore(self._concurrency.samples_in_flight)
        self._tasks = {}
        self._launching, self._running = True, 0
        async with asyncio.TaskGroup() as group:
            for sample in samples:
                if not self._stopping:
                    await window.acquire()  # backpressure: no task exists beyond the window
                if self._stopping or sample.id in self._cancel_requested:
                    if not self._stopping:
                        window.release()
                    self._ended(sample, CANCELLED)
                    continue
                self._running += 1
                self._tasks[sample.id] = group.create_task(
                    self._guarded(sample, window), name=sample.id
                )
            self._launching = False
            self._settle_if_stuck()

    def _ended(self, sample: Sample, status: str, error: str | None = None) -> None:
        counts = self._counts
        if status == DONE:
            counts.done += 1
        elif status == FAILED:
            counts.failed += 1
            counts.failures.append((sample.id, error or ""))
        else:
            counts.cancelled += 1
        self._on_event(SampleFinished(sample.id, status, error))

    async def _guarded(self, sample: Sample, window: asyncio.Semaphore) -> None:
        in_window = True
        try:
            task = {"task": sample.task} if sample.task else {}  # a run of several tasks
            with structlog.contextvars.bound_contextvars(sample_id=sample.id, **task):
                try:
                    await self._run_sample(sample)
                except RequestRefused as exc:
                    if exc.endpoint not in self._generator_names:
                        raise
                    verdict = self._refusals.hold(exc)  # raises ConfigError: stop the run
                    if verdict is not None:
                        # Held, it makes room for another sample, whose request may decide.
                        window.release()
                        in_window = False
                        self._settle_if_stuck()
                        if (error := await verdict) is not None:
                            raise error from exc
                    raise
            self._ended(sample, DONE)
        except asyncio.CancelledError:
            if sample.id not in self._cancel_requested:
                raise  # the whole run is being cancelled
            log.info("sample_cancelled", sample_id=sample.id)
            self._ended(sample, CANCELLED)
        except _BudgetReached:
            self._ended(sample, CANCELLED)  # its committed steps stay; a resume continues it
        except (ConfigError, StoreError):
            raise  # the whole run cannot go on
        except Exception as exc:  # one bad sample never takes down the run
            reason = str(exc) if isinstance(exc, MilsError) else f"internal error: {exc!r}"
            if sample.source not in reason:
                reason = f"{sample.source}: {reason}"
            if not isinstance(exc, MilsError):
                log.exception("sample_crashed", sample_id=sample.id)
            log.warning("sample_failed", sample_id=sample.id, source=sample.source, error=reason)
            await self._commits.finish(sample.id, error=reason)
            self._ended(sample, FAILED, reason)
        finally:
            if in_window:
                window.release()
            self._running -= 1
            self._settle_if_stuck()

    def _settle_if_stuck(self) -> None:
        """Release held refusals when nothing else can decide on them: every running sample
        is held and none is left to start."""
        held = self._refusals.held
        if held and not self._launching and held >= self._running:
            self._refusals.settle()

    async def _read_inputs(self, sample: Sample, route: Route) -> dict[str, bytes]:
        readers = route.readers
        missing = sorted(set(readers) - set(sample.inputs))
        if missing:
            raise InputError(
                f"sample {sample.id!r} has no input {', '.join(map(repr, missing))}; "
                f"task {route.task.name!r} takes {', '.join(sorted(readers))}",
                source=sample.source,
            )
        return {name: await read.read(sample.inputs[name]) for name, read in readers.items()}

    async def _run_sample(self, sample: Sample) -> None:
        name = self._route_name(sample)
        route = self._routes[name]
        if sample.id in self._untouched:
            committed = _NOTHING_COMMITTED
        else:
            committed = await asyncio.to_thread(self._store.progress, sample.id)
        objective = route.objective
        optimizer = SampleOptimizer(
            sample.id, route.loop, higher_is_better=objective.higher_is_better
        )
        inputs = await self._read_inputs(sample, route)
        context = _text_context(sample, inputs, route.task.text_inputs)
        target: Any = await objective.prepare(inputs)
        await asyncio.shield(self._pool_ready[name])
        # The sample's own texts (a prompt to improve) are candidates beside the pool.
        own = [text for text in dict.fromkeys(context.values()) if text not in objective.pool_texts]
        initial: list[Scored] = []
        recorded: list[tuple[str, Evaluation]] = []
        if committed.last is None:
            initial, recorded = await self._first_candidates(
                objective, target, own, route.loop.window
            )
            if not initial:
                raise InputError(
                    f"nothing to start from: the initial pool is empty and input "
                    f"{', '.join(map(repr, context))} could not be scored by {objective.name} "
                    "(the log's text_unscorable line says why); fix the input",
                    source=sample.source,
                )
        optimizer.restore(
            committed.last,
            initial=initial,
            initial_texts=objective.pool_texts | frozenset(own),
            scored_texts=committed.scored_texts,
            best_history=committed.best_history,
        )
        if committed.last is None:
            record = optimizer.initial_record([(text, e.value) for text, e in recorded])
            details = _details(recorded) if recorded else None
            await self._commits.commit((sample.id, record, details, None))
        while not optimizer.done:
            await self._step(sample.id, route, optimizer, target, context)
        await self._commits.finish(sample.id)

    @staticmethod
    async def _first_candidates(
        objective: Objective, target: Any, own: Sequence[str], window: int | None
    ) -> tuple[list[Scored], list[tuple[str, Evaluation]]]:
        """The sample's initial candidates, ranked: the pool's best `window` (all: None) and
        its own texts; and what step 0 records: its own texts, and the pool's best when it
        is the best of all and its evaluation holds more than a value (a render), so the
        best text has its render."""
        pool = await objective.score_pool(target, limit=window)
        recorded = [
            (text, e)
            for text, e in zip(own, await objective.evaluate(target, own), strict=True)
            if e is not None
        ]
        initial = rank(
            [*pool, *((e.value, text) for text, e in recorded)],
            higher_is_better=objective.higher_is_better,
        )
        best = None
        if pool and initial[0] == pool[0]:  # the pool's best is the sample's
            best = await objective.details(target, pool[0][1])
        if best is not None:  # with the value it ranked by (a batch may differ in the last bit)
            recorded.append((pool[0][1], replace(best, value=pool[0][0])))
        return initial, recorded

    async def _step(
        self,
        sample_id: str,
        route: Route,
        optimizer: SampleOptimizer,
        target: Any,
        context: Mapping[str, str],
    ) -> None:
        """One step: ask, parse, score what is new, commit."""
        plan = optimizer.plan_step()
        reply, usage = await self._ask_within_budget(route, plan, context)
        fresh = self._candidates(route.task, optimizer, plan, reply)
        evaluations = await route.objective.evaluate(target, fresh)
        new = [(text, e) for text, e in zip(fresh, evaluations, strict=True) if e]
        if len(new) < len(fresh):
            log.warning("candidates_unscorable", step=plan.step, dropped=len(fresh) - len(new))
        record = optimizer.commit(plan, [(text, e.value) for text, e in new])
        await self._commits.commit((sample_id, record, _details(new), usage))
        self._counts.usage += usage
        self._counts.candidates_scored += len(new)
        self._counts.steps += 1
        best_score, best_text = record.best
        self._on_event(StepCommitted(sample_id, record.step, best_text, best_score, len(new)))
        log.debug("step_committed", step=record.step, best=round(best_score, 4), new=len(new))

    async def _ask_within_budget(
        self, route: Route, plan: StepPlan, context: Mapping[str, str]
    ) -> tuple[Reply, Usage]:
        """The step's reply and its usage, if the budget allows one more request.

        Raises:
            _BudgetReached: it does not; the run stops launching samples.
        """
        counts = self._counts
        reached = counts.budget_reached or self._budget_check()
        if reached is not None:
            if counts.budget_reached is None:
                counts.budget_reached = reached
                log.warning("budget_reached", reason=reached)
            self._stopping = True
            raise _BudgetReached(reached)
        counts.sending += 1
        try:
            reply, usage = await self._ask(route, plan, context)
        finally:
            counts.sending -= 1
        counts.answered += usage
        return reply, usage

    async def _ask(
        self, route: Route, plan: StepPlan, context: Mapping[str, str]
    ) -> tuple[Reply, Usage]:
        """The generator's reply to this step, in the endpoints' prompting mode, and its
        usage. One attempt per try: a retry may land on another endpoint."""
        direction = route.objective.higher_is_better
        if self._router.prompt_mode == "completion":
            prompt, start = build_continuation(
                route.task, plan.shown, higher_is_better=direction, context=context
            )
            reply = await self._retrier.call(self._router.continue_text, prompt)
            usage = reply_usage(reply, prompt)
            return replace(reply, text=start + reply.text), usage  # the reply continues start
        messages = build_messages(
            route.task,
            plan.shown,
            route.loop.requested,
            higher_is_better=direction,
            context=context,
        )
        reply = await self._retrier.call(self._router.complete, messages)
        return reply, reply_usage(reply, "\n".join(m["content"] for m in messages))

    def _candidates(
        self, task: TaskSpec, optimizer: SampleOptimizer, plan: StepPlan, reply: Reply
    ) -> list[str]:
        """The texts of `reply` worth scoring; what is dropped on the way is counted."""
        counts, text = self._counts, reply.text
        if reply.truncated:  # the line after the last newline was cut off mid-way
            counts.truncated += 1
            text = text[: text.rfind("\n") + 1]
            log.info("reply_truncated", step=plan.step, dropped=reply.text[len(text) :][:80])
        parsed = parse_reply(
            text,
            max_chars=task.max_candidate_chars,
            strip_annotations=task.strip_annotations,
        )
        if parsed.too_long:
            counts.too_long += parsed.too_long
            log.info("candidates_too_long", step=plan.step, dropped=parsed.too_long)
        if not parsed.candidates:
            log.info("no_candidates_parsed", step=plan.step, reply_head=reply.text[:200])
        fresh, over = optimizer.accept(plan, parsed.candidates)
        if over:
            counts.over_limit += over
            log.info("candidates_over_limit", step=plan.step, dropped=over)
        counts.empty_replies += not fresh
        return fresh


def _text_context(
    sample: Sample, inputs: Mapping[str, bytes], names: Sequence[str]
) -> dict[str, str]:
    """The sample's text inputs by name, for the prompts.

    Raises:
        InputError: one is not UTF-8 or holds no text.
    """
    context = {}
    for name in names:
        try:
            text = " ".join(inputs[name].decode("utf-8").split())
        except UnicodeDecodeError as exc:
            raise InputError(
                f"input {name!r} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                "save it as UTF-8",
                source=sample.source,
            ) from None
        if not text:
            raise InputError(f"input {name!r} holds no text; give it one", source=sample.source)
        context[name] = text
    return context


def _details(new: Sequence[tuple[str, Evaluation]]) -> list[Evaluation] | None:
    """The evaluations to store beside the values, or None when they hold nothing more."""
    if all(not e.terms and e.artefact is None for _, e in new):
        return None
    return [e for _, e in new]
