"""A `Scorer` over Triton Inference Server (tritonclient gRPC or HTTP, asyncio).

The Triton models (see `triton_models/`) take raw inputs — UTF-8 text as `TEXT`, encoded
media bytes as `IMAGE` (or the target model's input name), all TYPE_STRING with dims [1] —
and return float32 `EMBEDDING`s;
all tokenisation and decoding happens server-side, so this process stays free of torch.
Every tritonclient / grpc / aiohttp exception is translated in `_errors`, the one place
where foreign exceptions become `engine.errors` types. Nothing is retried here: the engine
retries `EndpointUnavailable` with its own policy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any, Literal, Self

import aiohttp
import grpc
import numpy as np
import tritonclient.grpc.aio as grpcclient
import tritonclient.http.aio as httpclient
from tritonclient.utils import InferenceServerException

from mils.engine.errors import (
    ConfigError,
    EndpointError,
    EndpointUnavailable,
    InvalidResponse,
    ModelNotReady,
)
from mils.engine.logs import get_logger

__all__ = ["DEFAULT_TIMEOUT", "ScorerSettings", "TritonScorer"]

log = get_logger(__name__)

DEFAULT_TIMEOUT = 30.0  # seconds per request, end to end
OUTPUT = "EMBEDDING"
# Triton statuses worth a retry, by the fault label EndpointUnavailable.kind carries.
# gRPC statuses arrive as "StatusCode.X" (we strip the prefix), HTTP ones as "503".
_TRANSIENT = {
    "UNAVAILABLE": "unavailable",
    "DEADLINE_EXCEEDED": "timeout",
    "RESOURCE_EXHAUSTED": "429",
    "INTERNAL": "5xx",  # our models report bad input as INVALID_ARG; INTERNAL is the server
    "429": "429",
}
_NOT_LOADED = ("unknown model", "is not found", "not ready", "is not loaded")
_KEEPALIVE = grpcclient.KeepAliveOptions()
# tritonclient's own channel options, plus a reconnect back-off capped at 1 s: gRPC's default
# (1 s growing 1.6x to 120 s) left a restarted Triton unused for 4-12 s after it was ready,
# long enough for samples to exhaust their retries.
_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
    ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
    ("grpc.keepalive_time_ms", _KEEPALIVE.keepalive_time_ms),
    ("grpc.keepalive_timeout_ms", _KEEPALIVE.keepalive_timeout_ms),
    ("grpc.keepalive_permit_without_calls", _KEEPALIVE.keepalive_permit_without_calls),
    ("grpc.http2.max_pings_without_data", _KEEPALIVE.http2_max_pings_without_data),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ScorerSettings:
    """Where the encoder pair of a run lives: what `TritonScorer` is built from (and saved)."""

    url: str
    """"host:port" of the Triton server's gRPC (or HTTP) endpoint."""
    text_model: str = "clip_text"
    target_model: str = "clip_image"
    target_input: str = "IMAGE"
    """The target model's TYPE_STRING input ("IMAGE"; "VIDEO", "AUDIO" for other media)."""
    protocol: Literal["grpc", "http"] = "grpc"
    timeout: float = DEFAULT_TIMEOUT
    """Seconds allowed per request."""

    def __post_init__(self) -> None:
        _address(self.url)

    def build(self) -> TritonScorer:
        return TritonScorer(
            self.url,
            text_model=self.text_model,
            target_model=self.target_model,
            target_input=self.target_input,
            protocol=self.protocol,
            timeout=self.timeout,
        )


