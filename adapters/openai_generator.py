"""A Generator on any OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp, hosted APIs).

The SDK's own retries are off (`max_retries=0`): the engine runs one tenacity loop per call
path, and a second hidden loop underneath would multiply attempts and hide faults from its
counters. Every exception the SDK (or the HTTP library under it) raises is translated in one
place, `_map_openai_exceptions`, into the tree in `engine.errors`:

    connect error            -> EndpointUnavailable(kind="connect")
    connection reset         -> EndpointUnavailable(kind="reset")
    closed mid-reply         -> EndpointUnavailable(kind="protocol") (truncated body, ...)
    timeout (or 408)         -> EndpointUnavailable(kind="timeout")
    429                      -> EndpointUnavailable(kind="429", retry_after=the wait asked
                                for: `parse_retry_after`); the router pauses the endpoint
    5xx                      -> EndpointUnavailable(kind="5xx")
    200 with a garbage body  -> EndpointUnavailable(kind="non_json" | "empty_choices" |
                                "no_content")
    401 / 403 / 404          -> ConfigError (wrong key, URL or model: fatal, fix and rerun)
    other 4xx                -> RequestRefused (this item fails, the run goes on; the same
                                refusal for every first request stops the run instead)

A 200 whose body is not a usable completion (an HTML gateway page, invalid JSON, no choices,
no content) is retried like a 5xx: behind shared gateways and overloaded servers it is a
transient fault, a retry is a fresh sample, and the retry budget still bounds it, so an
endpoint that only ever answers garbage fails the sample with the reason.

Structured replies (`reply_format="json"`, chat mode only): the request carries a
`response_format` JSON schema asking for `{"candidates": [...]}` (`structured_reply_format`),
and the reply's list is turned into the numbered lines the engine's parser takes
(`structured_reply`), so the engine never knows the difference; a reply that is not that
JSON goes to the same forgiving parser as its text. An endpoint that refuses the field
(HTTP 400/422; 500/501, as llama-cpp-python's server answers a `json_schema` it cannot
validate) gets the same request once more without it; when that succeeds, the endpoint is
marked as not supporting structured replies (`structured_replies_unsupported`, logged once)
and is asked for plain lines from then on (`reply_format` says which).

The API key is read once, kept only inside the SDK client, and never shown by `repr`, logs
or error messages.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import math
import os
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx2
import openai

from mils.adapters.http_transport import KeepAliveTransport
from mils.engine.config import RateLimits
from mils.engine.errors import ConfigError, EndpointUnavailable, InvalidResponse, RequestRefused
from mils.engine.logs import get_logger, redact_url
from mils.engine.protocols import ChatMessage, ProviderLimits, Reply

__all__ = [
    "DEFAULT_API_KEY_ENV",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_READ_TIMEOUT",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_TOP_P",
    "PLACEHOLDER_API_KEY",
    "REPLY_FORMATS",
    "GeneratorSettings",
    "OpenAIGenerator",
    "ReplyFormat",
    "parse_rate_limits",
    "parse_retry_after",
    "structured_reply",
    "structured_reply_format",
]

log = get_logger(__name__)

_T = TypeVar("_T")

# The MILS paper's sampling defaults.
DEFAULT_TEMPERATURE = 0.5
DEFAULT_TOP_P = 0.9
DEFAULT_MAX_TOKENS = 3000
"""As in the MILS paper: 50 captions take 800-900 tokens, and a reply cut off by the limit
loses its last line. Servers clamp it to their context (llama.cpp) or refuse a request that
cannot fit (vLLM: lower it there)."""
DEFAULT_CONNECT_TIMEOUT = 10.0
# A 50-line reply from a loaded server can take minutes; the engine's own deadlines sit above.
DEFAULT_READ_TIMEOUT = 300.0
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
# Local servers (llama.cpp, vLLM without --api-key) accept any key; the SDK insists on one.
PLACEHOLDER_API_KEY = "EMPTY"

ReplyFormat = Literal["lines", "json"]
REPLY_FORMATS: tuple[ReplyFormat, ...] = ("lines", "json")
"""How replies are asked for: "lines" (numbered lines, read by the forgiving parser) or
"json" (a `response_format` JSON schema: `{"candidates": [...]}`)."""

_BODY_EXCERPT_CHARS = 200

_Redact = Callable[[str], str]
_MASKED = "***"  # what `redact_url` writes for a password


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class GeneratorSettings:
    """Where and how to ask for completions. Holds no secret but credentials written into
    `base_url` (user:password@), which are masked wherever the URL is shown or saved."""

    base_url: str
    """Root of the OpenAI-compatible API, usually ending in /v1."""
    model: str
    """Model name sent with each request (llama.cpp ignores it, vLLM and hosted APIs do not)."""
    temperature: float = DEFAULT_TEMPERATURE
    """Sampling temperature, 0 to 2."""
    top_p: float = DEFAULT_TOP_P
    """Nucleus sampling mass, in (0, 1]."""
    max_tokens: int = DEFAULT_MAX_TOKENS
    """Most tokens one reply may hold."""
    rpm: int | None = None
    """The provider's requests-per-minute limit the engine paces requests under (None: only
    what the endpoint's `x-ratelimit-*` headers state)."""
    tpm: int | None = None
    """The provider's tokens-per-minute limit (prompt plus completion), likewise."""
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    """Seconds to open a connection."""
    read_timeout: float = DEFAULT_READ_TIMEOUT
    """Seconds to wait for the server between bytes of a reply."""
    api_key_env: str = DEFAULT_API_KEY_ENV
    """Environment variable holding the API key."""
    api_key_file: Path | None = None
    """File holding the API key; used when the environment variable is unset or empty."""
    prompt_mode: Literal["chat", "completion"] = "chat"
    """How the generator is asked: "chat" (an instruction through the chat template, for
    instruct models) or "completion" (a continuation of the scored list, for base and tiny
    models, which follow it far better)."""
    reply_format: ReplyFormat = "lines"
    """How candidates are asked for: "lines" (numbered lines) or "json" (a `response_format`
    JSON schema, where the endpoint supports it; else lines). Chat mode only."""
    extra_body: Mapping[str, Any] | None = None
    """Server-specific request fields (e.g. vLLM's `top_k`, `repetition_penalty`)."""
    extra_headers: Mapping[str, str] | None = field(default=None, repr=False)
    """Extra HTTP headers; hidden from repr since they may carry credentials."""

    def __post_init__(self) -> None:
        shown = redact_url(self.base_url)
        url = urllib.parse.urlsplit(self.base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(
                f"generator base_url {shown!r} is not an http(s) URL; "
                "pass e.g. `base_url` http://127.0.0.1:8000/v1"
            )
        try:
            url.port  # noqa: B018 - parsing it validates it
        except ValueError:
            raise ConfigError(
                f"generator base_url {shown!r} has an invalid port; pass `base_url` with a "
                "port in 1-65535"
            ) from None

        if not self.model.strip():
            raise ConfigError("generator model is empty; pass `model` NAME")
        _check_range("temperature", self.temperature, 0.0, 2.0, low_open=False)
        _check_range("top_p", self.top_p, 0.0, 1.0, low_open=True)
        if self.prompt_mode not in ("chat", "completion"):
            raise ConfigError(
                f"generator prompt_mode is {self.prompt_mode!r}; pass `prompt_mode` chat or "
                "completion"
            )
        _check_reply_format(self.reply_format, self.prompt_mode)
        RateLimits(rpm=self.rpm, tpm=self.tpm)  # validates them, naming the field
        if self.max_tokens < 1:
            raise ConfigError(
                f"generator max_tokens is {self.max_tokens}; it must be at least 1 "
                "(a MILS reply of 50 candidates needs about 1000)"
            )
        for name in ("connect_timeout", "read_timeout"):
            _check_range(name, getattr(self, name), 0.0, math.inf, low_open=True)
        if not self.api_key_env.strip():
            raise ConfigError(
                "generator api_key_env is empty; name the environment variable holding "
                f"the key (default {DEFAULT_API_KEY_ENV})"
            )

    @property
    def endpoint(self) -> str:
        """URL (credentials masked) and model: the name in logs, limits and error messages."""
        return f"{redact_url(self.base_url)} ({self.model})"

    def __repr__(self) -> str:
        return (
            f"GeneratorSettings(base_url={redact_url(self.base_url)!r}, model={self.model!r}, "
            f"temperature={self.temperature}, top_p={self.top_p}, max_tokens={self.max_tokens})"
        )

    def resolve_api_key(self) -> str:
        """Return the key from `api_key_env`, else `api_key_file`, else the placeholder.

        Raises:
            ConfigError: `api_key_file` is set but missing, unreadable or empty.
        """
        key = os.environ.get(self.api_key_env, "").strip()
        if key:
            return key
        if self.api_key_file is None:
            return PLACEHOLDER_API_KEY
        try:
            key = self.api_key_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            # Name the file and the reason, never its content.
            raise ConfigError(
                f"cannot read the generator API key file {str(self.api_key_file)!r} "
                f"({type(exc).__name__}); check the path and its permissions, or set "
                f"${self.api_key_env}"
            ) from None
        if not key:
            raise ConfigError(
                f"generator API key file {str(self.api_key_file)!r} is empty; "
                f"write the key into it, or set ${self.api_key_env}"
            )
        return key


def _check_reply_format(reply_format: str, prompt_mode: str) -> None:
    """Refuse an unknown format, and "json" in completion mode.

    An error rather than a silent fallback: a continuation prompt pre-starts the reply with
    a scored line, which a JSON reply cannot continue, so "json" there could never be what
    the run does, yet the saved settings would say it was.
    """
    if reply_format not in REPLY_FORMATS:
        raise ConfigError(
            f"generator reply_format is {reply_format!r}; pass `reply_format` lines or json"
        )
    if reply_format == "json" and prompt_mode != "chat":
        raise ConfigError(
            f"generator reply_format 'json' needs prompt_mode 'chat' (prompt_mode is "
            f"{prompt_mode!r}: a continuation cannot be answered in JSON); pass "
            "`prompt_mode` chat, or `reply_format` lines"
        )


def _check_range(name: str, value: float, low: float, high: float, *, low_open: bool) -> None:
    """Raise ConfigError unless low (<, or <= when closed) value <= high."""
    above_low = value > low if low_open else value >= low
    if not (above_low and value <= high):  # also rejects NaN
        bracket = "(" if low_open else "["
        raise ConfigError(f"generator {name} is {value}; it must be in {bracket}{low}, {high}]")


class OpenAIGenerator:
    """One chat completion per `complete()` call, on an OpenAI-compatible endpoint.

    Implements `engine.protocols.Generator`. Use as an async context manager, or call
    `aclose()` when done.

    Raises:
        ConfigError: at construction, when the settings or the API key file are unusable.
    """

    __slots__ = (
        "_client",
        "_fixed_body",
        "_http",
        "_redact",
        "_request_extensions",
        "_settings",
        "_transport",
        "_unstructured",
        "_urls",
    )

    def __init__(self, settings: GeneratorSettings) -> None:
        self._settings = settings
        self._unstructured: str | None = None
        """Why the endpoint is asked for lines despite `reply_format` "json" (its refusal)."""
        # What every request carries, built once; `extra_body` may override any key.
        self._fixed_body: dict[str, Any] = {
            "model": settings.model,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            # Not max_completion_tokens: llama.cpp and older vLLM only know max_tokens.
            "max_tokens": settings.max_tokens,
            **(settings.extra_body or {}),
        }
        userinfo = urllib.parse.urlsplit(settings.base_url).netloc.rpartition("@")[0]
        if _MASKED in userinfo:
            raise ConfigError(
                f"generator base_url {settings.endpoint} has masked credentials (they are "
                "never saved with a run); pass `base_url` again with the real ones"
            )
        key = settings.resolve_api_key()
        # Only the key itself is remembered (inside a closure) so errors can be scrubbed.
        self._redact = _redactor(key, urllib.parse.urlsplit(settings.base_url).password or "")
        # One lean keep-alive transport under both clients below: the generic connection
        # pool cost about 0.9 ms of CPU per request at hundreds in flight, this 0.35.
        transport = _transport_for(settings.base_url)
        timeout = httpx2.Timeout(settings.read_timeout, connect=settings.connect_timeout)
        try:
            self._client = openai.AsyncOpenAI(
                base_url=settings.base_url,
                api_key=key,
                max_retries=0,
                timeout=timeout,
                http_client=openai.DefaultAsyncHttpxClient(transport=transport),
                default_headers=settings.extra_headers,
            )
            # Completions are POSTed with the SDK's HTTP client's headers and URL, built
            # once: the SDK's per-request options, header and URL building cost more CPU
            # than the request itself (0.35 -> 0.14 ms); see `_request` and `_exchange`.
            sdk = self._client
            headers = {**sdk.default_headers, **sdk.auth_headers}
            self._http = openai.DefaultAsyncHttpxClient(
                base_url=sdk.base_url,
                headers={k: v for k, v in headers.items() if isinstance(v, str)},
                timeout=timeout,
                transport=transport,
            )
            self._transport = transport
            self._request_extensions = {"timeout": timeout.as_dict()}
            self._urls: dict[str, httpx2.URL] = {}
        except (openai.OpenAIError, ValueError, TypeError) as exc:
            raise ConfigError(
                self._redact(
                    f"cannot create a client for generator {settings.endpoint}: {exc}; "
                    "check `base_url`"
                )
            ) from None

    def __repr__(self) -> str:
        return f"OpenAIGenerator(endpoint={self.endpoint!r})"

    @property
    def endpoint(self) -> str:
        """URL and model of the endpoint, for limits, logs and error messages."""
        return self._settings.endpoint

    async def complete(self, messages: Sequence[ChatMessage]) -> Reply:
        """Return one chat completion for `messages` (its text; whether it was cut off).

        Raises:
            EndpointUnavailable: connect error, reset, timeout, 429, 5xx or a garbage 200
                body; worth retrying.
            RequestRefused: the endpoint refused the request (another 4xx).
            InvalidResponse: the reply cannot be used.
            ConfigError: the endpoint rejected the key (401/403) or the URL/model (404).
        """
        body = self.chat_body(messages, structured=False)
        if self._unstructured is None and self._settings.reply_format == "json":
            return await self._complete_structured(body)
        return await self._chat(body)

    async def _chat(self, body: dict[str, Any]) -> Reply:
        """POST one chat completion request `body`; raises as `complete` does."""
        return await self._post("/chat/completions", body)

    async def _post(self, path: str, body: dict[str, Any]) -> Reply:
        """POST `body` to `path` (under `base_url`) and read the reply, with the rate limits
        its headers state; raises as `complete` does."""
        s = self._settings
        with _map_openai_exceptions(s, self._redact):
            headers, completion = await self._exchange(self._request(path, body))
        return _reply(completion, s.endpoint, parse_rate_limits(headers))

    def _request(self, path: str, body: dict[str, Any]) -> httpx2.Request:
        """The request POSTing `body` to `path`, as the HTTP client would build it (its
        headers, timeouts and URL), from parts built once per generator and path."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = self._http.build_request("POST", path.lstrip("/")).url
        return httpx2.Request(
            "POST",
            url,
            headers=self._http.headers,
            content=json.dumps(body),
            extensions=self._request_extensions,
        )

    async def _exchange(self, request: httpx2.Request) -> tuple[Mapping[str, str], object]:
        """The reply's headers and decoded body (its JSON, or its text when it is not
        JSON), its failures raised as the SDK raises them (a timeout, a connection error,
        an error status).

        On the keep-alive transport the request goes to the transport itself: the HTTP
        client's per-request machinery (auth flow, cookies, redirect handling, event
        hooks; none of them used here) and its response object cost more CPU than the
        exchange. A plain 2xx reply is read as it came; any other (an error status, a
        redirect, an encoded body) becomes the HTTP library's response, and a redirect is
        sent again through the client, which follows it as the SDK's does.
        """
        transport = self._transport
        if transport is None:
            response = await _transported(self._http.send(request), request)
        else:
            raw = await _transported(transport.exchange(request), request)
            headers = {
                name.decode("latin-1").lower(): value.decode("latin-1")
                for name, value in raw.headers
            }
            plain = headers.get("content-encoding", "identity") == "identity"
            if 200 <= raw.status < 300 and plain:
                return headers, _decoded(headers, raw.body)
            response = httpx2.Response(
                raw.status, headers=raw.headers, content=raw.body, request=request
            )
            if response.is_redirect:
                response = await _transported(self._http.send(request), request)
        if response.is_error:
            error: object = response.text.strip()
            with contextlib.suppress(ValueError):
                error = json.loads(str(error))
            raise openai.APIStatusError(
                f"Error code: {response.status_code}", response=response, body=error
            )
        return response.headers, _decoded(response.headers, response.content)

    async def _complete_structured(self, body: dict[str, Any]) -> Reply:
        """Ask for a JSON candidate list; when the endpoint refuses `response_format`, send
        `body` once more without it and, if that succeeds, stop asking it for structured
        replies. Raises as `complete` does (the error of the request without it)."""
        try:
            reply = await self._chat({**body, "response_format": structured_reply_format()})
        except (RequestRefused, EndpointUnavailable) as exc:
            refusal = _structured_refusal(exc)
            if refusal is None:
                raise
            reply = await self._chat(body)
            if self._unstructured is None:  # once per endpoint, however many were in flight
                self._unstructured = refusal
                log.warning(
                    "structured_replies_unsupported",
                    endpoint=self.endpoint,
                    error=refusal,
                    hint="asking for numbered lines from now on",
                )
            return reply
        return structured_reply(reply)

    @property
    def settings(self) -> GeneratorSettings:
        """The settings this generator was made with."""
        return self._settings

    @property
    def reply_format(self) -> ReplyFormat:
        """How replies are asked for now: the settings' `reply_format`, or "lines" once the
        endpoint refused structured replies (`unstructured_reason` says how)."""
        return "lines" if self._unstructured is not None else self._settings.reply_format

    @property
    def unstructured_reason(self) -> str | None:
        """The endpoint's refusal of structured replies, or None if it has not refused."""
        return self._unstructured

    @property
    def prompt_mode(self) -> str:
        """ "chat" (an instruction, for instruct models) or "completion" (a continuation)."""
        return self._settings.prompt_mode

    @property
    def rate_limits(self) -> RateLimits:
        """The provider limits the engine paces requests under (`engine.protocols.RateLimited`)."""
        s = self._settings
        return RateLimits(rpm=s.rpm, tpm=s.tpm, max_tokens=s.max_tokens)

    async def continue_text(self, prompt: str) -> Reply:
        """Return one plain completion (`/v1/completions`) of `prompt`, stopped at a blank
        line: the continuation prompting mode. Raises as `complete` does."""
        return await self._post("/completions", self.continuation_body(prompt))

    # -- the parts of a request (also the Batch API adapter's, `openai_batch`) --------

    def chat_body(
        self, messages: Sequence[ChatMessage], *, structured: bool = True
    ) -> dict[str, Any]:
        """The JSON body of a chat request for `messages`; with `response_format` when the
        settings ask for JSON replies, unless `structured` is False."""
        body = {
            **self._fixed_body,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        }
        if structured and self._settings.reply_format == "json":
            body["response_format"] = structured_reply_format()
        return body

    def continuation_body(self, prompt: str) -> dict[str, Any]:
        """The JSON body of a plain completion request continuing `prompt`, stopped at a
        blank line."""
        body = {k: v for k, v in self._fixed_body.items() if k != "messages"}
        return {**body, "prompt": prompt, "stop": ["\n\n"]}

    def reply(self, completion: object) -> Reply:
        """The `Reply` in a completion's JSON body (a structured one turned into lines)."""
        reply = _reply(completion, self.endpoint)
        return structured_reply(reply) if self._settings.reply_format == "json" else reply

    @property
    def client(self) -> openai.AsyncOpenAI:
        """An SDK client (its own retries off): for the Batch API's files and batches."""
        return self._client

    def errors(self) -> contextlib.AbstractContextManager[None]:
        """Translate the SDK's exceptions raised in the block, as every request here does."""
        return _map_openai_exceptions(self._settings, self._redact)

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._client.close()
        await self._http.aclose()

    async def __aenter__(self) -> OpenAIGenerator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _transport_for(base_url: str) -> KeepAliveTransport | None:
    """The keep-alive transport for `base_url`, or None (the HTTP library's own) when the
    environment sends it through a proxy (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY; NO_PROXY
    honoured): a client given a transport of its own ignores those variables."""
    url = urllib.parse.urlsplit(base_url)
    proxies = urllib.request.getproxies()
    proxied = proxies.get(url.scheme) or proxies.get("all")
    if proxied and not urllib.request.proxy_bypass(url.hostname or ""):
        return None
    return KeepAliveTransport()


