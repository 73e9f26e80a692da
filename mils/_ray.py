"""One run's samples on Ray actors: many processes and machines, one run directory.

The process that opens the run (the driver) creates or reopens the run directory as any run
does, then hands its store to a *store actor* placed on the driver's own node: every commit
of every worker goes through that actor, so the run stays one SQLite store that `mils
status`, `mils report` and `mils resume` read as usual. The unfinished samples are dealt
round-robin to `actors` *shard workers*; each runs the same async core as a run in one
process (`Run` over its shard: its own endpoints, limiters, objective and embedding cache,
so the initial pool is embedded once per worker) under a share of the run's limits: a fixed
`samples_in_flight` / `generator_in_flight`, an endpoint's rpm/tpm and what is left of the
budget are divided among the workers; adaptive limits adapt on each worker to the
endpoint's answers (every worker backs off on the same overload signals), and a rate-limit
pause (HTTP 429) one worker meets is shared with the others, seen by the driver within
`POLL_S`: the provider's limit is the account's. As shards end, the workers still running
take over their shares: the limits are divided among fewer, and what an ended shard left of
its budget is divided among the rest.

A worker that dies (its process, or its node) is restarted by Ray and its shard resumes
from each sample's last committed step. Each start of a shard *claims* it from the store
actor, which then refuses commits from earlier incarnations: a step that a dead worker
had in flight is done again by its successor and committed exactly once. The claim also
gives the shard's share as it stands and what its earlier incarnations committed, which its
budget counts.

Needs the `ray` extra; `mils` installed on every node, and the inputs readable at the same
paths from every node (a shared filesystem), as Ray's own file-based jobs need.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from mils.engine.config import Budget
from mils.engine.errors import ConfigError, MilsError
from mils.engine.limiter import LimiterStatistics
from mils.engine.logs import configure_logging, get_logger
from mils.engine.scheduler import (
    Event,
    RunStatistics,
    RunSummary,
    Sample,
    SampleFinished,
    StepCommitted,
)
from mils.engine.store import (
    CANCELLED,
    DONE,
    FAILED,
    RunStore,
    SampleEnd,
    SampleProgress,
    SampleRow,
    StepCommit,
)
from mils.engine.usage import Usage

if TYPE_CHECKING:
    from mils._config import RunConfig
    from mils.tasks import Task

__all__ = ["RayCluster", "RayScheduler", "RaySettings"]

log = get_logger(__name__)

POLL_S = 0.25
"""How often the driver collects the workers' committed steps and statistics."""
LOG_BUFFER = 10_000
"""Log events an actor keeps for the driver between two of its polls; past that, the oldest
are dropped."""
PAUSE_SLACK_S = 0.5
"""A worker's pause of an endpoint is shared with those whose own pause of it ends more
than this much sooner."""


@dataclass(frozen=True, slots=True)
class RaySettings:
    """Where and how wide a run goes on Ray."""

    address: str = "auto"
    """"auto": the cluster this machine is part of (`ray start`, or RAY_ADDRESS); "local":
    a one-machine cluster started for the run; else the address of a cluster's head node
    (HOST:PORT)."""
    actors: int | None = None
    """Shard workers; None: one per CPU of the cluster. Never more than samples to do."""
    max_restarts: int = 3
    """How many times each worker that dies is restarted before the run stops."""

    def __post_init__(self) -> None:
        if self.actors is not None and self.actors < 1:
            raise ConfigError(f"ray actors must be >= 1, got {self.actors}; pass 1 or more")
        if self.max_restarts < 0:
            raise ConfigError(f"ray max_restarts must be >= 0, got {self.max_restarts}")
        if self.address.startswith("ray://"):
            raise ConfigError(
                f"ray address {self.address}: Ray Client (ray://) runs the driver off the "
                "cluster, where the run directory is not; run mils on a node of the cluster "
                "with `--ray auto` or `--ray HEAD_HOST:PORT`"
            )


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "running on Ray needs the `ray` package: pip install 'mils[ray]'"
        ) from exc
    return ray