class TritonScorer:
    """Embed texts and targets with a text/target model pair on one Triton server.

    Use as `async with TritonScorer(url, ...) as scorer:` or `await TritonScorer(...).open()`
    then `aclose()`. `open()` checks the server is live, both models are ready, and their
    configs have the expected tensors; it records the text model's max_batch_size.

    Args:
        url: "host:port" of the server's gRPC (or HTTP) endpoint; a scheme is stripped.
        text_model: the Triton model embedding `TEXT`.
        target_model: the Triton model embedding a raw target (image bytes, ...).
        target_input: the name of that model's TYPE_STRING input.
        protocol: "grpc" (default) or "http".
        timeout: seconds allowed per request.

    Raises (from open):
        EndpointUnavailable: the server cannot be reached.
        ModelNotReady: a model is not loaded.
        ConfigError: a model's config lacks the TEXT/target input or EMBEDDING output.
    """

    def __init__(
        self,
        url: str,
        *,
        text_model: str = "clip_text",
        target_model: str = "clip_image",
        target_input: str = "IMAGE",
        protocol: Literal["grpc", "http"] = "grpc",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if protocol not in ("grpc", "http"):
            raise ConfigError(f"Triton protocol must be 'grpc' or 'http', not {protocol!r}")
        if timeout <= 0:
            raise ConfigError(f"Triton timeout must be positive, not {timeout}")
        self.url = _address(url)
        self.text_model = text_model
        self.target_model = target_model
        self.target_input = target_input
        self.protocol = protocol
        self.timeout = timeout
        self._client: Any = None
        self._max_batch_size = 0

    @property
    def name(self) -> str:
        """Identity of the text encoder, the embedding-cache key: "url/text_model"."""
        return f"{self.url}/{self.text_model}"

    @property
    def max_batch_size(self) -> int:
        """Most texts one `embed_texts` call may carry (the text model's max_batch_size)."""
        return self._max_batch_size

    @property
    def _api(self) -> ModuleType:
        return grpcclient if self.protocol == "grpc" else httpclient

    async def open(self) -> Self:
        """Connect and check the server and both models; see the class docstring."""
        if self._client is not None:
            return self
        if self.protocol == "grpc":
            self._client = grpcclient.InferenceServerClient(self.url, channel_args=_CHANNEL_ARGS)
        else:
            self._client = httpclient.InferenceServerClient(self.url, conn_timeout=self.timeout)
        try:
            with self._errors(None):
                live = await self._client.is_server_live(**self._timeout_kw())
            if not live:
                raise EndpointUnavailable(
                    f"Triton server {self.url} is not live yet", endpoint=self.url, kind="not_live"
                )
            self._max_batch_size = await self._inspect(self.text_model, "TEXT", "text_model")
            await self._inspect(self.target_model, self.target_input, "target_model")
        except BaseException:
            await self.aclose()
            raise
        log.info(
            "triton_scorer_opened",
            url=self.url,
            protocol=self.protocol,
            text_model=self.text_model,
            target_model=self.target_model,
            max_batch_size=self._max_batch_size,
        )
        return self

    async def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Return float32 embeddings, shape (len(texts), dim).

        Raises:
            ConfigError: more texts than the model's max_batch_size.
            EndpointUnavailable, InvalidResponse, ModelNotReady: see `_errors`.
        """
        if len(texts) > self._max_batch_size:
            raise ConfigError(
                f"batch size {len(texts)} exceeds max_batch_size {self._max_batch_size} of "
                f"Triton model '{self.text_model}'; lower `score_batch` or raise "
                f"max_batch_size in triton_models/{self.text_model}/config.pbtxt"
            )
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        rows = np.array([[t.encode("utf-8", errors="replace")] for t in texts], dtype=np.object_)
        return await self._infer(self.text_model, "TEXT", rows)

    async def embed_target(self, data: bytes) -> np.ndarray:
        """Return the float32 embedding of one raw target (encoded image bytes), shape (dim,)."""
        rows = np.array([[bytes(data)]], dtype=np.object_)
        return (await self._infer(self.target_model, self.target_input, rows))[0]

    async def aclose(self) -> None:
        """Close the connection; safe to call twice."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # closing a broken channel must not mask errors
                await client.close()

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _timeout_kw(self) -> dict[str, float]:
        # gRPC takes a deadline per call; the HTTP client has one session-wide timeout.
        return {"client_timeout": self.timeout} if self.protocol == "grpc" else {}

    async def _inspect(self, model: str, input_name: str, parameter: str) -> int:
        """Check `model` is ready and shaped as we expect; return its max_batch_size."""
        if self._client is None:
            raise ConfigError("TritonScorer is closed; use `async with` or await open()")
        with self._errors(model):
            ready = await self._client.is_model_ready(model, **self._timeout_kw())
        if not ready:
            raise ModelNotReady(
                f"Triton model '{model}' is not ready on {self.url}; load it "
                f"(tritonserver --load-model {model}) or choose another `{parameter}`",
                endpoint=f"{self.url}/{model}",
            )
        with self._errors(model):
            if self.protocol == "grpc":
                config = (
                    await self._client.get_model_config(model, as_json=True, **self._timeout_kw())
                )["config"]
            else:
                config = await self._client.get_model_config(model)
        return _check_config(config, model=model, input_name=input_name)

    async def _infer(self, model: str, input_name: str, rows: np.ndarray) -> np.ndarray:
        if self._client is None:
            raise ConfigError("TritonScorer is closed; use `async with` or await open()")
        tensor = self._api.InferInput(input_name, list(rows.shape), "BYTES")
        tensor.set_data_from_numpy(rows)
        with self._errors(model):
            result = await self._client.infer(
                model,
                [tensor],
                outputs=[self._api.InferRequestedOutput(OUTPUT)],
                **self._timeout_kw(),
            )
            embeddings = result.as_numpy(OUTPUT)
        # Non-finite rows and a changed size are judged by the engine, per text.
        return _check_embeddings(embeddings, n=len(rows), endpoint=f"{self.url}/{model}")

    @contextlib.contextmanager
    def _errors(self, model: str | None) -> Iterator[None]:
        """Translate every foreign exception raised inside into an `EndpointError`."""
        try:
            yield
        except EndpointError:
            raise
        except Exception as exc:
            raise _translate(exc, url=self.url, model=model) from exc


def _address(url: str) -> str:
    """ "host:port" from a Triton URL (tritonclient rejects schemes), checked up front.

    Raises:
        ConfigError: no port, a port out of range, or credentials (masked in the message).
    """
    address = url.split("://", 1)[-1].rstrip("/")
    host, _, port = address.rpartition(":")
    if "@" in address:
        raise ConfigError(
            f"scorer url '***@{address.rsplit('@', 1)[1]}' carries credentials, which "
            "Triton clients do not use; pass `scorer_url` as host:port"
        )
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"scorer url {url!r} is not host:port with a port in 1-65535; pass `scorer_url` "
            "like 127.0.0.1:8001"
        )
    return address


