"""`mils caption --dry-run`: what a run would send the generator, projected from its settings
before anything is sent. An estimate, and said to be one: the prompt is the task's own,
filled with `keep` texts of the initial pool (~4 characters per token); each reply is
taken as `requested` lines of ~`TOKENS_PER_CANDIDATE` tokens; every sample runs every step.
In batch mode each window of `samples_in_flight` samples sends one job per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TextIO

from mils._config import RunConfig
from mils.engine.prompt import build_continuation, build_messages
from mils.engine.usage import estimate_tokens
from mils.tasks import Task

__all__ = ["Projection", "print_projection", "project"]

TOKENS_PER_CANDIDATE = 20
"""Assumed completion tokens per requested candidate line."""


@dataclass(frozen=True, slots=True)
class Projection:
    """The projected generator requests of a run, their tokens and their cost."""

    samples: int
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost: float | None
    jobs: int | None = None
    """Batch API jobs (batch mode only)."""


def project(task: Task, samples: int, pool: list[str], config: RunConfig) -> Projection:
    """The projection of a run of `samples` samples with these settings."""
    loop = config.loop
    shown = [(0.5, text) for text in pool[: loop.keep]]
    modes = {g.prompt_mode for g in config.generator} or {"chat"}
    if "completion" in modes:
        prompt, _ = build_continuation(task, shown, higher_is_better=task.higher_is_better)
    else:
        messages = build_messages(
            task, shown, loop.requested, higher_is_better=task.higher_is_better
        )
        prompt = "\n".join(m["content"] for m in messages)
    requests = samples * loop.steps
    prompt_tokens = requests * estimate_tokens(prompt)
    completion_tokens = requests * loop.requested * TOKENS_PER_CANDIDATE
    return Projection(
        samples=samples,
        requests=requests,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost=config.budget.cost(prompt_tokens, completion_tokens),
        jobs=None
        if config.batch is None
        else loop.steps * math.ceil(samples / config.concurrency.samples_in_flight),
    )


def print_projection(p: Projection, out: TextIO) -> None:
    cost = (
        f", cost about {p.cost:.4f}"
        if p.cost is not None
        else " (pass --price-in and --price-out for a cost)"
    )
    out.write(
        f"dry run (an estimate; nothing was sent): {p.samples} samples -> {p.requests} "
        f"generator requests, about {p.prompt_tokens} prompt tokens and "
        f"{p.completion_tokens} completion tokens{cost}"
        + (f", in about {p.jobs} Batch API jobs" if p.jobs is not None else "")
        + "\n"
    )