class _LogBuffer:
    """An actor's log events from info up, kept for the driver to take and write into the
    run's log (the actor's console shows only criticals: the driver's shows the rest once)."""

    def __init__(self) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=LOG_BUFFER)
        configure_logging(console_level="critical", forward=self._events.append)

    def take(self) -> list[dict[str, Any]]:
        events = self._events
        return [events.popleft() for _ in range(len(events))]


def _relog(events: Sequence[Mapping[str, Any]], **where: Any) -> None:
    """Write actors' log events into this process's log, with `where` they came from (the
    time is when the driver took them, within `POLL_S` of when they were logged)."""
    for event in events:
        fields = {k: v for k, v in event.items() if k not in ("event", "level", "timestamp")}
        getattr(log, event.get("level", "info"))(event.get("event", ""), **{**fields, **where})


# -- the store actor ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Claim:
    """What a shard's incarnation starts from: its epoch (commits of earlier ones are
    refused), its share as the driver last set it (the run's limits are divided among
    `width`; `budget`), and what earlier incarnations committed (their spend counts)."""

    epoch: int
    width: int
    budget: Budget
    spent: Usage


class _StoreServer:
    """The run's `RunStore`, served to the workers one call at a time; it records the
    events of what it commits, for the driver."""

    def __init__(self, run_dir: str) -> None:
        self._logs = _LogBuffer()
        self._store = RunStore.open(Path(run_dir))
        self._events: list[Event] = []
        self._epochs: dict[int, int] = {}
        self._shares: dict[int, tuple[int, Budget]] = {}
        self._spent: dict[int, Usage] = {}
        """What each shard's steps committed in this run, by every incarnation."""
        self.restarts = 0

    def share(self, shares: Mapping[int, tuple[int, Budget]]) -> None:
        """Set shards' shares (by shard: the workers the limits are divided among, the
        budget), for their next claims."""
        self._shares.update(shares)

    def claim(self, shard: int) -> _Claim:
        """Start (or restart) `shard`: commits of its earlier incarnations are refused
        from now on."""
        epoch = self._epochs.get(shard, 0) + 1
        self._epochs[shard] = epoch
        if epoch > 1:
            self.restarts += 1
            log.warning("ray_shard_restarted", shard=shard, epoch=epoch)
        width, budget = self._shares[shard]
        return _Claim(epoch, width, budget, self.spent(shard))

    def spent(self, shard: int) -> Usage:
        return self._spent.get(shard, Usage())

    def _current(self, fence: tuple[int, int] | None, sample_id: str) -> bool:
        if fence is None or self._epochs.get(fence[0]) == fence[1]:
            return True
        log.warning("ray_stale_commit_dropped", shard=fence[0], sample_id=sample_id)
        return False

    def samples(self, ids: frozenset[str] | None) -> list[SampleRow]:
        rows = self._store.samples()
        return rows if ids is None else [row for row in rows if row.id in ids]

    def pool(self, task: str) -> list[str]:
        return self._store.pool(task)

    def usage(self) -> Usage:
        return self._store.usage()

    def progress(self, sample_id: str) -> SampleProgress:
        return self._store.progress(sample_id)

    def commit_steps(
        self,
        fence: tuple[int, int] | None,
        steps: Sequence[StepCommit],
        ended: Sequence[SampleEnd],
    ) -> None:
        """Commit a worker's finished steps and sample ends in one transaction (group
        commit)."""
        if not self._current(fence, steps[0][0] if steps else ended[0][0]):
            return
        self._store.commit_steps(steps, ended)
        if fence is not None:
            used = sum((usage for _, _, _, usage in steps if usage is not None), Usage())
            self._spent[fence[0]] = self.spent(fence[0]) + used
        for sample_id, record, _, _ in steps:
            if record.step > 0:  # step 0 (the initial pool's result) is not a step taken
                score, text = record.best
                self._events.append(
                    StepCommitted(sample_id, record.step, text, score, len(record.new))
                )
        for sample_id, error in ended:
            self._events.append(SampleFinished(sample_id, DONE if error is None else FAILED, error))

    def take_events(self) -> tuple[list[Event], int, list[dict[str, Any]]]:
        """The events since the last call, how many shard restarts there were, and the
        actor's log events since the last call."""
        events, self._events = self._events, []
        return events, self.restarts, self._logs.take()

    def result(self, sample_id: str) -> dict[str, Any]:
        return self._store.result(sample_id)

    def export_results(self) -> Path:
        return self._store.export_results()

    def update_config(self, section: str, values: Mapping[str, Any] | None) -> None:
        self._store.update_config(section, values)

    def close(self) -> None:
        self._store.close()


