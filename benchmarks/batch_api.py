"""The OpenAI Batch API (files and batches endpoints) in front of any chat endpoint.

A batch job is a JSONL file of requests, uploaded, run in the background and answered by
an output file (and an error file for the lines that failed). This module serves those
endpoints on an aiohttp application and runs each line as a real HTTP request against an
upstream OpenAI-compatible server: the load-model server's own chat endpoint
(`benchmarks.llm_server` mounts it on itself), so its latency model, faults and
determinism hold for batch lines as for live requests.

Endpoints (the subset of OpenAI's that clients use, with its object shapes):
    POST /v1/files                 multipart upload (purpose "batch") -> file object
    GET  /v1/files/{id}/content    the file's bytes
    POST /v1/batches               {input_file_id, endpoint, completion_window} -> batch
    GET  /v1/batches/{id}          the batch (status, request_counts, output/error files)
    GET  /v1/batches               every batch, newest first (for tests' accounting)
    POST /v1/batches/{id}/cancel   cancel a batch; lines not yet run are not run

A batch goes validating -> in_progress -> finalizing -> completed, or failed (a line that
is not a request for the batch's endpoint, or repeated custom ids), or cancelled. Options
(`BatchOptions`): a delay before a batch starts (a provider's queue), and injected line
faults (the first N lines run answer HTTP 500) to exercise partial failures.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

__all__ = ["BatchOptions", "add_batch_api"]

_SUPPORTED = ("/v1/chat/completions", "/v1/completions")
_LINES_IN_FLIGHT = 256
"""Lines of one batch sent upstream at once (the upstream's own slots queue the rest)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchOptions:
    start_delay_s: float = 0.0
    """Seconds a batch waits in "validating" before its lines run (a provider's queue)."""
    failed_lines: int = 0
    """The first this many lines run (over all batches) answer HTTP 500 instead."""


@dataclass(slots=True)
class _Batch:
    id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    created_at: int
    status: str = "validating"
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    times: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, Any] | None = None

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": None if self.errors is None else {"object": "list", "data": self.errors},
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            **{f"{status}_at": at for status, at in self.times.items()},
            "request_counts": {
                "total": self.total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "metadata": self.metadata,
        }

    def enter(self, status: str) -> None:
        self.status = status
        self.times[status] = int(time.time())


@dataclass(slots=True)
class _State:
    options: BatchOptions
    files: dict[str, tuple[str, str, bytes]] = field(default_factory=dict)
    """file id -> (filename, purpose, bytes)."""
    batches: dict[str, _Batch] = field(default_factory=dict)
    jobs: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=itertools.count)
    lines_run: int = 0

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self.ids):06d}"

    def add_file(self, name: str, purpose: str, data: bytes) -> dict[str, Any]:
        file_id = self.new_id("file")
        self.files[file_id] = (name, purpose, data)
        return _file_json(file_id, name, purpose, data)


def _file_json(file_id: str, name: str, purpose: str, data: bytes) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": len(data),
        "created_at": int(time.time()),
        "filename": name,
        "purpose": purpose,
        "status": "processed",
    }


