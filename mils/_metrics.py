"""A run's Prometheus metrics: a collector over `Run.statistics()`, and an HTTP server.

The engine knows nothing of Prometheus. It offers a snapshot (`RunStatistics`: counts,
requests in flight, limits) and, for the latency histograms, an observer called once per
endpoint attempt (`mils.engine.observe`). This module turns both into metrics:

- the snapshot is read at scrape time by a custom collector, so counters and gauges cost
  nothing between scrapes and every value of one scrape comes from one snapshot. Scrapes
  arrive on the HTTP server's thread; the snapshot is taken on the run's event loop (the
  engine is single-threaded), which the scrape waits for;
- observations feed two histograms and a requests counter (prometheus_client's own,
  thread-safe objects, owned by the collector and not registered anywhere else).

Every metric carries a `run` label (the run directory's name). The metrics live in a
private registry per run unless the caller passes their own, and leave it when the run ends;
one registry holds one open run's metrics at a time. The server, when a port is given,
serves that registry and stops when the run ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from mils.engine import ConfigError, RequestObserved, RunStatistics
from mils.engine.logs import get_logger

__all__ = ["DEFAULT_METRICS_HOST", "METRIC_NAMES", "MetricsConfig", "RunMetrics"]

log = get_logger(__name__)

DEFAULT_METRICS_HOST = "127.0.0.1"
SNAPSHOT_TIMEOUT_S = 5.0
"""How long a scrape waits for the event loop to take the snapshot (a blocked loop)."""
GENERATOR_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, float("inf"))
SCORER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

Statistic = Callable[[RunStatistics], float]

# name (without _total), help, value: one sample each, labelled `run` only.
_COUNTERS: tuple[tuple[str, str, Statistic], ...] = (
    ("mils_steps_committed", "Steps committed (one transaction each).", lambda s: s.steps),
    (
        "mils_candidates_scored",
        "New candidates scored and committed with their steps.",
        lambda s: s.candidates_scored,
    ),
    ("mils_texts_embedded", "Texts sent to the scorer.", lambda s: s.texts_evaluated),
    (
        "mils_embedding_cache_hits",
        "Texts whose embedding came from the run's cache (or was already on its way).",
        lambda s: s.cache_hits,
    ),
    (
        "mils_embedding_cache_misses",
        "Texts the embedding cache did not hold, queued for the scorer.",
        lambda s: s.cache_misses,
    ),
    ("mils_retries", "Endpoint calls retried after a transient fault.", lambda s: s.retries),
)
_GAUGES: tuple[tuple[str, str, Statistic], ...] = (
    (
        "mils_samples",
        "Samples this run works on (those already done before a resume not counted).",
        lambda s: s.total,
    ),
    ("mils_scorer_batches_in_flight", "Scorer batches in flight.", lambda s: s.score_in_flight),
    ("mils_scorer_queued_texts", "Texts waiting for a scorer batch.", lambda s: s.score_queued),
)
# Per generator endpoint, from its limiter's statistics.
_ENDPOINT_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("mils_generator_in_flight", "Requests in flight to the generator endpoint.", "in_flight"),
    (
        "mils_generator_limit",
        "Most requests in flight allowed to the endpoint (adaptive unless fixed).",
        "limit",
    ),
    ("mils_generator_waiting", "Requests waiting for a slot at the endpoint.", "waiting"),
)
_STATUSES = ("done", "failed", "cancelled")

METRIC_NAMES = (
    "mils_samples_finished_total",
    *(f"{name}_total" for name, _, _ in _COUNTERS),
    "mils_endpoint_faults_total",
    "mils_requests_total",
    "mils_generator_request_duration_seconds",
    "mils_scorer_batch_duration_seconds",
    *(name for name, _, _ in _GAUGES),
    *(name for name, _, _ in _ENDPOINT_GAUGES),
)
"""Every metric a run exposes (histograms by their base name)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsConfig:
    """Where a run's Prometheus metrics go: served over HTTP, added to your registry, or both.

    Not saved with the run: pass it again to `resume_run`.
    """

    port: int | None = None
    """Serve the metrics over HTTP on this port while the run is open (0: a free port, see
    `Run.metrics_url`); None: no server."""
    host: str = DEFAULT_METRICS_HOST
    """Address the server binds: loopback by default; "0.0.0.0" lets other machines (or
    the host of a container) scrape it."""
    registry: CollectorRegistry | None = None
    """Your own registry to add the run's metrics to (they leave it when the run ends);
    default: a private one per run."""

    def __post_init__(self) -> None:
        if self.port is None and self.registry is None:
            raise ConfigError(
                "metrics need a `port` to be served on, or a `registry` of yours to join"
            )
        if self.port is not None and not 0 <= self.port <= 65535:
            raise ConfigError(
                f"metrics port {self.port} is out of range; pass a `port` in 1-65535 "
                "(0 picks a free one)"
            )


