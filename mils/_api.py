"""The public async API: open a run, stream its results, cancel it, resume it.

This is the composition root: the one place that wires a task, the engine and the adapters
together. The CLI is a client of it, like any program that embeds the engine:

    async with mils.open_run("image-caption", ["a.jpg", "b.jpg"], generator=..., scorer=...,
                             out="runs/r1") as run:
        async for result in run:          # typed results, as samples finish
            print(result.sample_id, result.best_text)
    run.summary                           # what the run did

A `Run` owns its work: leaving the `async with` block stops what is still running (the
committed steps stay, and `resume_run` continues them). Library code never prints; errors
name parameters (`steps`, `out`), which the CLI maps to its flags.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast

from mils._config import MIXED, RunConfig, TaskSettings
from mils._media import other_kinds, tasks_for_files
from mils._metrics import MetricsConfig, RunMetrics
from mils._ray import RayCluster, RayScheduler, RaySettings
from mils.adapters import (
    AlignmentScorer,
    AudioReader,
    BatchSettings,
    GeneratorSettings,
    ImageReader,
    OpenAIBatchGenerator,
    OpenAIGenerator,
    RendererSettings,
    ScorerSettings,
    TextReader,
    TritonStyleScorer,
    VideoReader,
    sample_id_for,
)
from mils.engine import (
    Budget,
    ConcurrencyConfig,
    ConfigError,
    Generator,
    LoopConfig,
    MediaReader,
    MediaScorer,
    MilsError,
    RateLimits,
    Renderer,
    RequestObserver,
    RetryConfig,
    RunStore,
    Scorer,
    StoreError,
    Usage,
)
from mils.engine.logs import get_logger
from mils.engine.objectives import EmbeddingObjective, Objective, RenderThenScore, WeightedSum
from mils.engine.retry import Retrier
from mils.engine.scheduler import (
    Event,
    Route,
    RunStatistics,
    RunSummary,
    Sample,
    SampleFinished,
    Scheduler,
)
from mils.tasks import EmbeddingSpec, InputKind, RenderSpec, Task, get_task

__all__ = ["Run", "SampleResult", "StepResult", "load_run_config", "open_run", "resume_run"]

PROGRESS_LOG_S = 5.0
"""Least seconds between two `progress` lines of a run's log."""

log = get_logger(__name__)

GeneratorArg = GeneratorSettings | Generator | Sequence[GeneratorSettings] | Sequence[Generator]
ScorerArg = ScorerSettings | Scorer
RendererArg = RendererSettings | Renderer
InputArg = str | os.PathLike[str] | Mapping[str, str] | Sample
PoolArg = Sequence[str] | str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class StepResult:
    """One committed step of a sample."""

    step: int
    best_text: str
    best_score: float
    mean_top_k: float
    new_candidates: int
    usage: Usage = field(default_factory=Usage)
    """The generator requests of this step and their tokens (none for step 0)."""


@dataclass(frozen=True, slots=True)
class SampleResult:
    """Where one sample ended: its best text and how it got there."""

    sample_id: str
    inputs: Mapping[str, str]
    status: str
    """"done", "failed" (see `error`) or "cancelled" (a resume continues it)."""
    error: str | None
    steps: int
    best_text: str | None
    best_score: float | None
    trajectory: tuple[StepResult, ...]
    best_terms: Mapping[str, float] | None = None
    """Named terms of the best text's value, when the objective has several."""
    best_artefact: Path | None = None
    """Media made for the best text (a rendered image), inside the run directory."""
    usage: Usage = field(default_factory=Usage)
    """The sample's generator requests and their tokens, over every session of the run."""

    @classmethod
    def _from_row(cls, row: Mapping[str, Any], run_dir: Path) -> SampleResult:
        artefact = row.get("best_artefact")
        return cls(
            sample_id=row["sample_id"],
            inputs=row["inputs"],
            status=row["status"],
            error=row["error"],
            steps=row["steps"],
            best_text=row["best_text"],
            best_score=row["best_score"],
            trajectory=tuple(
                StepResult(**{**step, "usage": Usage(**step.get("usage", {}))})
                for step in row["trajectory"]
            ),
            best_terms=row.get("best_terms"),
            best_artefact=run_dir / artefact if artefact else None,
            usage=Usage(**row.get("usage", {})),
        )


