"""A load-model OpenAI-compatible LLM server: real HTTP, synthetic latency.

It models an LLM server with continuous batching (vLLM, TGI): `capacity` requests decode at
once, each in its own slot; a request holds a slot for

    prefill_ms / 1000 + completion_tokens / decode_tokens_per_s

seconds, and requests beyond `capacity` queue (FIFO) for a free slot. So throughput rises
with concurrency up to `capacity`, after which only latency grows. The slot time is slept,
not computed: on a 2-core machine the client and the servers share the CPU, and the model
must not steal it.

The reply is a numbered list of candidate lines, deterministic given (seed, the prompt, how
many earlier requests had the same prompt, the line index), drawn from caption word lists:
most lines vary one of the best candidates the prompt shows (a few words swapped, as an LLM
optimiser would), the rest are fresh, so texts are varied and mostly unique. The
number of lines is the N of "Write N new ..." in the prompt (else the last "N" before
"new"/"captions", else `--default-lines`); `completion_tokens` is 1.3 x the reply's words.

Endpoints:
    GET  /v1/models             the one served model
    POST /v1/chat/completions   non-streaming chat completion with `usage`
    GET  /stats                 requests, prompt_tokens and completion_tokens (the sums of
                                the replies' `usage`), busy_slot_seconds, capacity, ...
    /v1/files, /v1/batches      the OpenAI Batch API; each line is answered by the chat
                                endpoint above (`benchmarks.batch_api`)
    /v1/images/generations,     the OpenAI images API on the closed world's renderer and
    /v1/images/edits            editor, with its own latency and faults
                                (`benchmarks.image_server`)

Hosted-API faults (`LLMFaults`, for tests), as a gateway such as LiteLLM answers them:
    a rate limit    at most N chat requests per fixed window of W seconds; the others get
                    HTTP 429, carrying the time to the window's end in `Retry-After`, in
                    LiteLLM's `llm_provider-retry-after`, or in no header
    a refusal       every chat request gets one fixed client error (e.g. 400 with
                    LiteLLM's "Invalid model name passed in model=...")
    transient 500s  a fraction of the chat requests past the limits get HTTP 500, spread
                    evenly (`error_rate`)
    no usage        replies carry no `usage` (as some servers and proxies send them)
    provider limits requests and tokens per minute, as a hosted API enforces and states
                    them: token buckets holding `limit_burst_s` seconds' worth; a request
                    past either gets 429 (with the wait in the retry header), and every
                    reply carries OpenAI's `x-ratelimit-limit-*`, `-remaining-*` and
                    `-reset-*` headers (of requests and tokens)
    no structured   a request with `response_format` gets a fixed error status (e.g. 400),
    replies         as from a server that does not support structured replies
/stats counts them (`rate_limited`, `refused`, `failed`, `structured_refused`) beside the requests
served. It also says when the first and the last chat request arrived (`first_request_at`,
`last_request_at`, the server's monotonic clock), and with `?arrivals=1` lists the chat
requests' arrival times and tokens (`arrivals`: [[t, prompt + completion tokens, status]],
the last `ARRIVALS_KEPT`),
so a test can measure the request and token rates at the server.

A request with `response_format` (a `json_schema` or `json_object`) is answered with the same
candidates as JSON content, `{"candidates": [...]}` (cut off mid-list, unclosed, when
`max_tokens` stops it); /stats counts them as `structured`.

Run it:  python -m benchmarks.llm_server --port 8000 --capacity 32 --prefill-ms 40 \
             --decode-tokens-per-s 2000 --seed 0
or start it from Python with `LoadLLMServer(...)` (a managed subprocess on a free port).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import math
import os
import random
import re
import sys
import tempfile
import time
import urllib.request
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from benchmarks.batch_api import BatchOptions, add_batch_api
from benchmarks.image_server import ImageOptions, _due, add_images_api
from mils.adapters.local_stack import HOST, ManagedServer, free_port

__all__ = [
    "ARRIVALS_KEPT",
    "DEFAULT_CAPACITY",
    "DEFAULT_DECODE_TOKENS_PER_S",
    "DEFAULT_LINES",
    "DEFAULT_PREFILL_MS",
    "IMAGE_API_KEY_ENV",
    "LLMCostModel",
    "LLMFaults",
    "LLMStats",
    "LoadLLMServer",
    "candidate_lines",
    "lines_requested",
    "make_app",
    "shown_texts",
]

DEFAULT_CAPACITY = 32
DEFAULT_PREFILL_MS = 40.0
DEFAULT_DECODE_TOKENS_PER_S = 2000.0
DEFAULT_LINES = 50
DEFAULT_MODEL = "load-llm"
TOKENS_PER_WORD = 1.3
MAX_LINES = 500
ARRIVALS_KEPT = 100_000
IMAGE_API_KEY_ENV = "MILS_IMAGE_SERVER_API_KEY"
"""The environment variable the server reads the images API's required key from."""
"""Chat requests whose arrival /stats?arrivals=1 lists (the latest): a benchmark's millions
of requests must not grow the server without bound."""