def _translate(exc: Exception, *, url: str, model: str | None) -> EndpointError:
    """Map a tritonclient / grpc / aiohttp exception to the engine's error tree."""
    endpoint = f"{url}/{model}" if model else url
    where = f"Triton model '{model}' on {url}" if model else f"Triton server {url}"
    if isinstance(exc, InferenceServerException):
        status = (exc.status() or "").removeprefix("StatusCode.")
        message = exc.message() or str(exc)
    elif isinstance(exc, grpc.RpcError):  # raised unwrapped by a few client paths
        code = exc.code() if hasattr(exc, "code") else None
        status, message = (code.name if code else ""), str(exc)
    elif isinstance(exc, TimeoutError):  # asyncio.TimeoutError is TimeoutError on 3.11+
        return EndpointUnavailable(f"{where} timed out", endpoint=endpoint, kind="timeout")
    elif isinstance(exc, (aiohttp.ClientError, OSError)):
        return EndpointUnavailable(
            f"cannot reach {where}: {exc}", endpoint=endpoint, kind="connect"
        )
    else:
        return InvalidResponse(
            f"{where} gave an unusable answer: {type(exc).__name__}: {exc}", endpoint=endpoint
        )
    if model and any(marker in message.lower() for marker in _NOT_LOADED):
        return ModelNotReady(
            f"{where} is not loaded ({message}); load it (tritonserver --load-model {model}) "
            f"or choose a loaded model",
            endpoint=endpoint,
        )
    if status in _TRANSIENT or (status.isdigit() and int(status) >= 500):
        kind = _TRANSIENT.get(status, "5xx")
        if kind == "unavailable" and "connect" in message.lower():
            kind = "connect"
        return EndpointUnavailable(
            f"{where} unavailable ({status}): {message}", endpoint=endpoint, kind=kind
        )
    return InvalidResponse(
        f"{where} rejected the request ({status or 'client'}): {message}", endpoint=endpoint
    )


def _check_config(config: dict[str, Any], *, model: str, input_name: str) -> int:
    """Validate a model config (JSON form); return its max_batch_size."""
    fix = f"see triton_models/{model}/config.pbtxt"
    inputs = {t["name"]: t for t in config.get("input", [])}
    outputs = {t["name"]: t for t in config.get("output", [])}
    if inputs.get(input_name, {}).get("data_type") != "TYPE_STRING":
        raise ConfigError(
            f"Triton model '{model}' has no TYPE_STRING input '{input_name}' "
            f"(inputs: {sorted(inputs)}); {fix}"
        )
    if outputs.get(OUTPUT, {}).get("data_type") != "TYPE_FP32":
        raise ConfigError(
            f"Triton model '{model}' has no TYPE_FP32 output '{OUTPUT}' "
            f"(outputs: {sorted(outputs)}); {fix}"
        )
    in_dims = [int(d) for d in inputs[input_name].get("dims", [])]
    out_dims = [int(d) for d in outputs[OUTPUT].get("dims", [])]
    if in_dims not in ([1], [-1]) or len(out_dims) != 1 or out_dims[0] == 0:
        raise ConfigError(
            f"Triton model '{model}' has {input_name} dims {in_dims} and {OUTPUT} "
            f"dims {out_dims}; the scorer sends one item per row (dims [1]) and "
            f"takes one vector per row (dims [-1] or [dim]); {fix}"
        )
    max_batch_size = int(config.get("max_batch_size", 0))
    if max_batch_size < 1:
        raise ConfigError(
            f"Triton model '{model}' has max_batch_size {max_batch_size}; the "
            f"scorer sends batched [n, 1] inputs, so set max_batch_size >= 1; {fix}"
        )
    return max_batch_size


def _check_embeddings(embeddings: np.ndarray | None, *, n: int, endpoint: str) -> np.ndarray:
    """Shape (n, dim), as float32; else InvalidResponse."""
    if embeddings is None:
        raise InvalidResponse(f"{endpoint} returned no {OUTPUT} output", endpoint=endpoint)
    if embeddings.ndim != 2 or embeddings.shape[0] != n or embeddings.shape[1] == 0:
        raise InvalidResponse(
            f"{endpoint} returned {OUTPUT} of shape {embeddings.shape}, expected ({n}, dim)",
            endpoint=endpoint,
        )
    return embeddings.astype(np.float32, copy=False)