def open_run(
    task: str | Task | None,
    inputs: Iterable[InputArg],
    *,
    generator: GeneratorArg,
    scorer: ScorerArg | Mapping[str, ScorerArg] | None = None,
    out: str | os.PathLike[str],
    loop: LoopConfig | Mapping[str, LoopConfig] | None = None,
    concurrency: ConcurrencyConfig | None = None,
    retry: RetryConfig | None = None,
    budget: Budget | None = None,
    batch: BatchSettings | None = None,
    pool: PoolArg | Mapping[str, PoolArg] | None = None,
    renderer: RendererArg | None = None,
    media_scorer: MediaScorer | None = None,
    on_event: Callable[[Event], None] | None = None,
    metrics: MetricsConfig | None = None,
    ray: RaySettings | None = None,
) -> Run:
    """Start a new run in the directory `out` (created; refused if it holds a run already).

    One run may caption images, videos and sounds together: with `task` None, each input
    file goes to its kind's captioning task. Each task then runs with its own loop, pool
    and encoder pair (its own embedding cache): pass `loop`, `pool` and `scorer` as
    mappings of task name to value (a single `loop` applies to every task); the generator
    endpoints and the budget are the run's, shared.

    Args:
        task: a task name (`mils.TASKS`) or a `Task`; None: the captioning task of each
            input file's kind (image, video, audio).
        inputs: one per sample: a source (a file path) for a task with one input, a mapping
            input name -> source, or a `Sample` with its own id. Ids come from file names.
        generator: settings of one or several OpenAI-compatible endpoints (saved, so the
            run can be resumed), or your own `Generator` objects (not saved).
        scorer: settings of the Triton scorer (an encoder pair; for style transfer its
            `style_model`), or your own `Scorer` (embedding tasks).
        out: the run directory.
        loop: the loop settings; default: the task's own (`task.loop`).
        budget: token prices (saved) and limits on the run's spend (`Budget`): a run that
            reaches one stops cleanly, with `RunSummary.budget_reached` saying which.
        batch: send the generator requests as OpenAI Batch API jobs, one per step of the
            samples in flight (`BatchSettings`; saved); None: live requests.
        pool: the initial pool: texts, or a file with one per line; default: the task's.
        renderer: where a render-then-score task renders its candidates: settings of a
            Triton model or an OpenAI-compatible images API (saved), or your own `Renderer`.
        media_scorer: your own `MediaScorer` for such a task; default: built from
            `scorer` by the task's terms (alignment: the encoder pair scores the render
            against the sample's text; style and content: `scorer.style_model`).
        on_event: called on the event loop for every committed step and finished sample.
        metrics: Prometheus metrics of the run, served on a port and/or added to your
            registry while the run is open (`MetricsConfig`).
        ray: run the samples on Ray actors (`RaySettings`: the cluster, how many workers);
            the endpoints must then be given as settings, not objects. Not saved.

    Raises:
        ConfigError: a setting, the pool or the inputs are unusable (nothing was written).
    """
    if task is None:
        specs, samples = _inferred(inputs)
    else:
        spec = task if isinstance(task, Task) else get_task(task)
        inputs = list(inputs)
        other_kinds(spec, [os.fspath(i) for i in inputs if isinstance(i, (str, os.PathLike))])
        specs, samples = {spec.name: spec}, _samples(spec, inputs)
    if len(specs) > 1:
        return _open_mixed(
            specs,
            samples,
            generator=generator,
            scorer=scorer,
            out=out,
            loop=loop,
            concurrency=concurrency,
            retry=retry,
            budget=budget,
            batch=batch,
            pool=pool,
            on_event=on_event,
            metrics=metrics,
            ray=ray,
        )
    spec = next(iter(specs.values()))
    own_loop: LoopConfig | None = _own(loop, spec.name, "loop")
    scorer = _own(scorer, spec.name, "scorer")
    texts, repeated = initial_pool(spec, _own(pool, spec.name, "pool"))
    generators, generator_objects = _split_generators(generator)
    config = RunConfig(
        task=spec.name,
        loop=own_loop or spec.loop,
        concurrency=concurrency or ConcurrencyConfig(),
        retry=retry or RetryConfig(),
        generator=generators,
        scorer=scorer if isinstance(scorer, ScorerSettings) else None,
        budget=budget or Budget(),
        batch=batch,
        renderer=renderer if isinstance(renderer, RendererSettings) else None,
    )
    run_dir = Path(out)
    RunStore.check_new(run_dir)  # before anything is written there (logs included)

    def create() -> RunStore:
        entries = [(s.id, s.inputs) for s in samples]
        return RunStore.create(run_dir, config.to_json(), texts, entries)

    return Run(
        run_dir,
        create,
        spec,
        config,
        _Parts(generator_objects, scorer, renderer, media_scorer),
        on_event,
        pool_repeats=repeated,
        metrics=metrics,
        ray=ray,
    )