_WRITE_N = re.compile(r"\bwrite\s+(\d{1,4})\b", re.IGNORECASE)
_SHOWN = re.compile(r"^\s*[-+]?\d*\.\d+:\s*(.+)$", re.MULTILINE)
_VARIED_FROM = 10
"""Lines are varied from the best this many shown candidates."""
_VARY_SHARE = 0.7
"""Share of lines that vary a shown candidate (the rest are fresh)."""
_N_NEW = re.compile(r"\b(\d{1,4})\s+(?:new|more|captions|candidates|prompts)\b", re.IGNORECASE)


def _words(text: str, sep: str | None = None) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(sep))


# Caption vocabulary: a line is "<det> <adj> <subject> <action> <place>, <detail>".
_ADJ = _words(
    "red blue green yellow orange purple black white grey brown golden silver pink "
    "small large tiny huge old young bright dark shiny wet dusty fluffy striped "
    "spotted wooden metal glass stone quiet busy lonely happy sleepy curious"
)
_SUBJECT = _words(
    "cat dog horse bird child woman man bicycle car bus train boat kite clock "
    "tree flower house bridge tower lighthouse mountain river lake beach street "
    "market kitchen table chair book lamp cup plate pizza cake apple banana "
    "guitar piano astronaut rocket robot coffee camera motorcycle umbrella"
)
_ACTION = _words(
    "sitting standing running jumping resting sleeping waiting floating flying "
    "leaning parked lying walking glowing reflecting hanging growing spinning"
)
_PLACE = _words(
    "on a wooden table|in a sunny park|near the sea|under a cloudy sky|in a busy city "
    "street|beside a quiet lake|on a snowy hill|in a dim room|at the train station|on "
    "a sandy beach|in a green field|inside a small cafe|against a brick wall|on a "
    "rooftop at dusk|in the desert|by an open window",
    "|",
)
_DETAIL = _words(
    "soft morning light|harsh shadows|shallow depth of field|wide angle view|seen "
    "from above|close up|in black and white|warm colours|cool tones|high contrast|"
    "blurred background|long exposure|film grain|golden hour|overcast light|studio "
    "lighting|vivid colours|muted pastel colours",
    "|",
)
_SWAPS = _ADJ + _SUBJECT + _ACTION


@dataclass(frozen=True, slots=True, kw_only=True)
class LLMCostModel:
    """How long a request holds a slot, and how many slots there are."""

    capacity: int = DEFAULT_CAPACITY
    """Requests decoding at once (continuous-batching slots); more wait in a FIFO queue."""
    prefill_ms: float = DEFAULT_PREFILL_MS
    """Fixed time per request before its first token."""
    decode_tokens_per_s: float = DEFAULT_DECODE_TOKENS_PER_S
    """Decode rate of one slot."""
    seed: int = 0
    """Seeds the candidate lines."""
    default_lines: int = DEFAULT_LINES
    """Lines in a reply when the prompt asks for no number."""
    model: str = DEFAULT_MODEL
    """Name reported on /v1/models."""

    def __post_init__(self) -> None:
        if self.capacity < 1 or self.prefill_ms < 0 or self.decode_tokens_per_s <= 0:
            raise ValueError(
                f"need capacity >= 1, prefill_ms >= 0, decode_tokens_per_s > 0; got {self}"
            )

    def slot_seconds(self, completion_tokens: int) -> float:
        """Time one request holds its slot."""
        return self.prefill_ms / 1000.0 + completion_tokens / self.decode_tokens_per_s


