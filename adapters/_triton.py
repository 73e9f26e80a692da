"""One connection to a Triton Inference Server, shared by the Triton adapters.

`TritonScorer` (embeddings), `TritonRenderer` (text -> image, edits) and `TritonStyleScorer`
(style and content losses) all talk to Triton the same way: a "host:port" address checked
up front, a gRPC or HTTP asyncio client, readiness and config checks on open, and every
tritonclient / grpc / aiohttp exception translated here, in `translate`, into the tree of
`engine.errors`:

    connect error, UNAVAILABLE       -> EndpointUnavailable(kind="connect" | "unavailable")
    timeout, DEADLINE_EXCEEDED       -> EndpointUnavailable(kind="timeout")
    RESOURCE_EXHAUSTED, HTTP 429     -> EndpointUnavailable(kind="429")
    INTERNAL, HTTP 5xx               -> EndpointUnavailable(kind="5xx")
    unknown / unloaded model         -> ModelNotReady (fatal at start)
    any other status (INVALID_ARG:   -> InvalidResponse (this item fails, the run goes on)
    a text or image the model
    cannot use)

Nothing is retried here: the engine retries `EndpointUnavailable` with its own policy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from types import ModuleType
from typing import Any, Literal

import aiohttp
import grpc
import numpy as np
import tritonclient.grpc.aio as grpcclient
import tritonclient.http.aio as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from mils.engine.errors import (
    ConfigError,
    EndpointError,
    EndpointUnavailable,
    InvalidResponse,
    ModelNotReady,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "Protocol",
    "TritonConnection",
    "address",
    "check_batching",
    "check_tensor",
    "translate",
]

DEFAULT_TIMEOUT = 30.0  # seconds per request, end to end
Protocol = Literal["grpc", "http"]

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


class TritonConnection:
    """A gRPC or HTTP tritonclient with the checks and error translation every adapter needs.

    Args:
        url: "host:port" (a scheme is stripped; see `address`).
        protocol: "grpc" or "http".
        timeout: seconds allowed per request.
        owner: the adapter's class name, for "is closed" messages.
        parameter: the setting that holds `url`, named in error messages ("scorer_url").

    Raises:
        ConfigError: an unusable url, protocol or timeout.
    """

    def __init__(
        self,
        url: str,
        *,
        protocol: Protocol,
        timeout: float,
        owner: str,
        parameter: str = "scorer_url",
    ) -> None:
        if protocol not in ("grpc", "http"):
            raise ConfigError(f"Triton protocol must be 'grpc' or 'http', not {protocol!r}")
        if timeout <= 0:
            raise ConfigError(f"Triton timeout must be positive, not {timeout}")
        self.url = address(url, parameter=parameter)
        self.protocol: Protocol = protocol
        self.timeout = timeout
        self._owner = owner
        self._client: Any = None

    @property
    def api(self) -> ModuleType:
        """The tritonclient module of the protocol (InferInput, InferRequestedOutput)."""
        return grpcclient if self.protocol == "grpc" else httpclient

    @property
    def is_open(self) -> bool:
        return self._client is not None

    async def open(self) -> None:
        """Create the client and check the server is live; closes again on failure.

        Raises:
            EndpointUnavailable: the server cannot be reached or is not live yet.
        """
        if self._client is not None:
            return
        if self.protocol == "grpc":
            self._client = grpcclient.InferenceServerClient(self.url, channel_args=_CHANNEL_ARGS)
        else:
            self._client = httpclient.InferenceServerClient(self.url, conn_timeout=self.timeout)
        try:
            with self.errors(None):
                live = await self._client.is_server_live(**self._timeout_kw())
            if not live:
                raise EndpointUnavailable(
                    f"Triton server {self.url} is not live yet", endpoint=self.url, kind="not_live"
                )
        except BaseException:
            await self.aclose()
            raise

    async def model_config(self, model: str, parameter: str) -> dict[str, Any]:
        """The JSON config of `model`, once it is ready.

        Raises:
            ModelNotReady: the model is not loaded (the message names `parameter`).
        """
        client = self._require()
        with self.errors(model):
            ready = await client.is_model_ready(model, **self._timeout_kw())
        if not ready:
            raise ModelNotReady(
                f"Triton model '{model}' is not ready on {self.url}; load it "
                f"(tritonserver --load-model {model}) or choose another `{parameter}`",
                endpoint=f"{self.url}/{model}",
            )
        with self.errors(model):
            if self.protocol == "grpc":
                found = await client.get_model_config(model, as_json=True, **self._timeout_kw())
                config: dict[str, Any] = found["config"]
            else:
                config = await client.get_model_config(model)
        return config

    async def infer(
        self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray | None]:
        """Run `model` on `inputs` (object arrays of bytes for TYPE_STRING); the named
        outputs, None where the reply lacks one."""
        client = self._require()
        tensors = []
        for name, rows in inputs.items():
            tensor = self.api.InferInput(name, list(rows.shape), np_to_triton_dtype(rows.dtype))
            tensor.set_data_from_numpy(rows)
            tensors.append(tensor)
        with self.errors(model):
            result = await client.infer(
                model,
                tensors,
                outputs=[self.api.InferRequestedOutput(name) for name in outputs],
                **self._timeout_kw(),
            )
            return {name: result.as_numpy(name) for name in outputs}

    async def aclose(self) -> None:
        """Close the connection; safe to call twice."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # closing a broken channel must not mask errors
                await client.close()

    @contextlib.contextmanager
    def errors(self, model: str | None) -> Iterator[None]:
        """Translate every foreign exception raised inside into an `EndpointError`."""
        try:
            yield
        except EndpointError:
            raise
        except Exception as exc:
            raise translate(exc, url=self.url, model=model) from exc

    def _require(self) -> Any:
        if self._client is None:
            raise ConfigError(f"{self._owner} is closed; use `async with` or await open()")
        return self._client

    def _timeout_kw(self) -> dict[str, float]:
        # gRPC takes a deadline per call; the HTTP client has one session-wide timeout.
        return {"client_timeout": self.timeout} if self.protocol == "grpc" else {}