def _open_mixed(
    specs: Mapping[str, Task],
    samples: Sequence[Sample],
    *,
    generator: GeneratorArg,
    scorer: ScorerArg | Mapping[str, ScorerArg] | None,
    out: str | os.PathLike[str],
    loop: LoopConfig | Mapping[str, LoopConfig] | None,
    concurrency: ConcurrencyConfig | None,
    retry: RetryConfig | None,
    budget: Budget | None,
    batch: BatchSettings | None,
    pool: PoolArg | Mapping[str, PoolArg] | None,
    on_event: Callable[[Event], None] | None,
    metrics: MetricsConfig | None,
    ray: RaySettings | None,
) -> Run:
    """`open_run` of samples of several tasks (`Sample.task` names each one's)."""
    names = list(specs)
    for value, what in ((scorer, "scorer"), (pool, "pool")):
        if value is not None and not isinstance(value, Mapping):
            raise ConfigError(
                f"the inputs call for {len(names)} tasks ({', '.join(names)}); pass `{what}` "
                "as a mapping of task name to its own (one per kind of media), or leave it out"
            )
    scorers = _per_task(scorer, names, "scorer")
    loops = {n: _per_task(loop, names, "loop").get(n) or specs[n].loop for n in names}
    pools = {n: initial_pool(specs[n], _per_task(pool, names, "pool").get(n)) for n in names}
    settings = {n: s for n, s in scorers.items() if isinstance(s, ScorerSettings)}
    if settings and len(settings) < len(names):
        raise ConfigError(
            "`scorer` mixes settings and objects; pass ScorerSettings for every task, or "
            "a Scorer for every task"
        )
    shared = {(s.url, s.protocol, s.timeout) for s in settings.values()}
    if len(shared) > 1:
        raise ConfigError(
            "the tasks' `scorer` settings name different servers; the tasks of one run "
            "share one Triton server (url, protocol, timeout): serve their models together"
        )
    generators, generator_objects = _split_generators(generator)
    config = RunConfig(
        task=MIXED,
        loop=loops[names[0]],
        concurrency=concurrency or ConcurrencyConfig(),
        retry=retry or RetryConfig(),
        generator=generators,
        scorer=settings.get(names[0]),
        budget=budget or Budget(),
        batch=batch,
        tasks={
            n: TaskSettings(
                loop=loops[n],
                **(
                    {
                        "text_model": own.text_model,
                        "target_model": own.target_model,
                        "target_input": own.target_input,
                    }
                    if (own := settings.get(n)) is not None
                    else {}
                ),
            )
            for n in names
        },
    )
    run_dir = Path(out)
    RunStore.check_new(run_dir)  # before anything is written there (logs included)

    def create() -> RunStore:
        entries = [(s.id, s.inputs) for s in samples]
        texts = {n: pools[n][0] for n in names}
        tasks = {s.id: s.task for s in samples}
        return RunStore.create(run_dir, config.to_json(), texts, entries, tasks=tasks)

    return Run(
        run_dir,
        create,
        specs[names[0]],
        config,
        _Parts(generator_objects, scorer),
        on_event,
        pool_repeats=sum(repeated for _, repeated in pools.values()),
        metrics=metrics,
        tasks=specs,
        ray=ray,
    )


def _own(value: Any, task: str, what: str) -> Any:
    """`value` for a run of one task: itself, or its entry for `task` when it is a mapping
    of task name to value (`open_run` of files of one kind, with mappings made for any)."""
    if isinstance(value, Mapping):
        return _per_task(value, [task], what).get(task)
    return value