class RemoteStore:
    """The `RunStore` methods a run calls, answered by the store actor. Blocking, like the
    store's own: the engine calls them in worker threads. A shard's view holds only its
    samples, reads the spend as it was when the run started (its budget share counts from
    there) and commits under its claim."""

    def __init__(
        self,
        actor: Any,
        run_dir: Path,
        *,
        shard: frozenset[str] | None = None,
        fence: tuple[int, int] | None = None,
        usage: Usage | None = None,
    ) -> None:
        self.actor = actor
        self.run_dir = run_dir
        self._shard = shard
        self._fence = fence
        self._usage = usage

    def _call(self, method: str, *args: Any) -> Any:
        return _ray().get(getattr(self.actor, method).remote(*args))

    def samples(self) -> list[SampleRow]:
        return cast(list[SampleRow], self._call("samples", self._shard))

    def pool(self, task: str = "") -> list[str]:
        return cast(list[str], self._call("pool", task))

    def usage(self) -> Usage:
        return self._usage if self._usage is not None else cast(Usage, self._call("usage"))

    def progress(self, sample_id: str) -> SampleProgress:
        return cast(SampleProgress, self._call("progress", sample_id))

    def commit_steps(self, steps: Sequence[StepCommit], ended: Sequence[SampleEnd] = ()) -> None:
        """Commit a group of steps and sample ends (the scheduler's `GroupCommit` gathers
        them) through the store actor: one call, one transaction."""
        self._call("commit_steps", self._fence, steps, ended)

    def result(self, sample_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._call("result", sample_id))

    def export_results(self) -> Path:
        if self._shard is not None:  # the driver exports once, for the whole run
            return self.run_dir / "results.jsonl"
        return cast(Path, self._call("export_results"))

    def update_config(self, section: str, values: Mapping[str, Any] | None) -> None:
        self._call("update_config", section, values)

    def close(self) -> None:
        if self._shard is None:
            self._call("close")
            _ray().kill(self.actor)


# -- the shard workers --------------------------------------------------------------