def address(url: str, *, parameter: str = "scorer_url") -> str:
    """ "host:port" from a Triton URL (tritonclient rejects schemes), checked up front.

    Raises:
        ConfigError: no port, a port out of range, or credentials (masked in the message);
            the message names `parameter`, the setting to fix.
    """
    what = parameter.replace("_", " ")
    address = url.split("://", 1)[-1].rstrip("/")
    host, _, port = address.rpartition(":")
    if "@" in address:
        raise ConfigError(
            f"{what} '***@{address.rsplit('@', 1)[1]}' carries credentials, which "
            f"Triton clients do not use; pass `{parameter}` as host:port"
        )
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"{what} {url!r} is not host:port with a port in 1-65535; pass `{parameter}` "
            "like 127.0.0.1:8001"
        )
    return address


def translate(exc: Exception, *, url: str, model: str | None) -> EndpointError:
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


def check_tensor(
    tensors: Sequence[Mapping[str, Any]],
    name: str,
    data_type: str,
    *,
    model: str,
    role: str,
) -> None:
    """Raise ConfigError unless a config's `input`/`output` list has `name` of `data_type`
    with one value per row (dims [1] or [-1])."""
    found = {t["name"]: t for t in tensors}
    fix = f"see triton_models/{model}/config.pbtxt"
    if found.get(name, {}).get("data_type") != data_type:
        raise ConfigError(
            f"Triton model '{model}' has no {data_type} {role} '{name}' "
            f"({role}s: {sorted(found)}); {fix}"
        )
    dims = [int(d) for d in found[name].get("dims", [])]
    if dims not in ([1], [-1]):
        raise ConfigError(
            f"Triton model '{model}' has {role} {name} dims {dims}; one value per row "
            f"(dims [1]) is expected; {fix}"
        )


def check_batching(config: Mapping[str, Any], *, model: str) -> int:
    """The config's max_batch_size; ConfigError below 1 (we send batched [n, 1] tensors)."""
    max_batch_size = int(config.get("max_batch_size", 0))
    if max_batch_size < 1:
        raise ConfigError(
            f"Triton model '{model}' has max_batch_size {max_batch_size}; requests carry "
            f"batched [n, 1] inputs, so set max_batch_size >= 1; "
            f"see triton_models/{model}/config.pbtxt"
        )
    return max_batch_size