def _per_task(value: Any, names: Sequence[str], what: str) -> dict[str, Any]:
    """A mapping of task name to value, from one (for every task) or a mapping.

    Raises:
        ConfigError: the mapping names a task the run does not have.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        return dict.fromkeys(names, value)
    if unknown := sorted(set(value) - set(names)):
        raise ConfigError(
            f"`{what}` names task {unknown[0]!r}, which this run does not have; its tasks "
            f"are {', '.join(names)}"
        )
    return dict(value)


def _inferred(inputs: Iterable[InputArg]) -> tuple[dict[str, Task], list[Sample]]:
    """The captioning task of each input file (by its kind) and the samples, each naming
    its task when there are several.

    Raises:
        ConfigError: an input is not a file path (a mapping or `Sample` needs `task`).
    """
    paths = []
    for item in inputs:
        if not isinstance(item, (str, os.PathLike)):
            raise ConfigError(
                "`task` is None and an input is not a file; pass `task` for inputs given "
                "as mappings or `Sample`s"
            )
        paths.append(os.fspath(item))
    groups = tasks_for_files(paths)
    specs = {name: get_task(name) for name in groups}
    if len(specs) == 1:
        (spec,) = specs.values()
        return specs, _samples(spec, paths)
    task_of = {path: name for name, group in groups.items() for path in group}
    taken: set[str] = set()
    samples = [
        Sample(
            sample_id_for(path, taken),
            {specs[task_of[path]].inputs[0].name: os.path.abspath(path)},
            task=task_of[path],
        )
        for path in paths
    ]
    return specs, samples


def resume_run(
    out: str | os.PathLike[str],
    *,
    task: Task | None = None,
    generator: GeneratorArg | None = None,
    scorer: ScorerArg | Mapping[str, ScorerArg] | None = None,
    concurrency: ConcurrencyConfig | None = None,
    retry: RetryConfig | None = None,
    budget: Budget | None = None,
    batch: BatchSettings | Literal["live"] | None = None,
    renderer: RendererArg | None = None,
    media_scorer: MediaScorer | None = None,
    on_event: Callable[[Event], None] | None = None,
    metrics: MetricsConfig | None = None,
    ray: RaySettings | None = None,
) -> Run:
    """Continue every unfinished sample of the run in `out` from its last committed step.

    Endpoints, concurrency, retries and the budget default to what the run saved; pass
    them to change them (servers moved, a run made with your own objects, a higher limit:
    a budget counts the spend of every session of the run; a new one is saved). The loop
    stays; the task is found by its saved name, or pass the `Task` a run was opened with if
    it is your own. `batch`: as saved when None; "live" sends live requests from now on.
    Batch API jobs of a run in batch mode that were still running are waited for, not
    sent again.
    `metrics` and `ray` are not saved: pass them again.
    """
    run_dir = Path(out)
    saved = load_run_config(run_dir)
    generators, generator_objects = (
        _split_generators(generator) if generator is not None else (saved.generator, ())
    )
    config = replace(
        saved,
        concurrency=concurrency or saved.concurrency,
        retry=retry or saved.retry,
        budget=budget or saved.budget,
        batch=saved.batch if batch is None else None if batch == "live" else batch,
        generator=generators,
        scorer=scorer if isinstance(scorer, ScorerSettings) else saved.scorer,
        renderer=renderer if isinstance(renderer, RendererSettings) else saved.renderer,
    )
    tasks = {name: get_task(name) for name in config.tasks}

    def reopen() -> RunStore:
        store = RunStore.open(run_dir)
        try:  # the next resume keeps the new prices, limits and mode
            if config.budget != saved.budget:
                store.update_config("budget", asdict(config.budget))
            if config.batch != saved.batch:
                store.update_config("batch", asdict(config.batch) if config.batch else None)
        except BaseException:
            store.close()
            raise
        return store

    return Run(
        run_dir,
        reopen,
        task or (next(iter(tasks.values())) if tasks else get_task(config.task)),
        config,
        _Parts(generator_objects, scorer, renderer, media_scorer),
        on_event,
        metrics=metrics,
        tasks=tasks or None,
        ray=ray,
    )


def load_run_config(out: str | os.PathLike[str]) -> RunConfig:
    """The configuration a run directory was made with (its config.json).

    Raises:
        StoreError: `out` is not a run directory.
        ConfigError: its config.json is not a run configuration.
    """
    run_dir = Path(out)
    if not RunStore.is_run(run_dir):
        raise StoreError(
            f"{out} is not a mils run directory (no run.db/config.json of a run); nothing "
            "was changed. Pass the `out` directory of an earlier run"
        )
    path = run_dir / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read {path} ({exc}); it was damaged or edited: restore it, or copy the "
            f"run with `mils salvage {out} NEW_DIR` after writing a valid one"
        ) from None
    return RunConfig.from_json(data)


@dataclass(frozen=True, slots=True)
class _Parts:
    """What the caller passed as live objects (used as they are, owned by the caller)."""

    generators: tuple[Generator, ...] = ()
    scorer: ScorerArg | Mapping[str, ScorerArg] | None = None
    """One, or one per task of a run of several tasks (task name -> scorer)."""
    renderer: RendererArg | None = None
    media_scorer: MediaScorer | None = None


@dataclass(slots=True)
class _Live:
    store: RunStore
    scheduler: Scheduler | RayScheduler
    runner: asyncio.Task[RunSummary]
    finished: asyncio.Queue[SampleFinished | None] = field(default_factory=asyncio.Queue)


class Run:
    """A run in progress: iterate it for results, `wait()` for its summary, `cancel()` it.

    Made by `open_run` or `resume_run`; use it as an async context manager. Iterate it once
    (`async for result in run`); it yields a `SampleResult` as each sample of this run
    ends, then raises the run's error if it stopped on one.
    """

    def __init__(
        self,
        run_dir: Path,
        open_store: Callable[[], RunStore],
        task: Task,
        config: RunConfig,
        parts: _Parts,
        on_event: Callable[[Event], None] | None,
        pool_repeats: int = 0,
        metrics: MetricsConfig | None = None,
        tasks: Mapping[str, Task] | None = None,
        ray: RaySettings | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.task = task
        """The run's task; in a run of several tasks, the first of `tasks`."""
        self.tasks: dict[str, Task] = dict(tasks) if tasks else {task.name: task}
        """Every task of the run by name (one, unless a run mixes kinds of media)."""
        self.config = config
        self._open_store = open_store
        self._parts = parts
        self._on_event = on_event
        self._pool_repeats = pool_repeats
        """Repeated pool lines dropped; logged once the run opens (so into its log)."""
        self._metrics_config = metrics
        self._ray = ray
        self._metrics: RunMetrics | None = None
        self._stack = contextlib.AsyncExitStack()
        self._live: _Live | None = None
        self._progress_logged = -PROGRESS_LOG_S
        self.summary: RunSummary | None = None
        """What the run did, once it has ended."""

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> Run:
        if self._live is not None:
            raise ConfigError("this run is already open; open a new one with resume_run")
        try:
            await self._start()
        except BaseException as exc:
            await self._stack.aclose()
            raise _unwrapped(exc) from None
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        live = self._live
        try:
            if live is not None and not live.runner.done():
                if exc is None:
                    live.scheduler.cancel_all()  # left early: stop samples, keep the summary
                else:
                    live.runner.cancel()
                with contextlib.suppress(BaseException):
                    await live.runner
            if live is not None and _succeeded(live.runner):
                self.summary = live.runner.result()
        finally:
            await self._stack.aclose()

    async def _start(self) -> None:
        if self._pool_repeats:
            log.warning("initial_pool_duplicates_dropped", dropped=self._pool_repeats)
        if self._ray is not None:
            self._refuse_objects_on_ray()  # before anything is written
        on_request = await self._start_metrics()
        store = await asyncio.to_thread(self._open_store)
        if self._ray is not None:
            await self._start_on_ray(store, self._ray)
            return
        self._stack.callback(store.close)
        self._stack.push_async_callback(_export, store)
        retrier = Retrier(self.config.retry)
        generators = await self._generators(store)
        # Runs first on the way out, while the store is open: the session's outcome.
        self._stack.push_async_callback(_record_reply_formats, store, generators)
        routes = {
            name: Route(
                task=task,
                loop=self.config.loop_for(name),
                objective=await self._objective(retrier, on_request, task),
                readers=_readers(task),
            )
            for name, task in self.tasks.items()
        }
        concurrency = self.config.concurrency
        if self.config.batch is not None and concurrency.generator_in_flight is None:
            # A job's latency says nothing about capacity: every sample in flight may ask.
            concurrency = replace(concurrency, generator_in_flight=concurrency.samples_in_flight)
        scheduler = Scheduler(
            routes=routes,
            concurrency=concurrency,
            retrier=retrier,
            generator=generators,
            store=store,
            on_event=self._event,
            on_request=on_request,
            budget=self.config.budget,
        )
        samples = [Sample(row.id, row.inputs, row.task) for row in store.samples()]
        pools = {name: store.pool(name) for name in routes}  # pool.txt in a run of one task
        live = _Live(store, scheduler, asyncio.create_task(scheduler.run(samples, pools)))
        live.runner.add_done_callback(lambda _: live.finished.put_nowait(None))
        self._live = live

    def _refuse_objects_on_ray(self) -> None:
        """A run on Ray builds its endpoints on every worker: only settings travel."""
        parts = self._parts
        scorers = parts.scorer.values() if isinstance(parts.scorer, Mapping) else [parts.scorer]
        objects = [
            *parts.generators,
            *(s for s in scorers if not isinstance(s, ScorerSettings | None)),
            *([parts.renderer] if not isinstance(parts.renderer, RendererSettings | None) else []),
            *([parts.media_scorer] if parts.media_scorer is not None else []),
        ]
        if objects or self.config.batch is not None:
            raise ConfigError(
                "a run on Ray builds its endpoints on every worker from settings: pass "
                "`generator`, `scorer` and `renderer` as settings, not objects, and live "
                "requests, not `batch`"
            )

    async def _start_on_ray(self, store: RunStore, settings: RaySettings) -> None:
        """The samples go to shard workers on Ray (`mils._ray`); this process serves the
        run's events and results from the store actor."""
        secrets = [g.api_key_env for g in self.config.generator]
        if self.config.renderer is not None:
            secrets.append(self.config.renderer.api_key_env)
        try:
            cluster = await self._stack.enter_async_context(RayCluster(settings))
            remote = await asyncio.to_thread(cluster.serve_store, store)
        finally:
            store.close()  # handed over (or the run does not start)
        view = cast(RunStore, remote)  # the store's methods, served by its actor
        self._stack.callback(view.close)
        self._stack.push_async_callback(_export, view)
        scheduler = RayScheduler(cluster, remote, self.config, self.tasks, self._event, secrets)
        samples = [Sample(row.id, row.inputs, row.task) for row in remote.samples()]
        live = _Live(view, scheduler, asyncio.create_task(scheduler.run(samples, {})))
        live.runner.add_done_callback(lambda _: live.finished.put_nowait(None))
        self._live = live

    async def _start_metrics(self) -> RequestObserver | None:
        """Register (and serve) the metrics first: a port in use stops the run before it
        writes anything; they stay until the run's resources are closed."""
        if self._metrics_config is None:
            return None
        metrics = RunMetrics(
            self._metrics_config, run=self.run_dir.name, statistics=self._live_statistics
        )
        self._metrics = await self._stack.enter_async_context(metrics)
        return metrics.observe

    def _live_statistics(self) -> RunStatistics | None:
        return self._live.scheduler.statistics() if self._live is not None else None

    async def _generators(self, store: RunStore) -> list[Generator]:
        if self._parts.generators:
            return list(self._parts.generators)
        if not self.config.generator:
            raise ConfigError(
                "no generator: this run was made with generator objects, which are not "
                "saved; pass `generator` again"
            )
        batch = self.config.batch
        return [
            await self._stack.enter_async_context(
                OpenAIGenerator(settings)
                if batch is None
                else OpenAIBatchGenerator(settings, batch, journal=store)
            )
            for settings in self.config.generator
        ]

    async def _objective(
        self, retrier: Retrier, on_request: RequestObserver | None, task: Task
    ) -> Objective:
        """`task`'s objective; each task of the run has its own (and its own cache)."""
        spec = task.objective
        if isinstance(spec, EmbeddingSpec):
            scorer = await self._scorer(retrier, task.name)
            return EmbeddingObjective(
                scorer,
                target=spec.target,
                concurrency=self.config.concurrency,
                retrier=retrier,
                on_request=on_request,
            )
        return RenderThenScore(
            renderer=await self._renderer(retrier),
            scorer=await self._media_scorer(spec, retrier),
            combine=WeightedSum(spec.weights),
            higher_is_better=spec.higher_is_better,
            in_flight=self.config.concurrency.score_in_flight,
            retrier=retrier,
        )

    async def _renderer(self, retrier: Retrier) -> Renderer:
        given = self._parts.renderer
        if given is not None and not isinstance(given, RendererSettings):
            return given
        if self.config.renderer is None:
            raise ConfigError(
                f"task {self.task.name!r} renders its candidates; pass `renderer` "
                "(RendererSettings for a Triton model or an images API, or your own Renderer)"
            )
        renderer = self.config.renderer.build()
        await retrier.call(renderer.open)  # servers still starting get the retry policy
        self._stack.push_async_callback(renderer.aclose)
        return renderer

    async def _media_scorer(self, spec: RenderSpec, retrier: Retrier) -> MediaScorer:
        """The caller's, or one built from the scorer settings by the task's terms."""
        if self._parts.media_scorer is not None:
            return self._parts.media_scorer
        settings = self.config.scorer
        terms = set(spec.weights)
        if settings is None:
            raise ConfigError(
                f"task {self.task.name!r} scores renders; pass `scorer` (ScorerSettings) "
                "or `media_scorer`"
            )
        scorer: AlignmentScorer | TritonStyleScorer
        if terms == {"alignment"} and self.task.text_inputs:
            scorer = AlignmentScorer(settings, prompt_input=self.task.text_inputs[0])
        elif terms == {"style", "content"} and settings.style_model:
            scorer = TritonStyleScorer(
                settings.url,
                model=settings.style_model,
                protocol=settings.protocol,
                timeout=settings.timeout,
            )
        elif terms == {"style", "content"}:
            raise ConfigError(
                f"task {self.task.name!r} is scored by a style/content loss model; pass "
                "`style_model` in the scorer settings"
            )
        else:
            raise ConfigError(
                f"no built-in scorer gives the terms {sorted(terms)} of task "
                f"{self.task.name!r}; pass `media_scorer`"
            )
        await retrier.call(scorer.open)
        self._stack.push_async_callback(scorer.aclose)
        return scorer

    async def _scorer(self, retrier: Retrier, task: str) -> Scorer:
        given = self._parts.scorer
        if isinstance(given, Mapping):
            given = given.get(task)
        if given is not None and not isinstance(given, ScorerSettings):
            return given
        settings = self.config.scorer_for(task)
        if settings is None:
            raise ConfigError(
                f"no scorer{f' for task {task!r}' if len(self.tasks) > 1 else ''}: pass "
                "`scorer` (ScorerSettings for a Triton encoder pair, or your own Scorer)"
            )
        scorer = settings.build()
        # Servers that are still starting get the same retry policy as every other call.
        await retrier.call(scorer.open)
        self._stack.push_async_callback(scorer.aclose)
        return scorer

    def _event(self, event: Event) -> None:
        if isinstance(event, SampleFinished):
            assert self._live is not None
            self._live.finished.put_nowait(event)
        self._log_progress()
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:  # a caller's display must not stop the run
                log.exception("event_callback_failed", event=type(event).__name__)

    def _log_progress(self) -> None:
        """A `progress` line in log.jsonl at most every PROGRESS_LOG_S while steps commit:
        the run's history (the adaptive generator limit over time, for `mils report`)."""
        now = time.monotonic()
        if self._live is None or now - self._progress_logged < PROGRESS_LOG_S:
            return
        self._progress_logged = now
        stats = self._live.scheduler.statistics()
        log.info(
            "progress",
            done=stats.done,
            failed=stats.failed,
            steps=stats.steps,
            gen_in_flight=stats.generator_in_flight,
            gen_limit=stats.generator_limit,
            gen_waiting=stats.generator_waiting,
            score_queued=stats.score_queued,
        )

    # -- using it ------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[SampleResult]:
        return self._results()

    async def _results(self) -> AsyncIterator[SampleResult]:
        live = self._opened()
        while (event := await live.finished.get()) is not None:
            row = await asyncio.to_thread(live.store.result, event.sample_id)
            result = SampleResult._from_row(row, self.run_dir)
            yield replace(result, status=event.status) if event.status != result.status else result
        await self.wait()

    async def wait(self) -> RunSummary:
        """Wait for the run to end and return its summary.

        Raises:
            MilsError: the run stopped on an error that concerns it whole (a bad setting,
                a scorer that cannot embed the pool, an unwritable run directory).
        """
        live = self._opened()
        try:
            self.summary = await asyncio.shield(live.runner)
        except BaseExceptionGroup as group:
            raise _unwrapped(group) from None
        return self.summary

    def cancel(self, sample_id: str | None = None) -> bool:
        """Stop one sample, or every sample when `sample_id` is None.

        Committed steps stay; stopped samples end with status "cancelled" and a resume
        continues them. Returns False when that sample is not running.
        """
        live = self._opened()
        if sample_id is None:
            live.scheduler.cancel_all()
            return True
        return live.scheduler.cancel_sample(sample_id)

    def statistics(self) -> RunStatistics:
        """A snapshot of the run's progress (samples, steps, requests in flight)."""
        return self._opened().scheduler.statistics()

    def _reshare(self, config: RunConfig, share: float, budget: Budget | None = None) -> None:
        """Take `config`'s share of the samples window, a fixed generator limit and each
        endpoint's rpm/tpm, `share` of the limits the endpoints' replies state, and
        `budget` (None: the one it has): a Ray shard worker's, at its start and when other
        shards have ended."""
        if (scheduler := self._local_scheduler()) is None:
            return
        rates = {
            g.endpoint: RateLimits(rpm=g.rpm, tpm=g.tpm, max_tokens=g.max_tokens)
            for g in config.generator
        }
        scheduler.reshare(config.concurrency, rates, share, budget)

    def _pause(self, endpoint: str, seconds: float) -> None:
        """Pause a generator endpoint for `seconds`, as its own 429 would: a Ray shard
        worker's, when another worker met the endpoint's rate limit."""
        if (scheduler := self._local_scheduler()) is not None:
            scheduler.pause(endpoint, seconds)

    def _local_scheduler(self) -> Scheduler | None:
        """The scheduler of the open run when it runs in this process (not on Ray)."""
        live = self._live
        return (
            live.scheduler if live is not None and isinstance(live.scheduler, Scheduler) else None
        )

    @property
    def metrics_url(self) -> str | None:
        """Where the run's Prometheus metrics are served while it is open
        ("http://127.0.0.1:PORT/metrics"), or None (no `port` in `metrics`, or not open)."""
        return self._metrics.url if self._metrics is not None else None

    def _opened(self) -> _Live:
        if self._live is None:
            raise ConfigError("the run is not open; use `async with mils.open_run(...) as run`")
        return self._live