class _ShardWorker:
    """Runs one shard of the run: `Run` over the samples it is given, on an event loop of
    its own in the actor's `run` call; the other calls (statistics, cancel) come on the
    actor's other threads. (A threaded actor, not an async one: the store is called with
    blocking `ray.get`s, from the engine's worker threads as every store call is.)"""

    def __init__(self) -> None:
        self._logs = _LogBuffer()
        self._run: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._config: RunConfig | None = None

    def run(
        self,
        shard: int,
        store: Any,
        run_dir: str,
        ids: frozenset[str],
        usage: Usage,
        config: RunConfig,
        tasks: dict[str, Task],
        secrets: dict[str, str],
    ) -> RunSummary:
        """Run shard number `shard` (the samples `ids`) under the share of the run's limits
        (`config` is the whole run's) and the spend (from `usage`, the run's when it
        started) its claim from the store actor `store` gives."""
        from mils._api import Run, _Parts  # the core of a run in one process

        # Endpoint keys arrive as call arguments (Ray logs a runtime_env's variables).
        os.environ.update(secrets)
        claim: _Claim = _ray().get(store.claim.remote(shard))
        usage += claim.spent  # a restarted shard's budget counts what it committed before
        fence = (shard, claim.epoch)
        view = RemoteStore(store, Path(run_dir), shard=ids, fence=fence, usage=usage)
        task = next(iter(tasks.values()))
        self._config = config
        share = replace(shared(config, claim.width), budget=claim.budget)
        run = Run(
            Path(run_dir), lambda: cast(RunStore, view), task, share, _Parts(), None, tasks=tasks
        )

        async def to_end() -> RunSummary:
            self._loop = asyncio.get_running_loop()
            async with run:
                self._run = run
                self._take_share(claim.width)  # learned limits are the provider's, for all
                return await run.wait()

        return asyncio.run(to_end())

    def statistics(self) -> RunStatistics | None:
        """A snapshot of the shard's run (read from another thread: counters only)."""
        with contextlib.suppress(MilsError):
            return cast(RunStatistics, self._run.statistics()) if self._run else None
        return None

    def take_logs(self) -> list[dict[str, Any]]:
        """The worker's log events since the last call."""
        return self._logs.take()

    def cancel(self, sample_id: str | None) -> None:
        if self._run is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._run.cancel, sample_id)

    def pause(self, endpoint: str, until: float) -> None:
        """Pause a generator endpoint until the wall-clock time `until`, as a 429 that
        another worker met did."""
        if self._run is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._run._pause, endpoint, until - time.time())

    def reshare(self, width: int, budget: Budget) -> int | None:
        """Take a 1/`width` share of the run's samples window, fixed generator limit and
        rpm/tpm, and `budget` (shards have ended: `width` are left). Returns the generator
        limit in force then; None when the shard's run is not going."""
        if self._run is None or self._loop is None:
            return None

        async def take() -> int:
            return self._take_share(width, budget)

        try:
            return asyncio.run_coroutine_threadsafe(take(), self._loop).result(timeout=30)
        except (RuntimeError, MilsError, TimeoutError):  # the run ended meanwhile
            return None

    def _take_share(self, width: int, budget: Budget | None = None) -> int:
        """Apply a 1/`width` share to the running shard (on its loop), and `budget` (None:
        the one it has); the generator limit then in force."""
        assert self._config is not None
        self._run._reshare(shared(self._config, width), 1 / width, budget)
        return cast(int, self._run.statistics().generator_limit)

    def where(self) -> tuple[str, int]:
        """The worker's node id and process id."""
        return _ray().get_runtime_context().get_node_id(), os.getpid()


# -- the driver ---------------------------------------------------------------------


class RayCluster(contextlib.AbstractAsyncContextManager["RayCluster"]):
    """The driver's connection to Ray for one run (joined, or started for "local"); left
    as found when the run ends (a caller's own `ray.init` stays)."""

    def __init__(self, settings: RaySettings) -> None:
        self.settings = settings
        self._started = False

    async def __aenter__(self) -> RayCluster:
        ray = _ray()
        if not ray.is_initialized():
            address = None if self.settings.address == "local" else self.settings.address
            try:
                # On this thread: ray.init sets its signal handlers only on the main one.
                ray.init(address=address, logging_level="warning", log_to_driver=True)
            except ConnectionError as exc:
                raise ConfigError(
                    f"no Ray cluster at {self.settings.address!r}: {exc}; start one "
                    "(`ray start --head`), pass its HOST:PORT, or use `--ray local`"
                ) from exc
            self._started = True
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._started:
            await asyncio.to_thread(_ray().shutdown)

    def width(self) -> int:
        if self.settings.actors is not None:
            return self.settings.actors
        return max(1, int(_ray().cluster_resources().get("CPU", 1)))

    def serve_store(self, store: RunStore) -> RemoteStore:
        """Hand the run's store to an actor on this node; returns the driver's view."""
        ray = _ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        run_dir = store.run_dir.resolve()  # the actor's working directory is not ours
        store.close()
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        actor = (
            ray.remote(_StoreServer)
            .options(num_cpus=0, max_concurrency=1, scheduling_strategy=here)
            .remote(str(run_dir))
        )
        remote = RemoteStore(actor, run_dir)
        remote.samples()  # the store opened (or its error raised) before the run starts
        return remote

    def worker(self) -> Any:
        return (
            _ray()
            .remote(_ShardWorker)
            .options(
                num_cpus=1,
                max_restarts=self.settings.max_restarts,
                max_task_retries=-1,
                max_concurrency=4,  # `run`, and statistics and cancel beside it
                scheduling_strategy="SPREAD",
            )
            .remote()
        )