RETRY_HEADERS = ("retry-after", "llm_provider-retry-after", "none")
"""Where a 429 says how long to wait: the standard header, LiteLLM's prefixed copy of its
provider's, or nowhere."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LLMFaults:
    """The faults of a hosted API behind a gateway: a rate limit, a refusal of everything."""

    rate_limit: int = 0
    """Chat requests served per window; the rest get 429 until it ends (0: no limit)."""
    rate_window_s: float = 60.0
    """Length of a rate-limit window (a fixed window from its first request, as an RPM limit)."""
    retry_header: str = "retry-after"
    """The header a 429 carries the wait in (whole seconds to the window's end): one of
    `RETRY_HEADERS`."""
    refuse_status: int = 0
    """Answer every chat request with this HTTP status (0: none)."""
    error_rate: float = 0.0
    """Fraction of chat requests answered HTTP 500, spread evenly (every 1/rate-th): the
    transient faults of a loaded server or gateway, 0 to 1."""
    refuse_message: str = ""
    """The error message of a refusal."""
    no_usage: bool = False
    """Replies carry no `usage` (/stats still counts the tokens)."""
    refuse_structured: int = 0
    """Answer every chat request that carries `response_format` with this HTTP status, as a
    server that does not support structured replies (0: answer it in JSON)."""
    rpm: int = 0
    """Requests per minute the server enforces and states in `x-ratelimit-*` headers (0: none)."""
    tpm: int = 0
    """Prompt plus completion tokens per minute, likewise (0: none)."""
    limit_burst_s: float = 60.0
    """Seconds' worth of `rpm` and `tpm` a full bucket holds (60: a minute's burst; a
    provider that enforces "600 a minute" as 10 a second: 1)."""

    def __post_init__(self) -> None:
        if self.rate_limit < 0 or self.rate_window_s <= 0 or self.retry_header not in RETRY_HEADERS:
            raise ValueError(f"need rate_limit >= 0, rate_window_s > 0, a known header: {self}")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"need error_rate within [0, 1]: {self}")
        if self.rpm < 0 or self.tpm < 0 or self.limit_burst_s <= 0:
            raise ValueError(f"need rpm >= 0, tpm >= 0, limit_burst_s > 0: {self}")
        for status in (self.refuse_status, self.refuse_structured):
            if status and not 400 <= status < 600:
                raise ValueError(f"refusals must be HTTP error statuses, got {self}")


class _RateWindow:
    """A fixed-window request limit: `limit` requests from a window's first one, then 429s."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self.started = -math.inf
        self.admitted = 0

    def admit(self) -> float | None:
        """None when the request may go; else the seconds until the window ends."""
        now = time.monotonic()
        if now - self.started >= self.window_s:
            self.started, self.admitted = now, 0
        if self.admitted < self.limit:
            self.admitted += 1
            return None
        return self.started + self.window_s - now


class _Bucket:
    """One provider limit: `per_minute` units, a bucket of `burst_s` seconds' worth, full at
    the start. A request goes while the bucket holds `need` (1 request; a tokens bucket
    only needs to be out of debt, since a request's tokens are known after it is admitted)."""

    def __init__(self, per_minute: int, burst_s: float) -> None:
        self.per_minute, self.rate = per_minute, per_minute / 60.0
        self.capacity = self.level = max(1.0, self.rate * burst_s)
        self.stamp = time.monotonic()

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait(self, need: float) -> float:
        """Seconds until the bucket holds `need` (0: it does)."""
        return max(0.0, (need - self.level) / self.rate)

    def headers(self, kind: str) -> dict[str, str]:
        return {
            f"x-ratelimit-limit-{kind}": str(self.per_minute),
            f"x-ratelimit-remaining-{kind}": str(max(0, math.floor(self.level))),
            f"x-ratelimit-reset-{kind}": f"{(self.capacity - self.level) / self.rate:.3f}s",
        }


