"""The MILS engine: the loop, its async orchestration and the run store.

The engine knows the roles it talks to (`mils.engine.protocols`), how candidates get their
values (`mils.engine.objectives`) and its own errors (`mils.engine.errors`); it imports
neither the adapters nor the tasks. `mils` wires them together.
"""

from __future__ import annotations

from mils.engine.config import Budget, ConcurrencyConfig, LoopConfig, RateLimits, RetryConfig
from mils.engine.errors import (
    ConfigError,
    EndpointError,
    EndpointUnavailable,
    InputError,
    InvalidResponse,
    MilsError,
    ModelNotReady,
    RateLimitExceeded,
    RequestRefused,
    RetriesExhausted,
    RunLocked,
    StoreError,
)
from mils.engine.logs import configure_logging, get_logger
from mils.engine.objectives import (
    Artefact,
    EmbeddingObjective,
    Evaluation,
    Objective,
    ObjectiveStatistics,
    RenderThenScore,
    WeightedSum,
)
from mils.engine.observe import RequestObserved, RequestObserver
from mils.engine.optimizer import SampleOptimizer, StepPlan, StepRecord, rank
from mils.engine.prompt import parse_candidates, parse_reply, render_prompt
from mils.engine.protocols import (
    ChatMessage,
    Generator,
    MediaReader,
    MediaScorer,
    ProviderLimits,
    RateLimited,
    Renderer,
    Reply,
    Scorer,
    TaskSpec,
)
from mils.engine.retry import Retrier
from mils.engine.scheduler import (
    Event,
    Route,
    RunStatistics,
    RunSummary,
    Sample,
    SampleFinished,
    Scheduler,
    StepCommitted,
)
from mils.engine.store import RunStore
from mils.engine.usage import Usage

__all__ = [
    "Artefact",
    "Budget",
    "ChatMessage",
    "ConcurrencyConfig",
    "ConfigError",
    "EmbeddingObjective",
    "EndpointError",
    "EndpointUnavailable",
    "Evaluation",
    "Event",
    "Generator",
    "InputError",
    "InvalidResponse",
    "LoopConfig",
    "MediaReader",
    "MediaScorer",
    "MilsError",
    "ModelNotReady",
    "Objective",
    "ObjectiveStatistics",
    "ProviderLimits",
    "RateLimitExceeded",
    "RateLimited",
    "RateLimits",
    "RenderThenScore",
    "Renderer",
    "Reply",
    "RequestObserved",
    "RequestObserver",
    "RequestRefused",
    "Retrier",
    "RetriesExhausted",
    "RetryConfig",
    "Route",
    "RunLocked",
    "RunStatistics",
    "RunStore",
    "RunSummary",
    "Sample",
    "SampleFinished",
    "SampleOptimizer",
    "Scheduler",
    "Scorer",
    "StepCommitted",
    "StepPlan",
    "StepRecord",
    "StoreError",
    "TaskSpec",
    "Usage",
    "WeightedSum",
    "configure_logging",
    "get_logger",
    "parse_candidates",
    "parse_reply",
    "rank",
    "render_prompt",
]