class RayScheduler:
    """What a `Run` asks of its scheduler (run, statistics, cancel), done by shard workers
    on Ray; events come from the store actor as it commits. `secrets`: the environment
    variables holding endpoint keys, set on the workers as this process has them."""

    def __init__(
        self,
        cluster: RayCluster,
        store: RemoteStore,
        config: RunConfig,
        tasks: Mapping[str, Task],
        on_event: Callable[[Event], None],
        secrets: Sequence[str] = (),
    ) -> None:
        self._cluster = cluster
        self._secrets = secrets
        self._store = store
        self._config = config
        self._tasks = dict(tasks)
        self._on_event = on_event
        self._workers: list[Any] = []
        self._shard_of: dict[str, int] = {}
        self._ended: set[str] = set()
        self._stats: list[RunStatistics] = []
        self._total = 0
        self._done = self._failed = self._steps = 0
        self._failures: list[tuple[str, str]] = []
        self._started = time.monotonic()
        self._spent_before = Usage()
        self.restarts = 0
        """Shard workers restarted after dying, so far."""
        self._collecting: asyncio.Future[None] | None = None
        self._budgets: list[Budget] = []
        """Each shard's budget in force, by shard."""
        self._pauses: dict[str, float] = {}
        """The end of the last pause shared, by endpoint (wall clock)."""

    async def run(
        self, samples: Sequence[Sample], pools: Mapping[str, Sequence[str]]
    ) -> RunSummary:
        """Run every sample not yet done on the workers; return what happened (each
        worker reads its samples and pools from the store)."""
        del pools
        ray = _ray()
        rows = await asyncio.to_thread(self._store.samples)
        finished = {row.id for row in rows if row.status == DONE}
        todo = [sample.id for sample in samples if sample.id not in finished]
        self._total = len(todo)
        self._started = time.monotonic()
        self._spent_before = spent = await asyncio.to_thread(self._store.usage)
        if not todo:
            return await self._summary([], len(finished))
        width = min(self._cluster.width(), len(todo))
        shards = [todo[i::width] for i in range(width)]
        self._budgets = [_budget_share(self._config.budget, width, spent)] * width
        await self._record_shares(range(width))
        log.info("ray_run_started", samples=len(todo), actors=width)
        self._workers = [self._cluster.worker() for _ in shards]
        for index, shard in enumerate(shards):
            self._shard_of.update(dict.fromkeys(shard, index))
        refs = [
            worker.run.remote(
                index,
                self._store.actor,
                str(self._store.run_dir),
                frozenset(shard),
                spent,
                self._config,
                self._tasks,
                {name: os.environ[name] for name in self._secrets if name in os.environ},
            )
            for index, (worker, shard) in enumerate(zip(self._workers, shards, strict=True))
        ]
        places = await asyncio.gather(*(_awaited(w.where.remote()) for w in self._workers))
        log.info(
            "ray_workers",
            workers=[
                {"shard": i, "node": node, "pid": pid} for i, (node, pid) in enumerate(places)
            ],
        )
        poller = asyncio.create_task(self._poll())
        outcomes = [asyncio.ensure_future(_awaited(ref)) for ref in refs]
        try:
            await self._reshare_as_shards_end(outcomes)
            summaries = [outcome.result() for outcome in outcomes]
        finally:
            for outcome in outcomes:
                outcome.cancel()
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            await self._take_logs()  # what they logged last (their runs' ends)
            for worker in self._workers:
                ray.kill(worker)
            await self._collect()
        for sample_id in todo:  # cancelled (by `cancel` or the budget): not committed as ended
            if sample_id not in self._ended:
                self._emit(SampleFinished(sample_id, CANCELLED))
        return await self._summary(summaries, len(finished))

    async def _reshare_as_shards_end(self, outcomes: Sequence[asyncio.Future[Any]]) -> None:
        """Wait for every shard; as shards end, the workers still running share the run's
        limits among themselves, and what an ended shard left of its budget (an ended
        shard's share is not left idle). The first shard to fail raises, as before."""
        shard_of = {outcome: index for index, outcome in enumerate(outcomes)}
        running = set(outcomes)
        while running:
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            left = sorted(shard_of[outcome] for outcome in running)
            for outcome in done:
                outcome.result()
                ended = shard_of[outcome]
                used = await _awaited(self._store.actor.spent.remote(ended))
                spent = self._spent_before + used
                self._budgets = _handed_on(self._budgets, ended, spent, left)
            if left:
                await self._record_shares(left)
                limits = await asyncio.gather(
                    *(
                        _awaited(
                            self._workers[i]
                            .reshare.options(max_task_retries=0)
                            .remote(len(left), self._budgets[i])
                        )
                        for i in left
                    ),
                    return_exceptions=True,  # a worker restarting takes it from its claim
                )
                log.info(
                    "ray_shares_grown",
                    actors=len(left),
                    generator_limits=[x if isinstance(x, int) else None for x in limits],
                    budgets=[_limits(self._budgets[i]) for i in left],
                )

    async def _record_shares(self, shards: Sequence[int]) -> None:
        """Give the store actor the shares of `shards` (the only ones running), for a
        worker that restarts to start from."""
        shares = {i: (len(shards), self._budgets[i]) for i in shards}
        await _awaited(self._store.actor.share.remote(shares))

    async def _summary(self, summaries: Sequence[RunSummary], skipped: int) -> RunSummary:
        """The run's summary: samples, steps and usage as the store committed them (a
        restarted worker's summary misses what its predecessor did), the rest the workers'."""
        spent = await asyncio.to_thread(self._store.usage)
        before = self._spent_before
        usage = Usage(  # committed in this session, by every incarnation of every worker
            requests=spent.requests - before.requests,
            prompt_tokens=spent.prompt_tokens - before.prompt_tokens,
            completion_tokens=spent.completion_tokens - before.completion_tokens,
            estimated_requests=spent.estimated_requests - before.estimated_requests,
        )
        budget = self._config.budget
        return RunSummary(
            samples=self._total + skipped,
            done=self._done + skipped,
            failed=self._failed,
            skipped=skipped,
            steps=self._steps,
            wall_s=time.monotonic() - self._started,
            candidates_scored=_summed(summaries, "candidates_scored"),
            texts_evaluated=_summed(summaries, "texts_evaluated"),
            generator_requests=max(_summed(summaries, "generator_requests"), usage.requests),
            replies_without_candidates=_summed(summaries, "replies_without_candidates"),
            candidates_too_long=_summed(summaries, "candidates_too_long"),
            candidates_over_limit=_summed(summaries, "candidates_over_limit"),
            replies_truncated=_summed(summaries, "replies_truncated"),
            texts_unscorable=_summed(summaries, "texts_unscorable"),
            faults=dict(sum((Counter(s.faults) for s in summaries), Counter())),
            cancelled=self._total - self._done - self._failed,
            failures=self._failures,
            usage=usage,
            cost=budget.cost(usage.prompt_tokens, usage.completion_tokens),
            run_usage=spent,
            run_cost=budget.cost(spent.prompt_tokens, spent.completion_tokens),
            budget_reached=next((s.budget_reached for s in summaries if s.budget_reached), None),
        )

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            await self._collect()
            answers, _ = await asyncio.gather(self._ask("statistics"), self._take_logs())
            self._stats = [a for a in answers if isinstance(a, RunStatistics)]
            self._share_pauses(
                [a.endpoints if isinstance(a, RunStatistics) else () for a in answers]
            )

    async def _ask(self, method: str) -> list[Any]:
        """Every worker's answer to `method` (its error, for one that did not answer)."""
        return await asyncio.gather(
            *(
                _awaited(getattr(w, method).options(max_task_retries=0).remote())
                for w in self._workers
            ),
            return_exceptions=True,
        )

    async def _take_logs(self) -> None:
        """Write the workers' log events since the last call into the run's log."""
        for shard, events in enumerate(await self._ask("take_logs")):
            if isinstance(events, list):
                _relog(events, shard=shard)

    def _share_pauses(self, endpoints: Sequence[Sequence[LimiterStatistics]]) -> None:
        """Pause an endpoint on every worker (of `endpoints`, each worker's limiters) until
        the latest end of a pause a worker's 429 began."""
        for endpoint, until, behind in _pauses_to_share(endpoints, self._pauses):
            self._pauses[endpoint] = until
            for index in behind:
                self._workers[index].pause.remote(endpoint, until)
            log.info(
                "ray_pause_shared",
                endpoint=endpoint,
                wait_s=round(until - time.time(), 3),
                actors=len(behind),
            )

    async def _collect(self) -> None:
        """Take the store actor's new events and pass them on. The events a call has taken
        are passed on even when its caller is cancelled meanwhile (the poller, at the end
        of a run): the taking runs in a task of its own, which the next call waits for."""
        if self._collecting is not None:
            with contextlib.suppress(Exception):  # a failed taking lost its own events only
                await asyncio.shield(self._collecting)
        self._collecting = asyncio.ensure_future(self._take_events())
        await asyncio.shield(self._collecting)

    async def _take_events(self) -> None:
        events, restarts, logs = await _awaited(self._store.actor.take_events.remote())
        _relog(logs)
        if restarts > self.restarts:
            log.warning("ray_worker_restarted", restarts=restarts)
            self.restarts = restarts
        for event in events:
            self._emit(event)

    def _emit(self, event: Event) -> None:
        if isinstance(event, SampleFinished):
            self._ended.add(event.sample_id)
            self._done += event.status == DONE
            if event.status == FAILED:
                self._failed += 1
                self._failures.append((event.sample_id, event.error or ""))
        else:
            self._steps += 1
        self._on_event(event)

    def statistics(self) -> RunStatistics:
        each = self._stats
        return RunStatistics(
            total=self._total,
            done=self._done,
            failed=self._failed,
            cancelled=sum(s.cancelled for s in each),
            steps=self._steps,
            elapsed_s=time.monotonic() - self._started,
            generator_in_flight=sum(s.generator_in_flight for s in each),
            generator_limit=sum(s.generator_limit for s in each),
            generator_waiting=sum(s.generator_waiting for s in each),
            score_in_flight=sum(s.score_in_flight for s in each),
            score_queued=sum(s.score_queued for s in each),
            endpoints=_endpoints(s.endpoints for s in each),
            faults=dict(sum((Counter(s.faults) for s in each), Counter())),
            retries=sum(s.retries for s in each),
            candidates_scored=sum(s.candidates_scored for s in each),
            texts_evaluated=sum(s.texts_evaluated for s in each),
            cache_hits=sum(s.cache_hits for s in each),
            cache_misses=sum(s.cache_misses for s in each),
            usage=sum((s.usage for s in each), Usage()),
            cost=_total_cost(s.cost for s in each),
        )

    def cancel_all(self) -> None:
        for worker in self._workers:
            worker.cancel.remote(None)

    def cancel_sample(self, sample_id: str) -> bool:
        shard = self._shard_of.get(sample_id)
        if shard is None or sample_id in self._ended:
            return False
        self._workers[shard].cancel.remote(sample_id)
        return True