async def _transported(pending: Awaitable[_T], request: httpx2.Request) -> _T:
    """What `pending` (sending `request`) returns, a transport failure raised as the SDK
    raises it (a timeout; any other, a connection error)."""
    try:
        return await pending
    except httpx2.TimeoutException as exc:
        raise openai.APITimeoutError(request=request) from exc
    except httpx2.TransportError as exc:
        raise openai.APIConnectionError(request=request) from exc


def _decoded(headers: Mapping[str, str], content: bytes) -> object:
    """The reply's JSON, or its text when it is not JSON (as the SDK decodes a reply).

    Raises:
        ValueError: the body says it is JSON and is not.
    """
    content_type = headers.get("content-type", "*").split(";")[0]
    if not content_type.endswith("json"):
        return content.decode("utf-8", "replace")
    return json.loads(content)


def _reply(
    completion: object, endpoint: str, provider_limits: ProviderLimits | None = None
) -> Reply:
    """Return choices[0].message.content of the decoded JSON reply and whether it hit the
    token limit, or raise saying what was wrong (a garbled 200 reply is retried:
    EndpointUnavailable)."""
    if isinstance(completion, str):
        # The SDK returns the raw text when the body is not JSON.
        raise EndpointUnavailable(
            f"generator {endpoint} replied with a non-JSON body: "
            f"{completion[:_BODY_EXCERPT_CHARS]!r}; check that the URL points at an "
            "OpenAI-compatible API (usually ending in /v1)",
            endpoint=endpoint,
            kind="non_json",
        )
    choices = completion.get("choices") if isinstance(completion, dict) else None
    if not isinstance(choices, list) or not choices:
        raise EndpointUnavailable(
            f"generator {endpoint} replied with no choices",
            endpoint=endpoint,
            kind="empty_choices",
        )
    first = choices[0] if isinstance(choices[0], dict) else {}
    message = first.get("message")
    # A chat reply holds message.content; a plain completion holds text.
    content = message.get("content") if isinstance(message, dict) else first.get("text")
    if not isinstance(content, str):
        raise EndpointUnavailable(
            f"generator {endpoint} replied with no text content "
            f"(finish_reason={first.get('finish_reason')!r})",
            endpoint=endpoint,
            kind="no_content",
        )
    # JSON may carry lone surrogates ("\\ud800"); they cannot be stored or printed.
    text = content.encode("utf-8", "replace").decode("utf-8")
    usage = completion.get("usage") if isinstance(completion, dict) else None
    prompt_tokens, completion_tokens = _usage(usage)
    return Reply(
        text,
        truncated=first.get("finish_reason") == "length",
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        provider_limits=provider_limits,
    )