def _split_generators(
    arg: GeneratorArg,
) -> tuple[tuple[GeneratorSettings, ...], tuple[Generator, ...]]:
    items = [arg] if isinstance(arg, GeneratorSettings) or not isinstance(arg, Sequence) else arg
    if not items:
        raise ConfigError("`generator` is empty; pass at least one generator endpoint")
    settings = tuple(item for item in items if isinstance(item, GeneratorSettings))
    objects = tuple(item for item in items if not isinstance(item, GeneratorSettings))
    if settings and objects:
        raise ConfigError("`generator` mixes settings and objects; pass one kind")
    return settings, objects


def _samples(task: Task, inputs: Iterable[InputArg]) -> list[Sample]:
    """One Sample per input; file sources made absolute, so a resume works from anywhere."""
    taken: set[str] = set()
    samples: list[Sample] = []
    names = [spec.name for spec in task.inputs]
    files = {spec.name for spec in task.inputs if spec.kind is not InputKind.TEXT}

    def absolute(sources: Mapping[str, str]) -> dict[str, str]:
        return {k: os.path.abspath(v) if k in files else v for k, v in sources.items()}

    for item in inputs:
        if isinstance(item, Sample):
            sample = Sample(item.id, absolute(item.inputs))
            taken.add(item.id)
        elif isinstance(item, Mapping):
            first = item.get(names[0], next(iter(item.values()), "sample"))
            sample = Sample(sample_id_for(first, taken), absolute(item))
        else:
            if len(names) != 1:
                raise ConfigError(
                    f"task {task.name!r} takes {len(names)} inputs per sample ({names}); "
                    "pass each sample as a mapping of input name to source"
                )
            sample = Sample(sample_id_for(item, taken), absolute({names[0]: os.fspath(item)}))
        unknown = sorted(set(sample.inputs) - set(names))
        missing = sorted(set(names) - set(sample.inputs))
        if unknown or missing:
            raise ConfigError(
                f"sample {sample.id!r} has inputs {sorted(sample.inputs)}; task "
                f"{task.name!r} takes {names}"
            )
        samples.append(sample)
    if not samples:
        raise ConfigError("no inputs; pass `inputs` (files, or mappings of input name to source)")
    if len({s.id for s in samples}) != len(samples):
        raise ConfigError("sample ids repeat; give each `Sample` its own id")
    return samples