async def _awaited(ref: Any) -> Any:
    """The value of a Ray object; a task's own error (a `MilsError` in a worker) raised as
    itself, a worker that died past its restarts as a `MilsError` that says so."""
    ray = _ray()
    try:
        return await ref
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause
        raise (cause if isinstance(cause, MilsError) else MilsError(str(exc))) from None
    except ray.exceptions.RayActorError as exc:
        raise MilsError(
            f"a Ray worker died past its restarts ({exc}); every committed step is kept: "
            "`mils resume` the run"
        ) from None


def shared(config: RunConfig, width: int) -> RunConfig:
    """One worker's share of the run's limits among `width` workers: a fixed window and
    generator limit, each endpoint's rpm/tpm (its budget is the driver's to give:
    `_budget_share`, `_handed_on`)."""

    def part(value: int | None) -> int | None:
        return None if value is None else max(1, math.ceil(value / width))

    if width == 1:
        return config
    concurrency = replace(
        config.concurrency,
        samples_in_flight=part(config.concurrency.samples_in_flight) or 1,
        generator_in_flight=part(config.concurrency.generator_in_flight),
    )
    generators = tuple(replace(g, rpm=part(g.rpm), tpm=part(g.tpm)) for g in config.generator)
    return replace(config, concurrency=concurrency, generator=generators)