def _usage(usage: object) -> tuple[int | None, int | None]:
    """(prompt, completion) tokens of a reply's `usage`, or (None, None) when it has none
    or they are not counts (the engine then estimates them)."""
    if not isinstance(usage, dict):
        return None, None
    counts = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
        return counts[0], counts[1]
    return None, None


_STRUCTURED_REFUSALS = frozenset({400, 422, 500, 501})
"""Statuses that, answering a request with `response_format`, may mean "not supported":
400/422 from servers that validate the field, 500 from llama-cpp-python's server (its
validation error escapes as an internal error), 501. Not 502-504: a gateway or an
overloaded server says those of any request, and the retry loop handles them. A genuine
transient 500 met by a structured request also turns the endpoint to lines for the rest of
the session: a safe mistake (lines always work), and a resume asks in JSON again."""
_CODE_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(?P<body>.*?)\n?```\s*$", re.DOTALL)
_CANDIDATES_OPEN = re.compile(r'\s*\{\s*"candidates"\s*:\s*\[')
_LISTED_STRING = re.compile(r'\s*("(?:[^"\\]|\\.)*")\s*,?')


def structured_reply_format() -> dict[str, Any]:
    """The `response_format` request field that asks for `{"candidates": [text, ...]}`.

    OpenAI's strict JSON-schema form, which vLLM and the hosted APIs take; a new dict on
    each call, so a caller (the batch adapter) may keep or change its own.
    """
    schema = {
        "type": "object",
        "properties": {"candidates": {"type": "array", "items": {"type": "string"}}},
        "required": ["candidates"],
        "additionalProperties": False,
    }
    return {
        "type": "json_schema",
        "json_schema": {"name": "candidates", "strict": True, "schema": schema},
    }


def structured_reply(reply: Reply) -> Reply:
    """`reply` with its JSON candidate list written as numbered lines ("1. text"), the form
    the engine's parser takes, so the engine need not know how it was asked.

    A reply that is not that JSON is returned unchanged: the forgiving line parser reads its
    text as it would any reply. A reply cut off by the token limit keeps the candidates
    whose strings closed before the cut, as a cut-off list keeps its complete lines; each
    line ends with a newline, so the engine's "drop the cut-off last line" drops nothing.
    """
    texts = _structured_candidates(reply.text)
    if texts is None:
        log.info("structured_reply_unparsed", reply_head=reply.text[:80])
        return reply
    lines = [line for text in texts if (line := " ".join(text.split()))]
    return replace(reply, text="".join(f"{i}. {line}\n" for i, line in enumerate(lines, 1)))


def _structured_candidates(text: str) -> list[str] | None:
    """The strings of `{"candidates": [...]}` in `text` (in a code fence or not, complete or
    cut off), or None when it holds no such list."""
    fenced = _CODE_FENCE.match(text)
    if fenced is not None:
        text = fenced["body"]
    try:
        data = json.loads(text)
    except ValueError:
        return _cut_off_candidates(text)
    items = data.get("candidates") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return None
    texts = [item for item in items if isinstance(item, str)]
    return texts if texts or not items else None


def _cut_off_candidates(text: str) -> list[str] | None:
    """The complete strings of a candidate list whose JSON does not parse (cut off by the
    token limit, or followed by chatter), or None when it does not open such a list."""
    opened = _CANDIDATES_OPEN.match(text)
    if opened is None:
        return None
    texts: list[str] = []
    position = opened.end()
    while (item := _LISTED_STRING.match(text, position)) is not None:
        try:
            texts.append(json.loads(item[1]))
        except ValueError:  # an invalid escape: the list is unusable from here
            break
        position = item.end()
    return texts


def _structured_refusal(exc: EndpointUnavailable | RequestRefused) -> str | None:
    """The server's answer (as the error words it) when `exc`, raised for a request with
    `response_format`, may mean the endpoint does not support it; else None."""
    cause = exc.__cause__
    if isinstance(cause, openai.APIStatusError) and cause.status_code in _STRUCTURED_REFUSALS:
        return str(exc)
    return None


@contextlib.contextmanager
def _map_openai_exceptions(settings: GeneratorSettings, redact: _Redact) -> Iterator[None]:
    """Translate every SDK exception raised in the block into an engine error.

    The one place foreign exceptions are caught; CancelledError (a BaseException) passes.
    """
    endpoint = settings.endpoint
    try:
        yield
    except openai.APITimeoutError as exc:  # before APIConnectionError: it subclasses it
        raise EndpointUnavailable(
            f"generator {endpoint} timed out (connect {settings.connect_timeout}s, "
            f"read {settings.read_timeout}s); raise the read timeout or lower the "
            "concurrency on this endpoint",
            endpoint=endpoint,
            kind="timeout",
        ) from exc
    except openai.APIConnectionError as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, httpx2.ConnectError) or cause is exc:
            what, kind = "cannot connect to", "connect"
        elif isinstance(cause, httpx2.ProtocolError):  # closed mid-reply: a truncated body
            what, kind = "connection dropped mid-reply from", "protocol"
        else:  # ReadError / WriteError: reset by the peer or a middlebox
            what, kind = "connection reset by", "reset"
        raise EndpointUnavailable(
            redact(
                f"{what} generator {endpoint}: {type(cause).__name__}: {cause}; "
                "check that the server is running and the URL is right"
            ),
            endpoint=endpoint,
            kind=kind,
        ) from exc
    except openai.APIStatusError as exc:
        raise _status_error(exc, settings, redact) from exc
    except ValueError as exc:  # a 200 whose JSON body does not decode: garbage, retried
        raise EndpointUnavailable(
            redact(f"generator {endpoint} sent an unusable reply: {type(exc).__name__}: {exc}"),
            endpoint=endpoint,
            kind="non_json",
        ) from exc
    except (openai.OpenAIError, TypeError, KeyError) as exc:
        # APIResponseValidationError and the like: the reply cannot be used.
        log.debug("generator_bad_reply", endpoint=endpoint, error=type(exc).__name__)
        raise InvalidResponse(
            redact(f"generator {endpoint} sent an unusable reply: {type(exc).__name__}: {exc}"),
            endpoint=endpoint,
        ) from exc


def _status_error(
    exc: openai.APIStatusError, settings: GeneratorSettings, redact: _Redact
) -> Exception:
    """Map an HTTP error status to the engine error that says what to do next."""
    endpoint, status = settings.endpoint, exc.status_code
    said = redact(_body_excerpt(exc))
    if status == 429:
        retry_after = parse_retry_after(exc.response.headers)
        asked = f"it asks to wait {retry_after:g} s" if retry_after is not None else "no wait given"
        return EndpointUnavailable(
            f"generator {endpoint} is rate limiting (HTTP 429, {asked}): {said}",
            endpoint=endpoint,
            kind="429",
            retry_after=retry_after,
        )
    if status >= 500:
        return EndpointUnavailable(
            f"generator {endpoint} failed with HTTP {status}: {said}",
            endpoint=endpoint,
            kind="5xx",
        )
    if status == 408:
        return EndpointUnavailable(
            f"generator {endpoint} timed out server-side (HTTP 408): {said}",
            endpoint=endpoint,
            kind="timeout",
        )
    if status in (401, 403):
        return ConfigError(
            f"generator {endpoint} rejected the API key (HTTP {status}): {said}; set "
            f"${settings.api_key_env} (or `api_key_file`) to a valid key"
        )
    if status == 404:
        return ConfigError(
            f"generator {endpoint} answered HTTP 404: {said}; check `base_url` "
            "(it usually ends in /v1) and that `model` names a served model"
        )
    return RequestRefused(
        f"generator {endpoint} refused the request (HTTP {status}): {said}",
        endpoint=endpoint,
        status=status,
        detail=said,
    )


def _body_excerpt(exc: openai.APIStatusError) -> str:
    """The server's own error message if it sent one, else the start of the body."""
    body = exc.body
    if isinstance(body, dict):
        # OpenAI, vLLM: {"error": {"message": ...}}; FastAPI servers (llama.cpp): {"detail": ...}
        inner = body.get("error", body)
        if isinstance(inner, dict):
            inner = inner.get("message") or inner.get("detail") or inner
        text = str(inner)
    else:
        try:
            text = exc.response.text
        except Exception:  # a streamed body cannot be read here; the status still says enough
            text = ""
    return text[:_BODY_EXCERPT_CHARS] or "(empty body)"


_PROVIDER_PREFIX = "llm_provider-"
"""LiteLLM's proxy passes its provider's headers on under this prefix."""
_RESETS = ("requests", "tokens")
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds a rate-limited client should wait, from the response headers.

    In order: `retry-after-ms`; `Retry-After` in seconds or as an HTTP date; the same two
    with LiteLLM's `llm_provider-` prefix (a proxy passing on its provider's answer); then
    the rate-limit reset headers (`x-ratelimit-reset-requests` / `-tokens`, OpenAI style
    durations such as `1s`, `6m0s`, `20ms`, or seconds), of the limit whose
    `x-ratelimit-remaining-*` is 0, else the sooner. Names are matched in any case.

    Returns None when none is there or parseable; never negative.
    """
    lowered = {name.lower(): value.strip() for name, value in headers.items()}
    for prefix in ("", _PROVIDER_PREFIX):
        seconds = _retry_after(lowered, prefix)
        if seconds is not None:
            return seconds
    for prefix in ("", _PROVIDER_PREFIX):
        seconds = _ratelimit_reset(lowered, prefix)
        if seconds is not None:
            return seconds
    return None


_LIMIT_FIELDS = (  # ProviderLimits field, header, whether it is a count (else a duration)
    ("requests", "x-ratelimit-limit-requests", True),
    ("tokens", "x-ratelimit-limit-tokens", True),
    ("remaining_requests", "x-ratelimit-remaining-requests", True),
    ("remaining_tokens", "x-ratelimit-remaining-tokens", True),
    ("reset_requests_s", "x-ratelimit-reset-requests", False),
    ("reset_tokens_s", "x-ratelimit-reset-tokens", False),
)


def parse_rate_limits(headers: Mapping[str, str]) -> ProviderLimits | None:
    """The rate limits a reply's headers state: OpenAI's `x-ratelimit-limit-*`,
    `-remaining-*` and `-reset-*` (of requests and tokens; limits per minute, resets as
    durations such as `6m0s` or seconds), or LiteLLM's `llm_provider-` prefixed copies of
    its provider's. Names are matched in any case; unparseable values count as absent.

    Returns None when there are none (most self-hosted servers): the common case costs one
    pass over the header names.
    """
    found = {
        lowered: value.strip()
        for name, value in headers.items()
        if "ratelimit" in (lowered := name.lower())
    }
    if not found:
        return None
    values: dict[str, Any] = {}
    for field_name, header, count in _LIMIT_FIELDS:
        text = found.get(header, found.get(_PROVIDER_PREFIX + header))
        if text is None:
            continue
        if not count:
            values[field_name] = _duration(text)
            continue
        with contextlib.suppress(ValueError, OverflowError):
            values[field_name] = max(0, int(float(text)))
    return ProviderLimits(**values) if any(v is not None for v in values.values()) else None


def _retry_after(headers: Mapping[str, str], prefix: str) -> float | None:
    millis = headers.get(f"{prefix}retry-after-ms")
    if millis is not None:
        with contextlib.suppress(ValueError):
            return _non_negative(float(millis) / 1000.0)
    value = headers.get(f"{prefix}retry-after")
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return _non_negative(float(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return _non_negative(when.timestamp() - time.time())


def _ratelimit_reset(headers: Mapping[str, str], prefix: str) -> float | None:
    """The reset time of the exhausted limit (requests or tokens), else the sooner one."""
    resets: dict[str, float] = {}
    for limit in _RESETS:
        seconds = _duration(headers.get(f"{prefix}x-ratelimit-reset-{limit}", ""))
        if seconds is not None:
            resets[limit] = seconds
    exhausted = [
        seconds
        for limit, seconds in resets.items()
        if headers.get(f"{prefix}x-ratelimit-remaining-{limit}") == "0"
    ]
    if exhausted:
        return max(exhausted)
    return min(resets.values(), default=None)


def _duration(text: str) -> float | None:
    """Seconds of a Go-style duration ("1s", "6m0s", "1h2m3.5s", "20ms") or a number."""
    with contextlib.suppress(ValueError):
        return _non_negative(float(text))
    parts = _DURATION.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    return _non_negative(sum(float(number) * _UNIT_S[unit] for number, unit in parts))


def _non_negative(seconds: float) -> float | None:
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _redactor(*secrets: str) -> _Redact:
    """Return a function that blanks the secrets and URL credentials out of a message."""
    known = [s for s in secrets if s and s != PLACEHOLDER_API_KEY]

    def scrub(text: str) -> str:
        for secret in known:
            text = text.replace(secret, "***")
        return redact_url(text)

    return scrub
