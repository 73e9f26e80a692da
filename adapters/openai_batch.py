"""A Generator that sends its requests as OpenAI Batch API jobs (hosted: about half price).

The engine calls `complete` (or `continue_text`) once per sample step, as it does a live
endpoint. Here each call joins the batch being gathered, which is sent once no request
has joined it for `linger_s` (every sample in flight has asked for its step) or once it
holds `max_lines`: one JSONL upload (`/v1/files`), one job (`/v1/batches`), polled every
`poll_s` until it ends; then its output and error files are downloaded and every caller
gets its own line's reply. So a run in batch mode moves step by step: each step's
requests for the samples in flight go as one job, the replies are scored, and the next
step's requests make the next job. `vllm run-batch` reads the same JSONL lines.

Nothing is paid twice when a run is killed: a job's id and its lines' custom ids are
committed to the run's store (a `BatchJournal`) as soon as the job exists. A custom id is
the digest of the line's request; a resumed sample asks for its step again with the same
request (the loop is deterministic given what it committed), so a request that a
journaled job holds waits for that job's answer (polling it) instead of being sent again.

Failures stay per line, as live requests fail: a line in the error file, or missing from
the output of a job that expired or was cancelled, raises for its caller alone: HTTP 5xx,
429, 408 or no answer `EndpointUnavailable` (the retry loop sends that request again,
in a later job, so only the failed lines are retried), 401/403/404 `ConfigError`, another
4xx `RequestRefused`. A job that fails as a whole (its file refused) fails all its lines
as `EndpointUnavailable`; an endpoint without the Batch API is a `ConfigError`.

Structured replies (`reply_format="json"`) are asked for in every line, without the live
mode's fallback: a provider that refuses them refuses the line (`RequestRefused`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import openai

from mils.adapters.openai_generator import GeneratorSettings, OpenAIGenerator
from mils.engine.errors import ConfigError, EndpointUnavailable, MilsError, RequestRefused
from mils.engine.logs import get_logger
from mils.engine.protocols import ChatMessage, Reply

__all__ = [
    "DEFAULT_BATCH_LINGER_S",
    "DEFAULT_BATCH_POLL_S",
    "BatchJournal",
    "BatchSettings",
    "OpenAIBatchGenerator",
]

log = get_logger(__name__)

DEFAULT_BATCH_POLL_S = 30.0
"""Hosted batch jobs take minutes to hours; polling faster only spends requests."""
DEFAULT_BATCH_LINGER_S = 2.0
MAX_BATCH_LINES = 50_000
"""OpenAI's limit of requests in one batch file."""
_ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
_POLL_FAILURES = 10
"""Consecutive failed polls of one job before its lines are given up (and retried)."""
_CHAT, _COMPLETION = "/v1/chat/completions", "/v1/completions"


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchSettings:
    """How requests are gathered into Batch API jobs and how jobs are awaited."""

    poll_s: float = DEFAULT_BATCH_POLL_S
    """Seconds between two polls of a job's status."""
    linger_s: float = DEFAULT_BATCH_LINGER_S
    """A job is sent once no request has joined it for this long."""
    max_lines: int = MAX_BATCH_LINES
    """Most requests in one job."""
    completion_window: str = "24h"
    """The window the provider has to run a job (OpenAI offers "24h")."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.poll_s) and self.poll_s > 0):
            raise ConfigError(f"batch poll_s is {self.poll_s}; pass `poll_s` above 0 seconds")
        if not (math.isfinite(self.linger_s) and self.linger_s >= 0):
            raise ConfigError(f"batch linger_s is {self.linger_s}; pass `linger_s` 0 or more")
        if not 1 <= self.max_lines <= MAX_BATCH_LINES:
            raise ConfigError(
                f"batch max_lines is {self.max_lines}; pass `max_lines` 1 to {MAX_BATCH_LINES}"
            )


class BatchJournal(Protocol):
    """Where job ids are committed (the run's store), so a resume finds them."""

    def record_batch(self, batch_id: str, endpoint: str, custom_ids: Sequence[str]) -> None: ...

    def batches(self, endpoint: str) -> list[tuple[str, list[str]]]:
        """(job id, its custom ids) of every job recorded for `endpoint`, oldest first."""
        ...


@dataclass(slots=True)
class _Line:
    digest: str
    custom_id: str
    body: dict[str, Any]
    answer: asyncio.Future[dict[str, Any] | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class OpenAIBatchGenerator:
    """Implements `engine.protocols.Generator` on an endpoint's Batch API.

    Use as an async context manager: entering reads the journal; leaving stops polling
    (jobs already sent go on at the provider, and a resume picks them up).
    """

    def __init__(
        self,
        settings: GeneratorSettings,
        batch: BatchSettings | None = None,
        journal: BatchJournal | None = None,
    ) -> None:
        self._live = OpenAIGenerator(settings)
        self._batch = batch or BatchSettings()
        self._journal = journal
        self._gathering: dict[str, list[_Line]] = {}
        """Requests waiting to be sent, per batch endpoint (chat or plain completions)."""
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._jobs: set[asyncio.Task[Any]] = set()
        self._journaled: dict[str, collections.deque[tuple[str, str]]] = {}
        """Digest -> (job id, custom id) of requests sent by an earlier session."""
        self._outcomes: dict[str, asyncio.Task[dict[str, dict[str, Any]]]] = {}
        """Job id -> its answers, fetched once for every resumed request it holds."""

    def __repr__(self) -> str:
        return f"OpenAIBatchGenerator(endpoint={self.endpoint!r})"

    @property
    def endpoint(self) -> str:
        return self._live.endpoint

    @property
    def prompt_mode(self) -> str:
        return self._live.prompt_mode

    async def __aenter__(self) -> OpenAIBatchGenerator:
        if self._journal is not None:
            for batch_id, custom_ids in await asyncio.to_thread(
                self._journal.batches, self.endpoint
            ):
                for custom_id in custom_ids:
                    digest = custom_id.rpartition("-")[0]
                    self._journaled.setdefault(digest, collections.deque()).append(
                        (batch_id, custom_id)
                    )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop gathering and polling; close the HTTP connections."""
        for timer in self._timers.values():
            timer.cancel()
        for job in self._jobs:
            job.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)
        await self._live.aclose()

    async def complete(self, messages: Sequence[ChatMessage]) -> Reply:
        """One chat completion, answered by a batch job. Raises as `Generator.complete`."""
        record = await self._answer(_CHAT, self._live.chat_body(messages))
        return self._live.reply(record)

    async def continue_text(self, prompt: str) -> Reply:
        """One plain continuation, answered by a batch job."""
        record = await self._answer(_COMPLETION, self._live.continuation_body(prompt))
        return self._live.reply(record)

    # -- one request ------------------------------------------------------------

    async def _answer(self, url: str, body: dict[str, Any]) -> Any:
        """The response body of `body`'s line: from a journaled job, else a new one."""
        digest = _digest(url, body)
        record = await self._journaled_answer(digest)
        if record is None:
            line = self._join(url, digest, body)
            try:
                record = await asyncio.shield(line.answer)
            except asyncio.CancelledError:
                self._leave(url, line)
                raise
        return self._body(record)

    async def _journaled_answer(self, digest: str) -> dict[str, Any] | None:
        """A usable answer to this request from a job an earlier session sent, if any."""
        claims = self._journaled.get(digest)
        while claims:
            batch_id, custom_id = claims.popleft()
            outcome = self._outcomes.get(batch_id)
            if outcome is None:
                outcome = self._outcomes[batch_id] = self._own(self._outcome(batch_id))
                log.info("batch_resumed", batch=batch_id, endpoint=self.endpoint)
            try:
                record = (await asyncio.shield(outcome)).get(custom_id)
            except MilsError as exc:
                log.warning("batch_resume_failed", batch=batch_id, error=str(exc))
                continue
            if record is not None and _status(record) == 200:
                return record
        return None

    def _body(self, record: dict[str, Any] | None) -> Any:
        """The response body of a line's answer, or the error its caller gets."""
        endpoint = self.endpoint
        if record is None:
            raise EndpointUnavailable(
                f"generator {endpoint}: the batch job ended without answering this request "
                "(expired or cancelled); it is sent again",
                endpoint=endpoint,
                kind="batch_line",
            )
        status, response = _status(record), record.get("response") or {}
        if status == 200:
            return response.get("body")
        said = _said(record)
        if status in (401, 403, 404):
            raise ConfigError(
                f"generator {endpoint} refused a batch request (HTTP {status}): {said}; "
                "check the API key, `base_url` and `model`"
            )
        if status is None or status in (408, 429) or status >= 500:
            raise EndpointUnavailable(
                f"generator {endpoint} failed a batch request (HTTP {status}): {said}",
                endpoint=endpoint,
                kind="batch_line",
            )
        raise RequestRefused(
            f"generator {endpoint} refused a batch request (HTTP {status}): {said}",
            endpoint=endpoint,
            status=status,
            detail=said,
        )

    # -- gathering ----------------------------------------------------------------

    def _join(self, url: str, digest: str, body: dict[str, Any]) -> _Line:
        lines = self._gathering.setdefault(url, [])
        twins = sum(line.digest == digest for line in lines)  # custom ids must be unique
        line = _Line(digest, f"{digest}-{twins}", body)
        lines.append(line)
        if timer := self._timers.pop(url, None):
            timer.cancel()
        if len(lines) >= self._batch.max_lines:
            self._send(url)
        else:
            loop = asyncio.get_running_loop()
            self._timers[url] = loop.call_later(self._batch.linger_s, self._send, url)
        return line

    def _leave(self, url: str, line: _Line) -> None:
        """A cancelled caller's request leaves the batch, unless it was already sent."""
        lines = self._gathering.get(url, [])
        if line in lines:
            lines.remove(line)

    def _send(self, url: str) -> None:
        self._timers.pop(url, None)
        lines = self._gathering.pop(url, [])
        if lines:
            self._own(self._run_job(url, lines))

    def _own(self, coro: Any) -> asyncio.Task[Any]:
        """Run a job's coroutine as a task this generator owns (`aclose` ends it)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)
        return task

    # -- one job ------------------------------------------------------------------

    async def _run_job(self, url: str, lines: list[_Line]) -> None:
        """Send the lines as one job, wait for it, hand every line its answer."""
        try:
            batch_id = await self._submit(url, lines)
            answers = await self._outcome(batch_id)
        except asyncio.CancelledError:
            for line in lines:
                line.answer.cancel()
            raise
        except Exception as exc:
            for line in lines:
                line.answer.set_exception(exc)
            return
        for line in lines:
            line.answer.set_result(answers.get(line.custom_id))

    async def _submit(self, url: str, lines: list[_Line]) -> str:
        data = "".join(
            json.dumps(
                {"custom_id": line.custom_id, "method": "POST", "url": url, "body": line.body}
            )
            + "\n"
            for line in lines
        ).encode()
        client = self._live.client
        with self._live.errors(), _no_batch_api(self.endpoint):
            upload = await client.files.create(file=("mils-batch.jsonl", data), purpose="batch")
            job = await client.batches.create(
                input_file_id=upload.id,
                endpoint=url,  # type: ignore[arg-type]  # one of the two it accepts
                completion_window=self._batch.completion_window,  # type: ignore[arg-type]
            )
        if self._journal is not None:
            await asyncio.to_thread(
                self._journal.record_batch, job.id, self.endpoint, [x.custom_id for x in lines]
            )
        log.info("batch_submitted", batch=job.id, endpoint=self.endpoint, lines=len(lines))
        return job.id

    async def _outcome(self, batch_id: str) -> dict[str, dict[str, Any]]:
        """Poll the job until it ends; its answers by custom id (failed lines included)."""
        failures = 0
        while True:
            try:
                with self._live.errors():
                    job = await self._live.client.batches.retrieve(batch_id)
            except EndpointUnavailable as exc:
                failures += 1
                if failures >= _POLL_FAILURES:
                    raise
                log.warning("batch_poll_failed", batch=batch_id, error=str(exc))
            else:
                failures = 0
                if job.status in _ENDED:
                    break
            await asyncio.sleep(self._batch.poll_s)
        counts = job.request_counts
        log.info(
            "batch_ended",
            batch=batch_id,
            status=job.status,
            completed=counts.completed if counts else None,
            failed=counts.failed if counts else None,
        )
        if job.status == "failed":
            said = "; ".join(e.message or "" for e in (job.errors.data or [])) if job.errors else ""
            raise EndpointUnavailable(
                f"generator {self.endpoint}: batch job {batch_id} failed: "
                f"{said or 'no reason given'}",
                endpoint=self.endpoint,
                kind="batch_failed",
            )
        answers: dict[str, dict[str, Any]] = {}
        for file_id in (job.output_file_id, job.error_file_id):
            if file_id:
                answers.update(await self._download(file_id))
        return answers

    async def _download(self, file_id: str) -> dict[str, dict[str, Any]]:
        with self._live.errors():
            content = await self._live.client.files.content(file_id)
        answers = {}
        for raw in content.text.splitlines():
            try:
                record = json.loads(raw)
            except ValueError:
                continue  # a damaged line: its request gets no answer and is sent again
            if isinstance(record, dict) and isinstance(record.get("custom_id"), str):
                answers[record["custom_id"]] = record
        return answers


@contextlib.contextmanager
def _no_batch_api(endpoint: str) -> Iterator[None]:
    """Turn the HTTP 404 of an endpoint without the Batch API into a ConfigError that says
    so (the generic 404 message would blame the model name)."""
    try:
        yield
    except openai.NotFoundError as exc:
        raise ConfigError(
            f"generator {endpoint} has no OpenAI Batch API (HTTP 404 on /files or /batches); "
            "send it live requests (without `batch`)"
        ) from exc


def _digest(url: str, body: dict[str, Any]) -> str:
    canonical = json.dumps([url, body], sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


def _status(record: dict[str, Any]) -> int | None:
    response = record.get("response")
    status = response.get("status_code") if isinstance(response, dict) else None
    return status if isinstance(status, int) else None


def _said(record: dict[str, Any]) -> str:
    """The error message of a failed line (its response body's, else the record's)."""
    response = record.get("response") if isinstance(record.get("response"), dict) else {}
    for where in ((response or {}).get("body"), record):
        error = where.get("error") if isinstance(where, dict) else None
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:200]
    return "(no message)"
