"""OpenAIGenerator against real HTTP servers on 127.0.0.1: replies, error translation, secrecy.

The fake server is a real socket speaking HTTP/1.1 and the chat-completions protocol; the
request's `model` field picks how it misbehaves, so one server covers every case.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from mils.adapters.openai_generator import (
    PLACEHOLDER_API_KEY,
    GeneratorSettings,
    OpenAIGenerator,
    parse_rate_limits,
    parse_retry_after,
)
from mils.engine.config import RateLimits
from mils.engine.errors import (
    ConfigError,
    EndpointUnavailable,
    InvalidResponse,
    MilsError,
    RequestRefused,
)
from mils.engine.protocols import ChatMessage, ProviderLimits

SECRET = "sk-test-9f8e7d6c5b4a-SECRET"
MESSAGES: list[ChatMessage] = [{"role": "user", "content": "Describe the image."}]


def completion(content: str | None, finish_reason: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }
        ],
    }


def error_body(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "server_error"}}


class FakeServer:
    """Records requests; `stop` wakes slow handlers at teardown."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.stop = threading.Event()
        self.base_url = ""


def make_handler(fake: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def send(
            self, status: int, body: bytes, ctype: str = "application/json", **extra: str
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for name, value in extra.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(body)

        def send_json(self, status: int, obj: object, **extra: str) -> None:
            self.send(status, json.dumps(obj).encode(), **extra)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            fake.requests.append(body)
            fake.headers.append({k.lower(): v for k, v in self.headers.items()})
            fake.paths.append(self.path)
            # The client may have given up (the timeout test): nothing to answer then.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.reply(body["model"])

        def reply(self, scenario: str) -> None:
            if scenario == "good":
                self.send_json(200, completion("1. A cat on a table.\n2. A dog."))
            elif scenario == "429-seconds":
                self.send_json(429, error_body("slow down"), Retry_After="7")
            elif scenario == "429-date":
                when = email.utils.formatdate(time.time() + 30, usegmt=True)
                self.send_json(429, error_body("slow down"), Retry_After=when)
            elif scenario == "429-none":
                self.send_json(429, error_body("slow down"))
            elif scenario == "429-litellm":  # LiteLLM passes its provider's headers on, prefixed
                body = json.dumps(error_body("slow down")).encode()
                self.send_response(429)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("llm_provider-retry-after", "60")  # an underscore, as sent
                self.end_headers()
                self.wfile.write(body)
            elif scenario == "429-reset":  # OpenAI's rate-limit headers, no Retry-After
                self.send_json(
                    429,
                    error_body("slow down"),
                    x_ratelimit_remaining_requests="0",
                    x_ratelimit_reset_requests="6m0s",
                    x_ratelimit_remaining_tokens="1000",
                    x_ratelimit_reset_tokens="1s",
                )
            elif scenario == "limits":  # a hosted API states its limits on every reply
                self.send_json(
                    200,
                    completion("1. A cat."),
                    x_ratelimit_limit_requests="500",
                    x_ratelimit_limit_tokens="30000",
                    x_ratelimit_remaining_requests="499",
                    x_ratelimit_remaining_tokens="29000",
                    x_ratelimit_reset_requests="120ms",
                    x_ratelimit_reset_tokens="2s",
                )
            elif scenario.isdigit():
                self.send_json(int(scenario), error_body(f"failure {scenario}"))
            elif scenario == "detail":
                self.send_json(404, {"detail": "Not Found"})
            elif scenario == "echo-key":
                self.send_json(500, error_body(f"bad header {self.headers['Authorization']}"))
            elif scenario == "malformed":
                self.send(200, b'{"choices": [ not json')
            elif scenario == "html":
                self.send(200, b"<html>hello</html>", ctype="text/html")
            elif scenario == "empty-choices":
                self.send_json(200, {**completion("x"), "choices": []})
            elif scenario == "continue":
                text = {"index": 0, "text": " a cat\n0.9: a dog", "finish_reason": "stop"}
                self.send_json(200, {**completion(None), "choices": [text]})
            elif scenario == "length":
                self.send_json(200, completion("1. A cat.\n2. A do", finish_reason="length"))
            elif scenario == "null-content":
                self.send_json(200, completion(None))
            elif scenario == "redirect":  # the API moved: 307 keeps the method and body
                if self.path.startswith("/v1/"):
                    self.send(307, b"", Location="/v2/chat/completions")
                else:
                    self.send_json(200, completion("1. A moved cat."))
            elif scenario == "slow":
                fake.stop.wait(10)
                self.send_json(200, completion("too late"))
            else:
                self.send_json(400, error_body(f"unknown scenario {scenario}"))

    return Handler


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    fake = FakeServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(fake))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield fake
    finally:
        fake.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MILS_TEST_KEY", SECRET)
    return "MILS_TEST_KEY"


def settings_for(base_url: str, model: str, **kw: Any) -> GeneratorSettings:
    kw.setdefault("api_key_env", "MILS_TEST_KEY")
    return GeneratorSettings(base_url=base_url, model=model, read_timeout=5.0, **kw)


async def complete(settings: GeneratorSettings) -> str:
    async with OpenAIGenerator(settings) as generator:
        return (await generator.complete(MESSAGES)).text


async def failure(settings: GeneratorSettings) -> MilsError:
    with pytest.raises(MilsError) as info:
        await complete(settings)
    err = info.value
    assert SECRET not in str(err), "the API key leaked into an error message"
    assert settings.base_url in str(err), "errors must name the endpoint URL"
    return err


async def test_a_proxy_named_by_the_environment_carries_the_requests(
    fake_server: FakeServer, secret_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY takes the generator's requests (the fake server answers as the proxy, in
    absolute form), and NO_PROXY exempts a host, which is then reached directly."""
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, fake_server.base_url.removesuffix("/v1"))
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    settings = settings_for("http://generator.invalid/v1", "good")
    assert "A cat on a table." in await complete(settings)
    assert fake_server.paths == ["http://generator.invalid/v1/chat/completions"]
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "generator.invalid")
    error = await failure(settings)  # direct: the name does not resolve
    assert isinstance(error, EndpointUnavailable) and error.kind == "connect"
    assert len(fake_server.paths) == 1


async def test_good_reply_sends_the_settings(fake_server: FakeServer, secret_env: str) -> None:
    """A good reply returns the content; the request carries model, sampling, key and extras."""
    settings = settings_for(
        fake_server.base_url,
        "good",
        extra_body={"top_k": 40},
        extra_headers={"X-Tenant": "mils"},
    )
    assert await complete(settings) == "1. A cat on a table.\n2. A dog."
    body, headers = fake_server.requests[0], fake_server.headers[0]
    assert body["messages"] == MESSAGES
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.5, 0.9, 3000)
    assert body["top_k"] == 40 and headers["x-tenant"] == "mils"
    assert headers["authorization"] == f"Bearer {SECRET}"


async def test_continuation_mode_posts_a_plain_prompt_stopped_at_a_blank_line(
    fake_server: FakeServer,
) -> None:
    """`continue_text` sends the prompt to /completions with the sampling settings and a
    blank-line stop, and returns the completion's text."""
    settings = settings_for(fake_server.base_url, "continue", prompt_mode="completion")
    async with OpenAIGenerator(settings) as generator:
        assert generator.prompt_mode == "completion"
        reply = await generator.continue_text("Captions:\n0.5: a cow\n0.6:")
    assert reply.text == " a cat\n0.9: a dog" and not reply.truncated
    body = fake_server.requests[0]
    assert body["prompt"] == "Captions:\n0.5: a cow\n0.6:" and body["stop"] == ["\n\n"]
    assert "messages" not in body and body["temperature"] == 0.5


async def test_a_redirect_is_followed_as_the_sdk_follows_it(fake_server: FakeServer) -> None:
    assert await complete(settings_for(fake_server.base_url, "redirect")) == "1. A moved cat."
    assert fake_server.paths[-1] == "/v2/chat/completions"
    assert fake_server.requests[-1]["model"] == "redirect"  # the body went along


async def test_a_reply_cut_off_by_the_token_limit_says_so(fake_server: FakeServer) -> None:
    """finish_reason "length" marks the reply truncated; a finished one is not."""
    async with OpenAIGenerator(settings_for(fake_server.base_url, "length")) as generator:
        cut = await generator.complete(MESSAGES)
    async with OpenAIGenerator(settings_for(fake_server.base_url, "good")) as generator:
        whole = await generator.complete(MESSAGES)
    assert (cut.text, cut.truncated) == ("1. A cat.\n2. A do", True)
    assert whole.truncated is False


async def test_no_key_anywhere_sends_the_placeholder(
    fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without env var or file, local servers get the placeholder key."""
    monkeypatch.delenv("MILS_TEST_KEY", raising=False)
    await complete(settings_for(fake_server.base_url, "good"))
    assert fake_server.headers[0]["authorization"] == f"Bearer {PLACEHOLDER_API_KEY}"


async def test_key_file_is_used_when_env_is_unset(
    fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The key file is read (whitespace stripped) when the variable is unset."""
    monkeypatch.delenv("MILS_TEST_KEY", raising=False)
    key_file = tmp_path / "key"
    key_file.write_text(SECRET + "\n")
    await complete(settings_for(fake_server.base_url, "good", api_key_file=key_file))
    assert fake_server.headers[0]["authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize(
    ("scenario", "retry_after", "low", "high"),
    [
        ("429-seconds", True, 7.0, 7.0),
        ("429-date", True, 20.0, 31.0),
        ("429-none", False, 0, 0),
        ("429-litellm", True, 60.0, 60.0),
        ("429-reset", True, 360.0, 360.0),
    ],
)
async def test_429_is_retryable_with_retry_after(
    fake_server: FakeServer,
    secret_env: str,
    scenario: str,
    retry_after: bool,
    low: float,
    high: float,
) -> None:
    """429 is EndpointUnavailable(kind="429") with the wait asked for, from Retry-After in
    seconds or as a date, LiteLLM's `llm_provider-retry-after`, or a rate-limit reset header;
    the message says the wait, or that none was given (never "retry after Nones")."""
    err = await failure(settings_for(fake_server.base_url, scenario))
    assert isinstance(err, EndpointUnavailable) and err.kind == "429"
    assert "None" not in str(err) and "slow down" in str(err)
    if retry_after:
        assert err.retry_after is not None and low <= err.retry_after <= high
        assert f"it asks to wait {err.retry_after:g} s" in str(err)
    else:
        assert err.retry_after is None
        assert "(HTTP 429, no wait given)" in str(err)


@pytest.mark.parametrize("status", ["500", "502", "503"])
async def test_5xx_is_retryable_and_keeps_the_status(
    fake_server: FakeServer, secret_env: str, status: str
) -> None:
    """5xx is EndpointUnavailable(kind="5xx") whose message keeps the code and server text."""
    err = await failure(settings_for(fake_server.base_url, status))
    assert isinstance(err, EndpointUnavailable) and err.kind == "5xx"
    assert f"HTTP {status}" in str(err) and f"failure {status}" in str(err)
    assert err.endpoint == f"{fake_server.base_url} ({status})"


@pytest.mark.parametrize(
    ("status", "fix"),
    [("401", "MILS_TEST_KEY"), ("403", "MILS_TEST_KEY"), ("404", "`model` names a served model")],
)
async def test_auth_and_not_found_are_config_errors(
    fake_server: FakeServer, secret_env: str, status: str, fix: str
) -> None:
    """401/403/404 mean the key, URL or model is wrong: a ConfigError naming the fix."""
    err = await failure(settings_for(fake_server.base_url, status))
    assert type(err) is ConfigError
    assert f"HTTP {status}" in str(err) and fix in str(err) and f"({status})" in str(err)


async def test_fastapi_style_error_body_is_quoted_plainly(
    fake_server: FakeServer, secret_env: str
) -> None:
    """A {"detail": ...} body (llama.cpp's FastAPI server) shows as its text, not a dict."""
    err = await failure(settings_for(fake_server.base_url, "detail"))
    assert type(err) is ConfigError and "HTTP 404: Not Found;" in str(err)


@pytest.mark.parametrize("status", ["400", "422"])
async def test_other_4xx_is_a_refusal_with_the_servers_message(
    fake_server: FakeServer, secret_env: str, status: str
) -> None:
    """A 400-class refusal is RequestRefused (an InvalidResponse: this item fails) carrying
    the status and the server's own message, for the scheduler to compare refusals."""
    err = await failure(settings_for(fake_server.base_url, status))
    assert type(err) is RequestRefused and isinstance(err, InvalidResponse)
    assert f"failure {status}" in str(err)
    assert err.status == int(status) and err.detail == f"failure {status}"


@pytest.mark.parametrize(
    ("scenario", "words", "kind"),
    [
        ("malformed", "unusable reply", "non_json"),
        ("html", "non-JSON body", "non_json"),
        ("empty-choices", "no choices", "empty_choices"),
        ("null-content", "no text content", "no_content"),
    ],
)
async def test_garbage_bodies_are_retryable_faults(
    fake_server: FakeServer, secret_env: str, scenario: str, words: str, kind: str
) -> None:
    """Malformed JSON, non-JSON, no choices or null content are retryable, labelled faults."""
    err = await failure(settings_for(fake_server.base_url, scenario))
    assert type(err) is EndpointUnavailable and words in str(err) and err.kind == kind


async def test_slow_reply_times_out(fake_server: FakeServer, secret_env: str) -> None:
    """A reply slower than the read timeout is EndpointUnavailable(kind="timeout"), after one
    request: the SDK does not retry on its own."""
    settings = GeneratorSettings(
        base_url=fake_server.base_url, model="slow", read_timeout=0.3, api_key_env=secret_env
    )
    err = await failure(settings)
    assert isinstance(err, EndpointUnavailable) and err.kind == "timeout"
    assert len(fake_server.requests) == 1


async def test_unreachable_port_is_a_connect_error(secret_env: str) -> None:
    """Nothing listening is EndpointUnavailable(kind="connect") naming the URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    err = await failure(settings_for(f"http://127.0.0.1:{port}/v1", "good"))
    assert isinstance(err, EndpointUnavailable) and err.kind == "connect"


async def test_server_echoing_the_key_is_redacted(fake_server: FakeServer, secret_env: str) -> None:
    """Even a server that quotes the Authorization header cannot leak the key into errors."""
    err = await failure(settings_for(fake_server.base_url, "echo-key"))
    assert "***" in str(err)


async def test_key_never_in_repr_or_logs(fake_server: FakeServer, secret_env: str) -> None:
    """repr of settings and generator, and captured logs, never show the key."""
    settings = settings_for(
        fake_server.base_url, "malformed", extra_headers={"Authorization": f"Bearer {SECRET}"}
    )
    with capture_logs() as logs:
        async with OpenAIGenerator(settings) as generator:
            assert SECRET not in repr(generator) and SECRET not in repr(settings)
            assert generator.endpoint == f"{fake_server.base_url} (malformed)"
            with pytest.raises(EndpointUnavailable):
                await generator.complete(MESSAGES)
    assert SECRET not in repr(logs)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"base_url": "127.0.0.1:8000/v1"}, "base_url"),
        ({"model": " "}, "pass `model` NAME"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"read_timeout": 0}, "read_timeout"),
        ({"connect_timeout": -1}, "connect_timeout"),
        ({"api_key_env": ""}, "api_key_env"),
        ({"rpm": 0}, "`rpm`"),
        ({"tpm": -5}, "`tpm`"),
    ],
)
def test_settings_validation_names_the_field(changes: dict[str, Any], named: str) -> None:
    """Bad settings fail at construction with a ConfigError naming the field."""
    fields = {"base_url": "http://127.0.0.1:8000/v1", "model": "m", **changes}
    with pytest.raises(ConfigError, match=named):
        GeneratorSettings(**fields)


def test_missing_or_empty_key_file_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A named key file that is missing or empty stops the run, naming the file."""
    monkeypatch.delenv("MILS_TEST_KEY", raising=False)
    for path in (tmp_path / "absent", tmp_path / "empty"):
        if path.name == "empty":
            path.write_text("  \n")
        settings = settings_for("http://127.0.0.1:1/v1", "m", api_key_file=path)
        with pytest.raises(ConfigError, match=path.name):
            OpenAIGenerator(settings)


async def test_a_reply_carries_the_rate_limits_its_headers_state(fake_server: FakeServer) -> None:
    """A 200 reply's `x-ratelimit-*` headers reach `Reply.provider_limits`, parsed; a reply
    without them carries None; the settings' own limits are the generator's `rate_limits`."""
    settings = settings_for(fake_server.base_url, "limits", rpm=600, max_tokens=800)
    async with OpenAIGenerator(settings) as generator:
        reply = await generator.complete(MESSAGES)
        assert generator.rate_limits == RateLimits(rpm=600, max_tokens=800)
    assert reply.text == "1. A cat."
    assert reply.provider_limits == ProviderLimits(
        requests=500,
        tokens=30000,
        remaining_requests=499,
        remaining_tokens=29000,
        reset_requests_s=pytest.approx(0.12),
        reset_tokens_s=2.0,
    )
    async with OpenAIGenerator(settings_for(fake_server.base_url, "good")) as generator:
        assert (await generator.complete(MESSAGES)).provider_limits is None


def test_parse_rate_limits_reads_openai_and_litellm_headers() -> None:
    """OpenAI's headers in any case, LiteLLM's prefixed copies, junk as absent, none as None."""
    assert parse_rate_limits({"X-RateLimit-Limit-Requests": "60"}) == ProviderLimits(requests=60)
    prefixed = {
        "llm_provider-x-ratelimit-limit-tokens": "90000",
        "llm_provider-x-ratelimit-remaining-tokens": "0",
        "llm_provider-x-ratelimit-reset-tokens": "6m0s",
    }
    assert parse_rate_limits(prefixed) == ProviderLimits(
        tokens=90000, remaining_tokens=0, reset_tokens_s=360.0
    )
    assert parse_rate_limits({"x-ratelimit-limit-requests": "many"}) is None
    assert parse_rate_limits({"content-type": "application/json"}) is None


def test_parse_retry_after_forms() -> None:
    """Seconds, milliseconds, HTTP dates (past dates clamp to 0) and junk (None)."""
    assert parse_retry_after({"retry-after": "2.5"}) == 2.5
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_parse_retry_after_reads_litellm_prefixed_headers() -> None:
    """LiteLLM's `llm_provider-` headers count, in any case; the proxy's own come first."""
    assert parse_retry_after({"llm_provider-retry-after": "60"}) == 60.0
    assert parse_retry_after({"LLM_Provider-Retry-After": "60"}) == 60.0
    assert parse_retry_after({"llm_provider-retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after": "5", "llm_provider-retry-after": "60"}) == 5.0
    assert parse_retry_after({"llm_provider-x-ratelimit-reset-requests": "2s"}) == 2.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("2m59.56s", 179.56),
        ("7", 7.0),
        ("0.5", 0.5),
        ("soon", None),
        ("1x", None),
        ("1s junk", None),
        ("nan", None),
        ("", None),
    ],
)
def test_parse_retry_after_reads_ratelimit_reset_durations(
    text: str, seconds: float | None
) -> None:
    """`x-ratelimit-reset-requests` in OpenAI's Go-style durations or seconds; junk is None."""
    parsed = parse_retry_after({"x-ratelimit-reset-requests": text})
    assert parsed == pytest.approx(seconds) if seconds is not None else parsed is None