class _RunCollector(Collector):
    """Yields a run's metrics at scrape time (any thread)."""

    def __init__(self, run: str, snapshot: Callable[[], RunStatistics | None]) -> None:
        self._run = run
        self._snapshot = snapshot
        labels = ("run", "endpoint")
        self.generator_latency = Histogram(
            "mils_generator_request_duration_seconds",
            "Duration of one request to a generator endpoint (each retry on its own).",
            labels,
            registry=None,
            buckets=GENERATOR_BUCKETS,
        )
        self.scorer_latency = Histogram(
            "mils_scorer_batch_duration_seconds",
            "Duration of one text batch sent to the scorer (each retry on its own).",
            labels,
            registry=None,
            buckets=SCORER_BUCKETS,
        )
        self.requests = Counter(
            "mils_requests",
            "Requests to endpoints by role (generator, scorer) and outcome: ok, a transient "
            "fault's kind (retried), or error.",
            ("run", "role", "endpoint", "outcome"),
            registry=None,
        )

    def observe(self, seen: RequestObserved) -> None:
        latency = self.generator_latency if seen.role == "generator" else self.scorer_latency
        latency.labels(self._run, seen.endpoint).observe(seen.seconds)
        self.requests.labels(self._run, seen.role, seen.endpoint, seen.outcome).inc()

    def describe(self) -> Iterable[Metric]:
        # Names only: a registry checks them for clashes without taking a snapshot.
        for metric in self._observed:
            yield from metric.describe()
        yield from self._families(None)

    def collect(self) -> Iterable[Metric]:
        for metric in self._observed:
            yield from metric.collect()
        yield from self._families(self._snapshot())

    @property
    def _observed(self) -> tuple[Histogram | Counter, ...]:
        return (self.generator_latency, self.scorer_latency, self.requests)

    def _families(self, stats: RunStatistics | None) -> Iterator[Metric]:
        run = self._run
        finished = CounterMetricFamily(
            "mils_samples_finished", "Samples that ended, by status.", labels=("run", "status")
        )
        faults = CounterMetricFamily(
            "mils_endpoint_faults",
            "Transient endpoint faults (each retry, and each call that ran out of retries), "
            "by kind.",
            labels=("run", "kind"),
        )
        per_run: list[tuple[CounterMetricFamily | GaugeMetricFamily, Statistic]] = [
            *((CounterMetricFamily(n, h, labels=("run",)), v) for n, h, v in _COUNTERS),
            *((GaugeMetricFamily(n, h, labels=("run",)), v) for n, h, v in _GAUGES),
        ]
        per_endpoint = [
            (GaugeMetricFamily(n, h, labels=("run", "endpoint")), field)
            for n, h, field in _ENDPOINT_GAUGES
        ]
        if stats is not None:
            for status in _STATUSES:
                finished.add_metric((run, status), getattr(stats, status))
            for kind, count in sorted(stats.faults.items()):
                faults.add_metric((run, kind), count)
            for family, value in per_run:
                family.add_metric((run,), value(stats))
            for gauge, field in per_endpoint:
                for limiter in stats.endpoints:
                    gauge.add_metric((run, limiter.endpoint), getattr(limiter, field))
        yield finished
        yield faults
        yield from (family for family, _ in per_run)
        yield from (gauge for gauge, _ in per_endpoint)


class RunMetrics:
    """One run's metrics, registered (and served) while the run is open.

    An async context manager, entered by `Run` when it opens (before it writes anything,
    so a port in use stops it cleanly) and left when it ends.

    Args:
        config: where the metrics go.
        run: the value of every metric's `run` label.
        statistics: the run's snapshot, or None before the run has started.
    """

    def __init__(
        self,
        config: MetricsConfig,
        *,
        run: str,
        statistics: Callable[[], RunStatistics | None],
    ) -> None:
        self._config = config
        self._statistics = statistics
        self._collector = _RunCollector(run, self._snapshot)
        self._registry = config.registry or CollectorRegistry()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str | None:
        """The metrics' address while they are served, else None."""
        if self._server is None:
            return None
        host = self._config.host
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self._server.server_port}/metrics"

    def observe(self, observation: RequestObserved) -> None:
        """Take one request's duration and outcome (a `mils.engine.RequestObserver`)."""
        self._collector.observe(observation)

    async def __aenter__(self) -> RunMetrics:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._register()
        if self._config.port is not None:
            try:
                self._server, self._thread = _serve(
                    self._registry, self._config.host, self._config.port
                )
            except BaseException:
                self._registry.unregister(self._collector)
                raise
            log.info("metrics_served", url=self.url)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._server is not None:
                # shutdown() waits for the serving loop's next poll (up to half a second).
                await asyncio.to_thread(self._stop_server)
        finally:
            self._registry.unregister(self._collector)

    def _register(self) -> None:
        try:
            self._registry.register(self._collector)
        except ValueError:  # prometheus_client: "Duplicated timeseries in CollectorRegistry"
            raise ConfigError(
                "the metrics `registry` already holds metrics named as a run's (another open "
                "run's, or your own); pass another `registry`: one per open run"
            ) from None

    def _stop_server(self) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = self._thread = None

    def _snapshot(self) -> RunStatistics | None:
        """The run's statistics, taken on its event loop whatever thread scrapes."""
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread or loop.is_closed():
            return self._statistics()  # no other thread can be changing the run
        future: concurrent.futures.Future[RunStatistics | None] = concurrent.futures.Future()

        def take() -> None:
            try:
                future.set_result(self._statistics())
            except BaseException as exc:
                future.set_exception(exc)

        try:
            loop.call_soon_threadsafe(take)
            return future.result(timeout=SNAPSHOT_TIMEOUT_S)
        except (RuntimeError, TimeoutError):  # the loop closed, or is blocked
            log.warning("metrics_snapshot_unavailable", timeout_s=SNAPSHOT_TIMEOUT_S)
            return None


def _serve(
    registry: CollectorRegistry, host: str, port: int
) -> tuple[WSGIServer, threading.Thread]:
    """Start prometheus_client's HTTP server on its own thread.

    Raises:
        ConfigError: the address cannot be bound (port in use, no such host).
    """
    try:
        return start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"metrics port {port} on {host} is in use by another program; pass another "
                "`port` (0 picks a free one), or stop the program that holds it"
            ) from None
        raise ConfigError(
            f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}); pass another "
            "`host` or `port`"
        ) from None