def initial_pool(
    task: Task, pool: Sequence[str] | str | os.PathLike[str] | None
) -> tuple[list[str], int]:
    """The initial pool (stripped, non-empty, distinct texts) and how many lines repeated.

    Raises:
        ConfigError: the pool cannot work (unreadable, empty, one text repeated).
    """
    if pool is None and task.pool_file is None:
        return [], 0  # the samples start from their own texts (`Task.text_inputs`)
    if pool is None or isinstance(pool, (str, os.PathLike)):
        source = Path(pool) if pool is not None else task.pool_file
        assert source is not None
        try:
            lines = source.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(
                f"cannot read the initial pool {str(source)!r} ({reason}); pass `pool` "
                "with a UTF-8 text file, one text per line"
            ) from None
        where = str(source)
    else:
        lines, where = list(pool), "`pool`"
    lines = [line.strip() for line in lines if line.strip()]
    texts = list(dict.fromkeys(lines))
    if not texts:
        raise ConfigError(f"initial pool {where} has no text lines; pass `pool` with texts")
    if len(texts) == 1 and len(lines) > 1:
        raise ConfigError(
            f"initial pool {where} holds {len(lines)} lines but they are all the same text; "
            "pass `pool` with distinct texts"
        )
    return texts, len(lines) - len(texts)