def test_parse_retry_after_picks_the_exhausted_limit() -> None:
    """With both resets given, the one of the limit at 0 remaining counts, else the sooner;
    an explicit Retry-After beats both."""
    resets = {"x-ratelimit-reset-requests": "6m0s", "x-ratelimit-reset-tokens": "1s"}
    assert parse_retry_after(resets) == 1.0
    assert parse_retry_after({**resets, "x-ratelimit-remaining-requests": "0"}) == 360.0
    assert parse_retry_after({**resets, "x-ratelimit-remaining-tokens": "0"}) == 1.0
    both = {**resets, "x-ratelimit-remaining-requests": "0", "x-ratelimit-remaining-tokens": "0"}
    assert parse_retry_after(both) == 360.0
    assert parse_retry_after({**resets, "retry-after": "3"}) == 3.0


@pytest.mark.integration
async def test_real_smollm2_server_replies(llama_server: Any) -> None:
    """The real llama.cpp server with SmolLM2 answers a MILS-style request with text."""
    settings = GeneratorSettings(base_url=llama_server.base_url, model="smollm2", max_tokens=64)
    async with OpenAIGenerator(settings) as generator:
        text = (
            await generator.complete(
                [
                    {"role": "system", "content": "You write short image captions."},
                    {"role": "user", "content": "List 3 captions for a photo of a cat."},
                ]
            )
        ).text
    assert isinstance(text, str) and text.strip()


async def test_real_smollm2_server_continues_a_scored_list(llama_server: Any) -> None:
    """llama.cpp's /v1/completions continues a continuation prompt with text."""
    settings = GeneratorSettings(
        base_url=llama_server.base_url, model="smollm2", max_tokens=48, prompt_mode="completion"
    )
    async with OpenAIGenerator(settings) as generator:
        reply = await generator.continue_text(
            "Short captions of one photograph, from worst to best:\n"
            "0.210: a dog on grass\n0.340: a red car on a street\n0.350:"
        )
    assert reply.text.strip()