def _error(status: int, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
    return web.json_response(body, status=status)


def add_batch_api(app: web.Application, options: BatchOptions | None = None) -> None:
    """Serve the files and batches endpoints on `app`; lines run against `app`'s own
    OpenAI routes, through its listening socket."""
    state = _State(options or BatchOptions())

    async def upload(request: web.Request) -> web.Response:
        form = await request.post()
        upload, purpose = form.get("file"), str(form.get("purpose", ""))
        if not isinstance(upload, web.FileField) or purpose != "batch":
            return _error(400, "expected a multipart `file` with purpose 'batch'")
        return web.json_response(state.add_file(upload.filename, purpose, upload.file.read()))

    async def content(request: web.Request) -> web.Response:
        found = state.files.get(request.match_info["file_id"])
        if found is None:
            return _error(404, f"no file {request.match_info['file_id']!r}")
        return web.Response(body=found[2], content_type="application/jsonl")

    async def create(request: web.Request) -> web.Response:
        body = await request.json()
        file_id, endpoint = body.get("input_file_id"), body.get("endpoint")
        if file_id not in state.files:
            return _error(400, f"no input file {file_id!r}")
        if endpoint not in _SUPPORTED:
            return _error(400, f"endpoint {endpoint!r} is not one of {', '.join(_SUPPORTED)}")
        batch = _Batch(
            id=state.new_id("batch"),
            endpoint=endpoint,
            input_file_id=file_id,
            completion_window=str(body.get("completion_window", "24h")),
            created_at=int(time.time()),
            metadata=body.get("metadata"),
        )
        state.batches[batch.id] = batch
        origin = f"http://{request.host}"
        state.jobs[batch.id] = asyncio.create_task(_run(state, batch, origin))
        return web.json_response(batch.json())

    async def retrieve(request: web.Request) -> web.Response:
        batch = state.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _error(404, f"no batch {request.match_info['batch_id']!r}")
        return web.json_response(batch.json())

    async def listing(_: web.Request) -> web.Response:
        data = [b.json() for b in reversed(state.batches.values())]
        return web.json_response({"object": "list", "data": data, "has_more": False})

    async def cancel(request: web.Request) -> web.Response:
        batch = state.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _error(404, f"no batch {request.match_info['batch_id']!r}")
        job = state.jobs.get(batch.id)
        if job is not None and not job.done():
            batch.enter("cancelling")
            job.cancel()
        return web.json_response(batch.json())

    async def stop_jobs(_: web.Application) -> None:
        for job in state.jobs.values():
            job.cancel()
        await asyncio.gather(*state.jobs.values(), return_exceptions=True)

    app.on_cleanup.append(stop_jobs)
    app.router.add_post("/v1/files", upload)
    app.router.add_get("/v1/files/{file_id}/content", content)
    app.router.add_post("/v1/batches", create)
    app.router.add_get("/v1/batches", listing)
    app.router.add_get("/v1/batches/{batch_id}", retrieve)
    app.router.add_post("/v1/batches/{batch_id}/cancel", cancel)


def _parse_lines(batch: _Batch, data: bytes) -> list[dict[str, Any]] | list[dict[str, str]]:
    """The request lines of an input file, or the validation errors that fail the batch."""
    lines, errors, seen = [], [], set()
    for number, raw in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            errors.append({"code": "invalid_json_line", "message": "not JSON", "line": number})
            continue
        if not isinstance(line, dict) or line.get("url") != batch.endpoint:
            errors.append(
                {
                    "code": "mismatched_endpoint",
                    "message": f"the line's url is not the batch's endpoint {batch.endpoint}",
                    "line": number,
                }
            )
        elif line.get("custom_id") in seen:
            errors.append({"code": "duplicate_custom_id", "message": "repeated", "line": number})
        else:
            seen.add(line.get("custom_id"))
            lines.append(line)
    return errors or lines


async def _run(state: _State, batch: _Batch, origin: str) -> None:
    """Validate, run every line upstream, write the output and error files."""
    parsed = _parse_lines(batch, state.files[batch.input_file_id][2])
    if parsed and "code" in parsed[0]:
        batch.errors = list(parsed)
        batch.enter("failed")
        return
    batch.total = len(parsed)
    outputs: list[str] = []
    failures: list[str] = []
    try:
        await asyncio.sleep(state.options.start_delay_s)
        batch.enter("in_progress")
        gate = asyncio.Semaphore(_LINES_IN_FLIGHT)
        async with aiohttp.ClientSession(origin) as session:

            async def run_line(line: dict[str, Any]) -> None:
                async with gate:
                    status, body = await _answer(state, session, batch.endpoint, line)
                result = {
                    "id": state.new_id("batch_req"),
                    "custom_id": line.get("custom_id"),
                    "response": {"status_code": status, "request_id": "", "body": body},
                    "error": None,
                }
                ok = status == 200
                batch.completed += ok
                batch.failed += not ok
                (outputs if ok else failures).append(json.dumps(result))

            async with asyncio.TaskGroup() as group:
                for line in parsed:
                    group.create_task(run_line(line))
        batch.enter("finalizing")
        end = "completed"
    except asyncio.CancelledError:
        end = "cancelled"  # the lines answered so far are still delivered, as OpenAI does
    batch.output_file_id = _results_file(state, f"{batch.id}_output.jsonl", outputs)
    batch.error_file_id = _results_file(state, f"{batch.id}_error.jsonl", failures)
    batch.enter(end)


def _results_file(state: _State, name: str, lines: list[str]) -> str | None:
    if not lines:
        return None
    return str(state.add_file(name, "batch_output", "\n".join(lines).encode() + b"\n")["id"])


async def _answer(
    state: _State, session: aiohttp.ClientSession, endpoint: str, line: dict[str, Any]
) -> tuple[int, Any]:
    """Run one line upstream: its HTTP status and JSON body."""
    state.lines_run += 1
    if state.lines_run <= state.options.failed_lines:
        return 500, {"error": {"message": "injected batch line fault", "type": "server_error"}}
    async with session.post(endpoint, json=line.get("body")) as reply:
        try:
            return reply.status, await reply.json(content_type=None)
        except ValueError:
            return reply.status, {"error": {"message": await reply.text()}}
