"""The MILS engine: the loop, its async orchestration, the run store and the CLI.

The engine knows the roles it talks to (`engine.protocols`) and its own errors
(`engine.errors`); the real backends live in `adapters/`, the tasks in `tasks/`.
"""

from __future__ import annotations

from engine.config import ConcurrencyConfig, LoopConfig, RetryConfig
from engine.errors import (
    ConfigError,
    EndpointError,
    EndpointUnavailable,
    InputError,
    InvalidResponse,
    MilsError,
    ModelNotReady,
    RetriesExhausted,
    RunLocked,
    StoreError,
)
from engine.optimizer import SampleOptimizer, StepPlan, StepRecord, rank
from engine.prompt import parse_candidates, render_prompt
from engine.protocols import ChatMessage, Generator, MediaReader, Scorer, TaskSpec
from engine.scheduler import RunSummary, Sample, Scheduler
from engine.store import RunStore

__all__ = [
    "ChatMessage",
    "ConcurrencyConfig",
    "ConfigError",
    "EndpointError",
    "EndpointUnavailable",
    "Generator",
    "InputError",
    "InvalidResponse",
    "LoopConfig",
    "MediaReader",
    "MilsError",
    "ModelNotReady",
    "RetriesExhausted",
    "RetryConfig",
    "RunLocked",
    "RunStore",
    "RunSummary",
    "Sample",
    "SampleOptimizer",
    "Scheduler",
    "Scorer",
    "StepPlan",
    "StepRecord",
    "StoreError",
    "TaskSpec",
    "parse_candidates",
    "rank",
    "render_prompt",
]