_READERS: dict[InputKind, Callable[[], MediaReader]] = {
    InputKind.IMAGE: ImageReader,
    InputKind.VIDEO: VideoReader,
    InputKind.AUDIO: AudioReader,
    InputKind.TEXT: TextReader,
}


def _readers(task: Task) -> dict[str, MediaReader]:
    readers = {}
    for spec in task.inputs:
        if spec.kind not in _READERS:
            raise ConfigError(
                f"task {task.name!r} takes {spec.kind.value} input {spec.name!r}, which no "
                "reader handles yet"
            )
        readers[spec.name] = _READERS[spec.kind]()
    return readers


async def _export(store: RunStore) -> None:
    """Write results.jsonl; a failure (a full disk) is logged, not raised over the run's
    own outcome: the store keeps every result, and the next resume writes the file."""
    try:
        await asyncio.to_thread(store.export_results)
    except StoreError as exc:
        log.error("results_not_exported", error=str(exc))


REPLY_FORMATS_USED = "reply_formats_used"
"""The config.json section that says how each endpoint asked for "json" replies was asked
at the end of the last session: {endpoint: {"reply_format": "json" | "lines", "refusal":
the endpoint's answer to `response_format`, when it refused it}}. Beside the settings, not
among them: it is what happened, which `mils config show` and a resume do not repeat (a
resume asks the endpoint again)."""


async def _record_reply_formats(store: RunStore, generators: Sequence[Generator]) -> None:
    """Save which endpoints gave structured replies (`REPLY_FORMATS_USED`), when any was
    asked for them; a failure to write is logged, not raised over the run's outcome."""
    used = {
        g.endpoint: {"reply_format": g.reply_format}
        | ({"refusal": g.unstructured_reason} if g.unstructured_reason else {})
        for g in generators
        if isinstance(g, OpenAIGenerator) and g.settings.reply_format == "json"
    }
    if not used:
        return
    try:
        await asyncio.to_thread(store.update_config, REPLY_FORMATS_USED, used)
    except StoreError as exc:
        log.error("reply_formats_not_recorded", error=str(exc))


def _succeeded(task: asyncio.Task[Any]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


def _unwrapped(exc: BaseException) -> BaseException:
    """The engine's own error inside task-group wrapping, else `exc` itself."""
    if isinstance(exc, BaseExceptionGroup):
        matched, rest = exc.split(MilsError)
        if matched is not None and rest is None:
            leaf: BaseException = matched
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            return leaf
    return exc
