"""The OpenAI images API (generations and edits) on the closed world, with injected faults.

`add_images_api(app, options)` serves, on any aiohttp application (the load-model server of
`benchmarks.llm_server` mounts it on itself, as it does the Batch API):

    POST /v1/images/generations     JSON {model, prompt, n, size, response_format, seed}
    POST /v1/images/edits           multipart: image (file), prompt, model, ..., seed
    GET  /v1/images/files/{id}      the image a `response_format: "url"` reply points at
    GET  /v1/images/stats           requests, images made and faults injected, by kind

Images are made by the closed world's torch-free functions, `mils.tasks.scenes.render_text`
(text -> PNG) and `edit_image` (PNG + instruction -> PNG), in a worker thread; a prompt or
image they cannot use (their ValueError) is answered HTTP 400 with their message. Only n=1
is served, and `size` is accepted but not honoured (the closed world draws at its own size).

Options (`ImageOptions`), for tests and benchmarks:
    latency_ms      synthetic time added to each request (a diffusion model's)
    error_rate      this fraction of requests answer HTTP 500, spread evenly (every 1/rate-th)
    refuse_word     a prompt containing it answers HTTP 400, as OpenAI's content policy
    api_key         requests without "Authorization: Bearer <it>" answer HTTP 401, whose
                    message quotes the key that was sent (as some gateways do: a client
                    must scrub it)
    force_url       replies carry a `url` to fetch, whatever `response_format` asked
    limit_rate      this fraction of requests answer HTTP 429 with `Retry-After`
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["ImageOptions", "ImageStats", "add_images_api"]

RenderText = Callable[[str, int], bytes]
EditImage = Callable[[bytes, str, int], bytes]


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageOptions:
    latency_ms: float = 0.0
    """Milliseconds each images request takes before it is answered."""
    error_rate: float = 0.0
    """Fraction of images requests answered HTTP 500 (spread evenly), 0 to 1."""
    refuse_word: str = ""
    """Prompts containing this word (any case) are refused with HTTP 400 ("": none)."""
    api_key: str = field(default="", repr=False)
    """The bearer key every images request must carry ("": none asked for)."""
    force_url: bool = False
    """Answer with `url` (served by /v1/images/files) whatever `response_format` asks."""
    limit_rate: float = 0.0
    """Fraction of images requests answered HTTP 429 (spread evenly), 0 to 1."""
    retry_after_s: int = 1
    """The `Retry-After` a 429 carries (seconds)."""

    def __post_init__(self) -> None:
        rates_ok = 0.0 <= self.error_rate <= 1.0 and 0.0 <= self.limit_rate <= 1.0
        if not rates_ok or not self.latency_ms >= 0 or self.retry_after_s < 0:
            raise ValueError(f"need rates in [0, 1], latency_ms >= 0, retry_after_s >= 0: {self}")


@dataclass(slots=True)
class ImageStats:
    """What /v1/images/stats returns."""

    requests: int = 0
    generations: int = 0
    """Images made from text."""
    edits: int = 0
    """Images made by editing an uploaded image."""
    failed: int = 0
    """Requests answered 500 (`error_rate`)."""
    refused: int = 0
    """Requests answered 400: the refuse word, or a prompt or image the closed world rejects."""
    unauthorized: int = 0
    """Requests answered 401 (`api_key`)."""
    rate_limited: int = 0
    """Requests answered 429 (`limit_rate`)."""


def _error(status: int, message: str, kind: str, code: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status)


def add_images_api(
    app: web.Application,
    options: ImageOptions | None = None,
    *,
    render_text: RenderText | None = None,
    edit_image: EditImage | None = None,
) -> None:
    """Serve the images endpoints on `app`.

    Args:
        options: latency and faults (none by default).
        render_text, edit_image: the image makers; default to `mils.tasks.scenes`'s.
    """
    options = options or ImageOptions()
    stats = ImageStats()
    files: dict[str, bytes] = {}
    ids = itertools.count(1)
    seen = itertools.count(0)
    limited = itertools.count(0)

    def makers() -> tuple[RenderText, EditImage]:
        if render_text is not None and edit_image is not None:
            return render_text, edit_image
        from mils.tasks import scenes  # imported late: numpy and Pillow only when used

        return render_text or scenes.render_text, edit_image or scenes.edit_image

    async def admit(request: web.Request, prompt: str) -> web.Response | None:
        """The fault response for this request, if one is due (after the latency)."""
        stats.requests += 1
        if options.latency_ms:
            await asyncio.sleep(options.latency_ms / 1000.0)
        authorization = request.headers.get("Authorization")
        if options.api_key and authorization != f"Bearer {options.api_key}":
            stats.unauthorized += 1
            sent = (authorization or "").removeprefix("Bearer ")
            message = f"Incorrect API key provided: {sent}."
            return _error(401, message, "invalid_request_error", "invalid_api_key")
        if _due(next(limited), options.limit_rate):
            stats.rate_limited += 1
            response = _error(429, "Rate limit reached for images.", "requests", "rate_limit")
            response.headers["Retry-After"] = str(options.retry_after_s)
            return response
        if _due(next(seen), options.error_rate):
            stats.failed += 1
            return _error(500, "The server had an error processing your request.", "server_error")
        if options.refuse_word and options.refuse_word.lower() in prompt.lower():
            stats.refused += 1
            return _error(
                400,
                "Your request was rejected as a result of our safety system.",
                "invalid_request_error",
                "content_policy_violation",
            )
        return None

    async def reply(request: web.Request, make: Callable[[], bytes], fmt: str) -> web.Response:
        try:
            image = await asyncio.to_thread(make)
        except ValueError as exc:
            stats.refused += 1
            return _error(400, str(exc), "invalid_request_error")
        item: dict[str, Any]
        if fmt == "url" or options.force_url:
            file_id = f"img-{next(ids)}"
            files[file_id] = image
            item = {"url": f"http://{request.host}/v1/images/files/{file_id}"}
        else:
            item = {"b64_json": base64.b64encode(image).decode("ascii")}
        return web.json_response({"created": int(time.time()), "data": [item]})

    async def generations(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "body is not JSON", "invalid_request_error")
        prompt, problem = _fields(body)
        if problem:
            return _error(400, problem, "invalid_request_error")
        refusal = await admit(request, prompt)
        if refusal is not None:
            return refusal
        make_text, _ = makers()
        seed = int(body.get("seed") or 0)
        response = await reply(request, lambda: make_text(prompt, seed), body["response_format"])
        stats.generations += response.status == 200
        return response

    async def edits(request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("image")
        if not isinstance(upload, web.FileField):
            return _error(400, "expected a multipart `image` file", "invalid_request_error")
        body = {name: str(value) for name, value in form.items() if name != "image"}
        prompt, problem = _fields(body)
        if problem:
            return _error(400, problem, "invalid_request_error")
        refusal = await admit(request, prompt)
        if refusal is not None:
            return refusal
        _, make_edit = makers()
        image, seed = upload.file.read(), int(body.get("seed") or 0)
        response = await reply(
            request, lambda: make_edit(image, prompt, seed), body["response_format"]
        )
        stats.edits += response.status == 200
        return response

    async def file(request: web.Request) -> web.Response:
        found = files.get(request.match_info["file_id"])
        if found is None:
            return _error(404, f"no image {request.match_info['file_id']!r}", "not_found")
        return web.Response(body=found, content_type="image/png")

    async def statistics(_: web.Request) -> web.Response:
        return web.json_response(asdict(stats))

    app.router.add_post("/v1/images/generations", generations)
    app.router.add_post("/v1/images/edits", edits)
    app.router.add_get("/v1/images/files/{file_id}", file)
    app.router.add_get("/v1/images/stats", statistics)


def _due(i: int, rate: float) -> bool:
    """Whether request `i` (from 0) is one of a `rate` fraction spread evenly (every
    1/rate-th: 0.5 fails requests 1, 3, 5, ...)."""
    return math.floor((i + 1) * rate) > math.floor(i * rate)


def _fields(body: Any) -> tuple[str, str]:
    """(prompt, problem): the prompt, and what is wrong with the request ("" if nothing).
    Fills in `response_format` ("b64_json" unless "url")."""
    if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
        return "", "`prompt` (a string) is required"
    if str(body.get("n", 1)) != "1":
        return "", "only n=1 is served"
    fmt = body.setdefault("response_format", "b64_json")
    if fmt not in ("b64_json", "url"):
        return "", f"response_format must be 'b64_json' or 'url', not {fmt!r}"
    seed = body.get("seed")
    if seed is not None and not str(seed).lstrip("-").isdigit():
        return "", f"seed must be an integer, not {seed!r}"
    return body["prompt"], ""