def _budget_share(budget: Budget, width: int, spent: Usage) -> Budget:
    """Limits such that `width` workers, each counting from `spent`, spend at most what
    the run's limits leave."""

    def part(limit: float | None, used: float) -> float | None:
        return None if limit is None else used + max(0.0, limit - used) / width

    requests = part(budget.max_requests, spent.requests)
    tokens = part(budget.max_tokens_total, spent.tokens)
    cost = budget.cost(spent.prompt_tokens, spent.completion_tokens) or 0.0
    return replace(
        budget,
        max_requests=None if requests is None else math.floor(requests),
        max_tokens_total=None if tokens is None else math.floor(tokens),
        max_cost=part(budget.max_cost, cost),
    )


def _handed_on(
    budgets: Sequence[Budget], ended: int, spent: Usage, to: Sequence[int]
) -> list[Budget]:
    """The shards' budgets once shard `ended` has ended, having counted the run's spend up
    to `spent`: what it left of each limit is divided among the shards `to` (rounded down,
    so together they stay within the run's limits)."""
    budget = budgets[ended]
    cost = budget.cost(spent.prompt_tokens, spent.completion_tokens) or 0.0
    unspent = {
        "max_requests": (budget.max_requests, spent.requests),
        "max_tokens_total": (budget.max_tokens_total, spent.tokens),
        "max_cost": (budget.max_cost, cost),
    }
    grown = list(budgets)
    for index in to:
        changes: dict[str, Any] = {}
        for name, (limit, used) in unspent.items():
            mine = getattr(grown[index], name)
            if limit is not None and mine is not None:
                part = max(0.0, limit - used) / len(to)
                changes[name] = mine + part if name == "max_cost" else mine + math.floor(part)
        grown[index] = replace(grown[index], **changes)
    return grown