class _ProviderLimits:
    """Requests and tokens per minute as a hosted API enforces and states them."""

    def __init__(self, faults: LLMFaults) -> None:
        burst = faults.limit_burst_s
        self.requests = _Bucket(faults.rpm, burst) if faults.rpm else None
        self.tokens = _Bucket(faults.tpm, burst) if faults.tpm else None

    def admit(self) -> float | None:
        """None when a request may go (its request drawn); else the seconds to wait."""
        now = time.monotonic()
        for bucket in (self.requests, self.tokens):
            if bucket is not None:
                bucket.refill(now)
        wait = max(
            self.requests.wait(1.0) if self.requests is not None else 0.0,
            self.tokens.wait(1e-9) if self.tokens is not None else 0.0,
        )
        if wait > 0:
            return wait
        if self.requests is not None:
            self.requests.level -= 1
        return None

    def charge(self, tokens: int) -> None:
        if self.tokens is not None:
            self.tokens.level -= tokens

    def headers(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for kind, bucket in (("requests", self.requests), ("tokens", self.tokens)):
            if bucket is not None:
                found.update(bucket.headers(kind))
        return found


@dataclass(slots=True)
class LLMStats:
    """The server's own accounting (what /stats returns)."""

    capacity: int
    started_at: float = field(default_factory=time.time)
    requests: int = 0
    busy_slot_seconds: float = 0.0
    completion_tokens: int = 0
    prompt_tokens: int = 0
    in_flight: int = 0
    queued: int = 0
    peak_concurrency: int = 0
    peak_queued: int = 0
    rate_limited: int = 0
    """Chat requests answered 429 (`LLMFaults.rate_limit`)."""
    refused: int = 0
    """Chat requests answered with `LLMFaults.refuse_status`."""
    failed: int = 0
    """Chat requests answered 500 (`LLMFaults.error_rate`)."""
    structured: int = 0
    """Chat requests with `response_format` answered with JSON content."""
    structured_refused: int = 0
    """Chat requests with `response_format` answered with `LLMFaults.refuse_structured`."""
    first_request_at: float | None = None
    """When the first chat request arrived (the server's `time.monotonic()`)."""
    last_request_at: float | None = None
    """When the last chat request arrived (the server's `time.monotonic()`)."""


def lines_requested(prompt: str, default: int = DEFAULT_LINES) -> int:
    """How many candidates the prompt asks for: "Write N ...", else "N new ...", else default."""
    found = _WRITE_N.findall(prompt) or _N_NEW.findall(prompt)
    n = int(found[-1]) if found else default
    return max(1, min(n, MAX_LINES))


def shown_texts(prompt: str) -> list[str]:
    """The candidates a MILS prompt shows ("0.412: text" lines), in prompt order."""
    return [m.group(1).strip() for m in _SHOWN.finditer(prompt)]


def candidate_lines(prompt: str, n: int, seed: int, occurrence: int = 0) -> list[str]:
    """`n` caption lines, each a deterministic function of (seed, prompt, occurrence, index).

    Like an LLM optimiser, most lines vary one of the best candidates the prompt shows (the
    last ones: MILS lists them worst first) by swapping a few words, so scores can improve
    from step to step; the rest are fresh. `occurrence` counts earlier requests with the
    same prompt: a sampling LLM does not repeat itself word for word.
    """
    key = f"{seed}\0{occurrence}\0{prompt}".encode()
    digest = hashlib.blake2b(key, digest_size=8).hexdigest()
    best = shown_texts(prompt)[-_VARIED_FROM:]
    return [_line(random.Random(f"{digest}:{i}"), best) for i in range(n)]


def _line(rng: random.Random, best: Sequence[str] = ()) -> str:
    if best and rng.random() < _VARY_SHARE:
        return _vary(rng, rng.choice(best))
    return _fresh(rng)


def _vary(rng: random.Random, text: str) -> str:
    words = text.split()
    for _ in range(rng.randint(1, 3)):
        words[rng.randrange(len(words))] = rng.choice(_SWAPS)
    return " ".join(words)


def _fresh(rng: random.Random) -> str:
    det = rng.choice(("a", "the", "two", "an old photo of a", "a close view of a"))
    adjectives = " ".join(rng.sample(_ADJ, rng.randint(1, 3)))
    return (
        f"{det} {adjectives} {rng.choice(_SUBJECT)} {rng.choice(_ACTION)} "
        f"{rng.choice(_PLACE)}, {rng.choice(_DETAIL)}"
    )


def _tokens(text: str) -> int:
    return max(1, round(len(text.split()) * TOKENS_PER_WORD))


class _Slots:
    """`capacity` slots with FIFO waiting, and the accounting of their use."""

    def __init__(self, model: LLMCostModel) -> None:
        self.model = model
        self.stats = LLMStats(capacity=model.capacity)
        self._free = asyncio.Semaphore(model.capacity)

    async def hold(self, seconds: float) -> None:
        """Wait for a free slot, then hold it for `seconds`."""
        stats = self.stats
        stats.queued += 1
        stats.peak_queued = max(stats.peak_queued, stats.queued)
        try:
            await self._free.acquire()
        finally:
            stats.queued -= 1
        stats.in_flight += 1
        stats.peak_concurrency = max(stats.peak_concurrency, stats.in_flight)
        started = time.monotonic()
        try:
            await asyncio.sleep(seconds)
        finally:
            # Count what was held, also for a request cancelled by a client disconnect.
            stats.busy_slot_seconds += time.monotonic() - started
            stats.in_flight -= 1
            self._free.release()


def _completion(
    model: LLMCostModel, body: dict[str, Any], seen: dict[bytes, int]
) -> tuple[dict[str, Any], int]:
    """The reply JSON for one chat request, and its completion tokens."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": {"message": "messages must be a non-empty list"}}),
            content_type="application/json",
        )
    prompt = "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    user = next(
        (str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), prompt
    )
    key = hashlib.blake2b(prompt.encode(), digest_size=16).digest()
    occurrence = seen[key] = seen.get(key, -1) + 1
    n = lines_requested(user, model.default_lines)
    lines = candidate_lines(prompt, n, model.seed, occurrence)
    max_tokens = int(body.get("max_tokens") or 1 << 30)
    reply, used, finish = [], 0, "stop"
    for i, line in enumerate(lines, start=1):
        text = f"{i}. {line}"
        if used + _tokens(text) > max_tokens:
            finish = "length"
            break
        reply.append(text)
        used += _tokens(text)
    content = "\n".join(reply)
    if _asks_structured(body):
        cut = lines[len(reply)] if finish == "length" else None
        content = _structured_content(lines[: len(reply)], cut)
    prompt_tokens = _tokens(prompt)
    completion = {
        "id": f"chatcmpl-{hashlib.blake2b(prompt.encode(), digest_size=12).hexdigest()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(body.get("model") or model.model),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": used,
            "total_tokens": prompt_tokens + used,
        },
    }
    return completion, max(used, 1)


def _asks_structured(body: dict[str, Any]) -> bool:
    """Whether a chat request asks for JSON (`response_format` json_schema or json_object)."""
    wanted = body.get("response_format")
    return isinstance(wanted, dict) and wanted.get("type") in ("json_schema", "json_object")


def _structured_content(lines: list[str], cut: str | None) -> str:
    """The JSON content of a structured reply; when the token limit stopped it (`cut`: the
    line it was writing), unclosed and ending inside half of that line's string."""
    text = json.dumps({"candidates": lines})
    if cut is None:
        return text
    return text[:-2] + (", " if lines else "") + json.dumps(cut)[: 1 + len(cut) // 2]


def _error(status: int, message: str, kind: str, headers: dict[str, str]) -> web.Response:
    """An error as LiteLLM's proxy words it (its message, a type, the status as `code`)."""
    body = {"error": {"message": message, "type": kind, "param": "None", "code": str(status)}}
    return web.json_response(body, status=status, headers=headers)


def _fault(faults: LLMFaults, window: _RateWindow | None, stats: LLMStats) -> web.Response | None:
    """The fault answer to one chat request, or None to serve it."""
    if faults.refuse_status:
        stats.refused += 1
        return _error(faults.refuse_status, faults.refuse_message, "None", {})
    wait = window.admit() if window is not None else None
    if wait is None:
        return None
    stats.rate_limited += 1
    header = {} if faults.retry_header == "none" else {faults.retry_header: str(math.ceil(wait))}
    message = (
        f"Rate limit reached: {faults.rate_limit} requests per {faults.rate_window_s:g} s. "
        "Please try again later."
    )
    return _error(429, message, "rate_limit_error", header)


def _arrived(stats: LLMStats, arrivals: deque[list[float]]) -> list[float]:
    """Record a chat request's arrival; returns its [t, tokens, status] to fill in."""
    now = time.monotonic()
    if stats.first_request_at is None:
        stats.first_request_at = now
    stats.last_request_at = now
    arrivals.append(entry := [now, 0, 200])
    return entry


def _over_limit(
    faults: LLMFaults, limits: _ProviderLimits | None, stats: LLMStats
) -> web.Response | None:
    """A 429 for a request past the provider limits, or None to serve it."""
    wait = limits.admit() if limits is not None else None
    if limits is None or wait is None:
        return None
    stats.rate_limited += 1
    headers = limits.headers()
    if faults.retry_header != "none":
        headers[faults.retry_header] = str(math.ceil(wait))
    message = f"Rate limit reached: {faults.rpm} requests, {faults.tpm} tokens per minute."
    return _error(429, message, "rate_limit_error", headers)


def make_app(
    model: LLMCostModel,
    faults: LLMFaults | None = None,
    batch: BatchOptions | None = None,
    images: ImageOptions | None = None,
) -> web.Application:
    """The aiohttp application serving the endpoints (with `faults`, if given), the
    Batch API (`benchmarks.batch_api`) whose lines it answers itself, and the images API
    (`benchmarks.image_server`, with `images`' latency and faults)."""
    slots = _Slots(model)
    seen: dict[bytes, int] = {}  # prompt digest -> requests with it so far
    faults = faults or LLMFaults()
    window = _RateWindow(faults.rate_limit, faults.rate_window_s) if faults.rate_limit else None
    limits = _ProviderLimits(faults) if faults.rpm or faults.tpm else None
    arrivals: deque[list[float]] = deque(maxlen=ARRIVALS_KEPT)  # [t, tokens, status]
    admitted = itertools.count(0)  # chat requests past the limits, for `error_rate`

    async def models(_: web.Request) -> web.Response:
        data = [{"id": model.model, "object": "model", "created": 0, "owned_by": "mils-bench"}]
        return web.json_response({"object": "list", "data": data})

    async def chat(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text='{"error": {"message": "body is not JSON"}}') from None
        if body.get("stream"):
            raise web.HTTPBadRequest(text='{"error": {"message": "streaming not supported"}}')
        arrived = _arrived(slots.stats, arrivals)
        refusal = _fault(faults, window, slots.stats)
        if refusal is None:
            refusal = _over_limit(faults, limits, slots.stats)
        if refusal is None and faults.error_rate and _due(next(admitted), faults.error_rate):
            slots.stats.failed += 1
            refusal = _error(
                500, "The server had an error processing your request.", "server_error", {}
            )
        if refusal is not None:
            arrived[2] = refusal.status
            return refusal
        if faults.refuse_structured and _asks_structured(body):
            slots.stats.structured_refused += 1
            message = "response_format is not supported by this server"
            return _error(faults.refuse_structured, message, "invalid_request_error", {})
        slots.stats.structured += _asks_structured(body)
        completion, tokens = _completion(model, body, seen)
        slots.stats.requests += 1
        usage = completion.pop("usage") if faults.no_usage else completion["usage"]
        slots.stats.prompt_tokens += usage["prompt_tokens"]
        slots.stats.completion_tokens += usage["completion_tokens"]
        arrived[1] = used = usage["prompt_tokens"] + usage["completion_tokens"]
        headers: dict[str, str] = {}
        if limits is not None:
            limits.charge(used)
            headers = limits.headers()
        await slots.hold(model.slot_seconds(tokens))
        return web.json_response(completion, headers=headers)

    async def stats(request: web.Request) -> web.Response:
        data = asdict(slots.stats)
        if request.query.get("arrivals"):
            data["arrivals"] = list(arrivals)
        return web.json_response(data)

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/stats", stats)
    add_batch_api(app, batch)
    add_images_api(app, images)
    return app


class LoadLLMServer(ManagedServer):
    """`python -m benchmarks.llm_server` as a managed subprocess on a free loopback port.

    Own process group, PR_SET_PDEATHSIG, health-polled start, whole-group stop: the
    `adapters.local_stack` pattern. Use as a context manager (`with LoadLLMServer(...) as s`).
    """

    kind = "load-llm"

    def __init__(
        self,
        *,
        cost: LLMCostModel | None = None,
        faults: LLMFaults | None = None,
        batch: BatchOptions | None = None,
        images: ImageOptions | None = None,
        port: int | None = None,
        log_path: Path | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.cost = cost or LLMCostModel()
        self.faults = faults or LLMFaults()
        self.batch = batch or BatchOptions()
        self.images = images or ImageOptions()
        self.port = port or free_port()
        if log_path is None:
            log_path = Path(tempfile.gettempdir()) / f"mils-load-llm-{os.getpid()}-{self.port}.log"
        super().__init__(log_path=log_path, startup_timeout=startup_timeout, detach=False)

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, "http://127.0.0.1:PORT/v1"."""
        return f"http://{HOST}:{self.port}/v1"

    def stats(self, *, arrivals: bool = False) -> dict[str, Any]:
        """The server's /stats JSON (with every chat request's arrival, if `arrivals`)."""
        query = "?arrivals=1" if arrivals else ""
        with urllib.request.urlopen(f"http://{HOST}:{self.port}/stats{query}", timeout=10) as reply:
            data: dict[str, Any] = json.load(reply)
        return data

    def _urls(self) -> dict[str, str]:
        return {"base_url": self.base_url}

    def _ready_url(self) -> str:
        return f"{self.base_url}/models"

    def _command(self) -> list[str]:
        c = self.cost
        return [
            sys.executable,
            "-m",
            "benchmarks.llm_server",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--capacity",
            str(c.capacity),
            "--prefill-ms",
            str(c.prefill_ms),
            "--decode-tokens-per-s",
            str(c.decode_tokens_per_s),
            "--seed",
            str(c.seed),
            "--default-lines",
            str(c.default_lines),
            "--model",
            c.model,
            *_fault_args(self.faults),
            "--batch-start-delay",
            str(self.batch.start_delay_s),
            "--batch-failed-lines",
            str(self.batch.failed_lines),
            *_image_args(self.images),
        ]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        env[IMAGE_API_KEY_ENV] = self.images.api_key
        return env


def _fault_args(faults: LLMFaults) -> list[str]:
    f = faults
    args = ["--rate-limit", str(f.rate_limit), "--rate-window", str(f.rate_window_s)]
    args += ["--retry-header", f.retry_header, "--refuse-status", str(f.refuse_status)]
    args += ["--error-rate", str(f.error_rate)]
    args += ["--no-usage"] if f.no_usage else []
    args += ["--refuse-structured", str(f.refuse_structured)]
    args += ["--rpm", str(f.rpm), "--tpm", str(f.tpm), "--limit-burst", str(f.limit_burst_s)]
    return [*args, "--refuse-message", f.refuse_message]


def _image_args(images: ImageOptions) -> list[str]:
    args = ["--image-latency-ms", str(images.latency_ms)]
    args += ["--image-error-rate", str(images.error_rate)]
    args += ["--image-refuse-word", images.refuse_word]
    args += ["--image-force-url"] if images.force_url else []
    args += ["--image-limit-rate", str(images.limit_rate)]
    args += ["--image-retry-after", str(images.retry_after_s)]
    # The key travels in the environment (`_env`), not on a command line others can read.
    return args


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.llm_server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default=HOST)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--capacity", type=int, default=DEFAULT_CAPACITY)
    p.add_argument("--prefill-ms", type=float, default=DEFAULT_PREFILL_MS)
    p.add_argument("--decode-tokens-per-s", type=float, default=DEFAULT_DECODE_TOKENS_PER_S)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--default-lines", type=int, default=DEFAULT_LINES)
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--rate-limit", type=int, default=0, help="requests per window; 0: none")
    p.add_argument("--rate-window", type=float, default=60.0, help="window length (seconds)")
    p.add_argument("--retry-header", choices=RETRY_HEADERS, default="retry-after")
    p.add_argument("--refuse-status", type=int, default=0, help="refuse every request; 0: no")
    p.add_argument("--refuse-message", default="")
    p.add_argument("--error-rate", type=float, default=0.0, help="chat requests answered 500")
    p.add_argument("--no-usage", action="store_true", help="replies carry no usage")
    p.add_argument(
        "--refuse-structured", type=int, default=0, help="status for response_format; 0: JSON"
    )
    p.add_argument("--rpm", type=int, default=0, help="requests per minute enforced; 0: none")
    p.add_argument("--tpm", type=int, default=0, help="tokens per minute enforced; 0: none")
    p.add_argument("--limit-burst", type=float, default=60.0, help="seconds' worth a bucket holds")
    p.add_argument("--batch-start-delay", type=float, default=0.0, help="seconds a batch queues")
    p.add_argument("--batch-failed-lines", type=int, default=0, help="first N batch lines: 500")
    p.add_argument("--image-latency-ms", type=float, default=0.0, help="per images request")
    p.add_argument("--image-error-rate", type=float, default=0.0, help="images requests: 500")
    p.add_argument("--image-refuse-word", default="", help="prompts with it: 400 (policy)")
    p.add_argument("--image-force-url", action="store_true", help="images replies: url")
    p.add_argument("--image-limit-rate", type=float, default=0.0, help="images requests: 429")
    p.add_argument("--image-retry-after", type=int, default=1, help="a 429's Retry-After (s)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM/SIGINT."""
    args = _parse_args(argv)
    cost = LLMCostModel(
        capacity=args.capacity,
        prefill_ms=args.prefill_ms,
        decode_tokens_per_s=args.decode_tokens_per_s,
        seed=args.seed,
        default_lines=args.default_lines,
        model=args.model,
    )
    faults = LLMFaults(
        rate_limit=args.rate_limit,
        rate_window_s=args.rate_window,
        retry_header=args.retry_header,
        refuse_status=args.refuse_status,
        refuse_message=args.refuse_message,
        error_rate=args.error_rate,
        no_usage=args.no_usage,
        refuse_structured=args.refuse_structured,
        rpm=args.rpm,
        tpm=args.tpm,
        limit_burst_s=args.limit_burst,
    )
    # backlog: a client opening hundreds of connections at once must not see refusals.
    web.run_app(
        make_app(
            cost,
            faults,
            BatchOptions(
                start_delay_s=args.batch_start_delay, failed_lines=args.batch_failed_lines
            ),
            ImageOptions(
                latency_ms=args.image_latency_ms,
                error_rate=args.image_error_rate,
                refuse_word=args.image_refuse_word,
                force_url=args.image_force_url,
                limit_rate=args.image_limit_rate,
                retry_after_s=args.image_retry_after,
                api_key=os.environ.get(IMAGE_API_KEY_ENV, ""),
            ),
        ),
        host=args.host,
        port=args.port,
        backlog=2048,
        access_log=None,
        print=None,
        handle_signals=True,
    )


if __name__ == "__main__":
    main()
