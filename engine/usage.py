"""Token accounting of generator requests, and the budget check made before each one.

Tokens come from the reply's `usage` (what the server counted). A server that sends none
(some llama.cpp builds, proxies) gets an estimate, about `CHARS_PER_TOKEN` characters per
token of the prompt and of the reply, and the request is counted as estimated, so a total
says how much of it is a guess. Sums are kept per step (the store's steps table), per
sample (results.jsonl) and per run (`RunSummary`).

A budget (`Budget`) counts the whole run directory: the committed steps of earlier
sessions plus this session's requests. Requests are counted when they are sent (so those
in flight count against `max_requests`); tokens and cost when replies arrive (so requests
in flight may carry a run past `max_tokens_total` or `max_cost` by their own tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mils.engine.config import Budget
from mils.engine.protocols import Reply

__all__ = ["CHARS_PER_TOKEN", "Usage", "budget_reached", "estimate_tokens", "reply_usage"]

CHARS_PER_TOKEN = 4
"""Characters per token of the estimate for replies without `usage` (English text)."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Generator requests and their tokens, summed."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated_requests: int = 0
    """Requests whose reply carried no `usage`: their tokens are estimates."""

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.requests + other.requests,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.estimated_requests + other.estimated_requests,
        )


def estimate_tokens(text: str) -> int:
    """About how many tokens `text` holds (`CHARS_PER_TOKEN` characters each)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def reply_usage(reply: Reply, prompt: str) -> Usage:
    """One request's usage: the server's counts, else estimates from `prompt` and the
    reply's text (marked estimated)."""
    if reply.prompt_tokens is not None and reply.completion_tokens is not None:
        return Usage(1, reply.prompt_tokens, reply.completion_tokens)
    return Usage(1, estimate_tokens(prompt), estimate_tokens(reply.text), estimated_requests=1)


def budget_reached(budget: Budget, spent: Usage, *, sending: int = 0) -> str | None:
    """Which limit of `budget` the run's spend has reached (named as `max_requests`), with
    what was spent; None while another request may be sent. `sending`: requests sent and
    not yet answered."""
    requests = spent.requests + sending
    if budget.max_requests is not None and requests >= budget.max_requests:
        return f"`max_requests` {budget.max_requests} reached: {requests} generator requests sent"
    if budget.max_tokens_total is not None and spent.tokens >= budget.max_tokens_total:
        return (
            f"`max_tokens_total` {budget.max_tokens_total} reached: {spent.tokens} tokens "
            f"({spent.prompt_tokens} prompt, {spent.completion_tokens} completion)"
        )
    cost = budget.cost(spent.prompt_tokens, spent.completion_tokens)
    if budget.max_cost is not None and cost is not None and cost >= budget.max_cost:
        return f"`max_cost` {budget.max_cost:g} reached: {cost:.4f} spent on {spent.tokens} tokens"
    return None
