"""mils: run MILS at scale from Python or the command line.

MILS (Multimodal Iterative LLM Solver) lets a text-only LLM caption and generate media
with no training: a generator LLM proposes candidate texts, a pretrained scorer scores
them against the target, the best go back into the prompt, and the loop repeats.

    import mils

    async with mils.open_run(
        "image-caption",
        ["photos/cat.jpg"],
        generator=mils.GeneratorSettings(base_url="http://vllm:8000/v1", model="llama"),
        scorer=mils.ScorerSettings(url="triton:8001"),
        out="runs/cats",
    ) as run:
        async for result in run:
            print(result.sample_id, result.best_score, result.best_text)

The generation tasks take a renderer too: `mils.open_run("t2i-enhance", [{"prompt": ...}],
renderer=mils.RendererSettings(...), ...)`; `mils.arithmetic` composes captioning and
t2i-enhance (caption two inputs, merge the captions, render the result). With
`ray=mils.RaySettings(...)` a run's samples are sharded over Ray actors on one machine or a
cluster, committing to one run directory.

The packages below hold the parts: `mils.engine` (the loop and its orchestration),
`mils.adapters` (OpenAI-compatible generators, Triton scorers and renderers, media readers)
and `mils.tasks` (one module per MILS task).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from mils._api import Run, SampleResult, StepResult, load_run_config, open_run, resume_run
from mils._arithmetic import ArithmeticResult, arithmetic
from mils._config import RunConfig
from mils._metrics import MetricsConfig
from mils._ray import RaySettings
from mils.adapters import BatchSettings, GeneratorSettings, RendererSettings, ScorerSettings
from mils.engine import (
    Budget,
    ConcurrencyConfig,
    ConfigError,
    EndpointError,
    Event,
    InputError,
    LoopConfig,
    MilsError,
    RetryConfig,
    RunStatistics,
    RunSummary,
    Sample,
    SampleFinished,
    StepCommitted,
    StoreError,
    Usage,
    configure_logging,
)
from mils.tasks import TASKS, Task, get_task

try:
    __version__ = version("mils")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "TASKS",
    "ArithmeticResult",
    "BatchSettings",
    "Budget",
    "ConcurrencyConfig",
    "ConfigError",
    "EndpointError",
    "Event",
    "GeneratorSettings",
    "InputError",
    "LoopConfig",
    "MetricsConfig",
    "MilsError",
    "RaySettings",
    "RendererSettings",
    "RetryConfig",
    "Run",
    "RunConfig",
    "RunStatistics",
    "RunSummary",
    "Sample",
    "SampleFinished",
    "SampleResult",
    "ScorerSettings",
    "StepCommitted",
    "StepResult",
    "StoreError",
    "Task",
    "Usage",
    "arithmetic",
    "configure_logging",
    "get_task",
    "load_run_config",
    "open_run",
    "resume_run",
]