def _pauses_to_share(
    endpoints: Sequence[Sequence[LimiterStatistics]], shared: Mapping[str, float]
) -> list[tuple[str, float, list[int]]]:
    """The pauses to share: for each endpoint that a worker has paused past what was shared
    before (`shared`: the end of the last pause shared, by endpoint), the pause's end and
    the workers whose own pause of it ends `PAUSE_SLACK_S` sooner; `endpoints`: each
    worker's limiters."""
    ends: dict[str, dict[int, float]] = {}  # by endpoint, each worker's pause end (0: none)
    for index, limiters in enumerate(endpoints):
        for s in limiters:
            ends.setdefault(s.endpoint, {})[index] = s.paused_until or 0.0
    pauses = []
    for endpoint, each in ends.items():
        until = max(each.values())
        if until > shared.get(endpoint, 0.0):
            behind = [i for i, end in each.items() if end < until - PAUSE_SLACK_S]
            if behind:
                pauses.append((endpoint, until, behind))
    return pauses


def _limits(budget: Budget) -> dict[str, float]:
    """The limits a budget sets, for the log."""
    names = ("max_requests", "max_tokens_total", "max_cost")
    return {name: value for name in names if (value := getattr(budget, name)) is not None}


def _endpoints(each: Any) -> tuple[LimiterStatistics, ...]:
    """Every worker's limiter of one endpoint as one: what the endpoint sees."""
    merged: dict[str, LimiterStatistics] = {}
    for stats in each:
        for s in stats:
            m = merged.get(s.endpoint)
            merged[s.endpoint] = (
                s
                if m is None
                else replace(
                    m,
                    limit=m.limit + s.limit,
                    in_flight=m.in_flight + s.in_flight,
                    waiting=m.waiting + s.waiting,
                    completed=m.completed + s.completed,
                    overloads=m.overloads + s.overloads,
                    peak_in_flight=m.peak_in_flight + s.peak_in_flight,
                    rate_limited=m.rate_limited + s.rate_limited,
                    paused_until=max(m.paused_until or 0, s.paused_until or 0) or None,
                )
            )
    return tuple(merged.values())


def _total_cost(costs: Any) -> float | None:
    known = [c for c in costs if c is not None]
    return sum(known) if known else None


def _summed(summaries: Sequence[RunSummary], name: str) -> int:
    return sum(getattr(s, name) for s in summaries)
