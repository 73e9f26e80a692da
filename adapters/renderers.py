"""Renderers: a candidate text (+ a sample's image) -> an image, for `RenderThenScore`.

Two backends, one `RendererSettings` to build either:

    TritonRenderer        a python-backend model on Triton Inference Server: text-to-image
                          (TEXT, SEED -> IMAGE) or an editor (IMAGE, TEXT, SEED -> IMAGE),
                          every tensor one value per row, images as encoded bytes (PNG out);
                          closed world `scene_render` / `scene_edit`, real `sd_render` /
                          `pix2pix_edit`. Errors are translated as for the scorer
                          (`mils.adapters._triton`): a text the model refuses fails alone
                          (InvalidResponse), an unreachable server is retried.
    OpenAIImageRenderer   an OpenAI-compatible images API over httpx: text-to-image is
                          POST {base}/images/generations (JSON), an editor POST
                          {base}/images/edits (multipart, the sample's image as `image`).
                          The reply's `data[0].b64_json` is decoded, or its `data[0].url`
                          fetched (without the API key: such URLs point at storage hosts).

A renderer is deterministic for a fixed seed: its `name` carries the model, the endpoint and
the seed, and `reads` the sample inputs it uses, which is what the engine's render cache keys
on. `seed` is sent to OpenAI-compatible servers as a body field: many (vLLM-omni, LocalAI,
self-hosted diffusers servers) honour it; OpenAI's own API ignores unknown fields or refuses
them (pass `seed=None` there).

HTTP errors of the images API map as the generator's do (`adapters.openai_generator`):

    connect / reset / timeout, 408  -> EndpointUnavailable (retried)
    429                             -> EndpointUnavailable(kind="429", retry_after=the wait the
                                       server asked for), which the engine's retry loop honours
    5xx, a 200 that is not JSON     -> EndpointUnavailable (retried)
    400, 422, ... (a prompt refused -> RequestRefused, an InvalidResponse: that text fails alone
    by a content policy)
    401 / 403 / 404                 -> ConfigError naming the endpoint, the model and the fix

The API key comes from the settings or the environment, goes only into the Authorization
header of API requests, and is scrubbed from every message; `repr` never shows it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import os
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import httpx
import numpy as np

from mils.adapters._resource import OpensAndCloses
from mils.adapters._triton import (
    Protocol,
    TritonConnection,
    address,
    check_batching,
    check_tensor,
)
from mils.adapters.openai_generator import DEFAULT_API_KEY_ENV, parse_retry_after
from mils.engine.errors import (
    ConfigError,
    EndpointUnavailable,
    InvalidResponse,
    RequestRefused,
)
from mils.engine.logs import get_logger, redact_url

__all__ = [
    "DEFAULT_RENDER_SIZE",
    "DEFAULT_RENDER_TIMEOUT",
    "OpenAIImageRenderer",
    "RendererSettings",
    "TritonRenderer",
]

log = get_logger(__name__)

DEFAULT_RENDER_SIZE = "512x512"
DEFAULT_RENDER_TIMEOUT = 120.0
"""Seconds per render: a diffusion model on a busy GPU takes tens of seconds."""
_PNG = b"\x89PNG\r\n\x1a\n"
_IMAGE_TYPES = ((_PNG, "image/png", "png"), (b"\xff\xd8\xff", "image/jpeg", "jpg"))
_BODY_EXCERPT_CHARS = 200
_DECODE_IN_THREAD_BYTES = 1 << 20
"""Replies larger than this are parsed and decoded off the event loop."""
OUTPUT = "IMAGE"


@dataclass(frozen=True, slots=True, kw_only=True)
class RendererSettings:
    """Where and how candidate texts are rendered: what a renderer is built from (and saved).

    Holds the API key only when given here (hidden from `repr`); else it is read from
    `api_key_env` when the renderer is built.
    """

    kind: Literal["triton", "openai"]
    """"triton" (a Triton model) or "openai" (an OpenAI-compatible images API)."""
    url: str
    """Triton: "host:port" (gRPC) or "http://host:port" (HTTP); openai: the API root (/v1)."""
    model: str
    """The Triton model, or the `model` field of images API requests."""
    seed: int | None = 0
    """Fixed seed of every render (None: send none; openai only)."""
    image_input: str | None = None
    """The sample input sent as the image to edit (None: text-to-image)."""
    api_key: str | None = field(default=None, repr=False)
    """openai: the API key (None: read `api_key_env`). Prefer `api_key_env` for settings
    that are saved with a run: a key given here is part of the dataclass's fields."""
    api_key_env: str = DEFAULT_API_KEY_ENV
    """openai: the environment variable holding the key."""
    size: str = DEFAULT_RENDER_SIZE
    """openai: the `size` asked for ("WIDTHxHEIGHT")."""
    timeout_s: float = DEFAULT_RENDER_TIMEOUT
    """Seconds allowed per render."""

    def __post_init__(self) -> None:
        if self.kind not in ("triton", "openai"):
            raise ConfigError(f"renderer kind is {self.kind!r}; pass `kind` triton or openai")
        if not self.model.strip():
            raise ConfigError("renderer model is empty; pass `model` NAME")
        if not self.timeout_s > 0:
            raise ConfigError(f"renderer timeout_s is {self.timeout_s}; it must be positive")
        if self.kind == "triton":
            if self.seed is None:
                raise ConfigError(
                    "Triton renderers take a fixed seed (their SEED input); pass `seed` N"
                )
            address(self.url, parameter="renderer_url")
        else:
            _check_http_url(self.url)
            _check_size(self.size)

    def build(self) -> TritonRenderer | OpenAIImageRenderer:
        """The renderer these settings describe (not yet opened)."""
        if self.kind == "triton":
            assert self.seed is not None  # checked in __post_init__
            return TritonRenderer(
                self.url,
                model=self.model,
                seed=self.seed,
                image_input=self.image_input,
                timeout=self.timeout_s,
            )
        return OpenAIImageRenderer(
            self.url,
            model=self.model,
            seed=self.seed,
            image_input=self.image_input,
            size=self.size,
            api_key=self.api_key,
            api_key_env=self.api_key_env,
            timeout=self.timeout_s,
        )


class TritonRenderer(OpensAndCloses):
    """Render texts with a Triton model: text-to-image, or an editor of a sample's image.

    Use as `async with TritonRenderer(url, model=...) as renderer:` or `await open()` then
    `aclose()`. `open()` checks the server is live and the model is ready with the
    inputs the mode needs (TEXT, SEED and, for an editor, IMAGE) and a TYPE_STRING IMAGE
    output.

    Args:
        url: "host:port" of the gRPC endpoint, or "http://host:port" of the HTTP one.
        model: the Triton model ("scene_render", "sd_render", "pix2pix_edit", ...).
        seed: the fixed seed of every render (part of `name`: the cache's identity).
        image_input: the sample input sent as IMAGE (an editor), or None (text-to-image).
        protocol: "grpc" or "http"; None infers it from the url's scheme (http(s):// is
            HTTP, anything else gRPC).
        timeout: seconds allowed per render.

    Raises:
        ConfigError: an unusable url (at construction); from open, a model without the
            expected tensors.
        ModelNotReady: from open, the model is not loaded.
        EndpointUnavailable: from open, the server cannot be reached.
    """

    suffix = ".png"

    def __init__(
        self,
        url: str,
        *,
        model: str,
        seed: int = 0,
        image_input: str | None = None,
        protocol: Protocol | None = None,
        timeout: float = DEFAULT_RENDER_TIMEOUT,
    ) -> None:
        if protocol is None:
            protocol = "http" if url.lower().startswith(("http://", "https://")) else "grpc"
        self._triton = TritonConnection(
            url,
            protocol=protocol,
            timeout=timeout,
            owner="TritonRenderer",
            parameter="renderer_url",
        )
        self.url = self._triton.url
        self.model = model
        self.seed = int(seed)
        self.image_input = image_input

    def __repr__(self) -> str:
        return f"TritonRenderer(name={self.name!r})"

    @property
    def name(self) -> str:
        """ "model@host:port#seedN": the identity of every render (the cache key's part)."""
        return f"{self.model}@{self.url}#seed{self.seed}"

    @property
    def reads(self) -> tuple[str, ...]:
        return (self.image_input,) if self.image_input else ()

    async def open(self) -> Self:
        """Connect and check the model; see the class docstring."""
        if self._triton.is_open:
            return self
        await self._triton.open()
        try:
            config = await self._triton.model_config(self.model, "model")
            self._check_config(config)
        except BaseException:
            await self.aclose()
            raise
        log.info("triton_renderer_opened", renderer=self.name, protocol=self._triton.protocol)
        return self

    async def render(self, text: str, inputs: Mapping[str, bytes]) -> bytes:
        """The PNG the model renders for `text` (and the sample's image, for an editor).

        Raises:
            InvalidResponse: the model refused this text or image, or answered no image.
            EndpointUnavailable, ModelNotReady: see `mils.adapters._triton`.
        """
        tensors = {
            "TEXT": np.array([[text.encode("utf-8", errors="replace")]], dtype=np.object_),
            "SEED": np.array([[self.seed]], dtype=np.int64),
        }
        if self.image_input:
            tensors["IMAGE"] = np.array([[bytes(inputs[self.image_input])]], dtype=np.object_)
        found = await self._triton.infer(self.model, tensors, [OUTPUT])
        return _one_image(found[OUTPUT], endpoint=f"{self.url}/{self.model}")

    async def aclose(self) -> None:
        """Close the connection; safe to call twice."""
        await self._triton.aclose()

    def _check_config(self, config: dict[str, Any]) -> None:
        model = self.model
        names = {t["name"] for t in config.get("input", [])}
        if self.image_input and "IMAGE" not in names:
            raise ConfigError(
                f"Triton model '{model}' takes no IMAGE input (inputs: {sorted(names)}): it "
                f"is not an editor; drop `image_input` ({self.image_input!r}) to render "
                "from text alone, or choose an editing model"
            )
        if not self.image_input and "IMAGE" in names:
            raise ConfigError(
                f"Triton model '{model}' edits an IMAGE input; set `image_input` to the "
                "sample input to edit (e.g. 'content'), or choose a text-to-image model"
            )
        inputs, outputs = config.get("input", []), config.get("output", [])
        check_tensor(inputs, "TEXT", "TYPE_STRING", model=model, role="input")
        check_tensor(inputs, "SEED", "TYPE_INT64", model=model, role="input")
        if self.image_input:
            check_tensor(inputs, "IMAGE", "TYPE_STRING", model=model, role="input")
        check_tensor(outputs, OUTPUT, "TYPE_STRING", model=model, role="output")
        check_batching(config, model=model)


def _one_image(found: np.ndarray | None, *, endpoint: str) -> bytes:
    """The single encoded image of an IMAGE output of shape (1, 1)."""
    if found is None or found.size != 1:
        shape = None if found is None else found.shape
        raise InvalidResponse(
            f"{endpoint} returned IMAGE of shape {shape}, expected one image", endpoint=endpoint
        )
    data = found.reshape(-1)[0]
    if not isinstance(data, bytes) or not data.startswith(_PNG):
        raise InvalidResponse(f"{endpoint} returned an IMAGE that is not a PNG", endpoint=endpoint)
    return data


class OpenAIImageRenderer(OpensAndCloses):
    """Render texts with an OpenAI-compatible images API (see the module docstring).

    Use as `async with OpenAIImageRenderer(base_url, model=...) as renderer:` or
    `await open()` then `aclose()`; `open()` only creates the HTTP client (images APIs have
    no cheap readiness check: a wrong URL, key or model shows on the first render, as a
    ConfigError).

    Args:
        base_url: the API root, usually ending in /v1.
        model: the `model` field of every request.
        seed: the `seed` field of every request (None: not sent).
        image_input: the sample input uploaded as the image to edit (None: text-to-image).
        size: the `size` field ("512x512").
        api_key: the key; None reads `api_key_env` (unset: no Authorization header).
        api_key_env: the environment variable holding the key.
        timeout: seconds allowed per render (connect: at most 10).

    Raises:
        ConfigError: an unusable base_url or size.
    """

    suffix = ".png"

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        seed: int | None = 0,
        image_input: str | None = None,
        size: str = DEFAULT_RENDER_SIZE,
        api_key: str | None = None,
        api_key_env: str = DEFAULT_API_KEY_ENV,
        timeout: float = DEFAULT_RENDER_TIMEOUT,
    ) -> None:
        _check_http_url(base_url)
        _check_size(size)
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.seed = seed
        self.image_input = image_input
        self.size = size
        self._api_key_env = api_key_env
        key = api_key if api_key is not None else os.environ.get(api_key_env, "")
        self._headers = {"Authorization": f"Bearer {key.strip()}"} if key.strip() else {}
        self._secrets = [s for s in (key.strip(), _url_password(base_url)) if s]
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"OpenAIImageRenderer(name={self.name!r})"

    @property
    def endpoint(self) -> str:
        """URL (credentials masked) and model, for logs and error messages."""
        return f"{redact_url(self.base_url)} ({self.model})"

    @property
    def name(self) -> str:
        """ "model@base_url#seedN" (credentials masked): the identity of every render."""
        seed = "noseed" if self.seed is None else f"seed{self.seed}"
        return f"{self.model}@{redact_url(self.base_url)}#{seed}"

    @property
    def reads(self) -> tuple[str, ...]:
        return (self.image_input,) if self.image_input else ()

    async def open(self) -> Self:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout)
        return self

    async def render(self, text: str, inputs: Mapping[str, bytes]) -> bytes:
        """The image the API returns for `text` (an edit of the sample's image, for an editor).

        Raises:
            EndpointUnavailable: connect error, timeout, 429, 5xx, a 200 that is not JSON.
            InvalidResponse: the prompt was refused (RequestRefused), or no usable image came.
            ConfigError: the key (401/403) or the URL or model (404) is wrong.
        """
        client = self._require()
        fields: dict[str, Any] = {
            "model": self.model,
            "prompt": text,
            "n": 1,
            "size": self.size,
            "response_format": "b64_json",
        }
        if self.seed is not None:
            fields["seed"] = self.seed
        with self._errors():
            if self.image_input:
                image = bytes(inputs[self.image_input])
                mime, extension = _image_type(image)
                reply = await client.post(
                    f"{self.base_url}/images/edits",
                    data={name: str(value) for name, value in fields.items()},
                    files={"image": (f"{self.image_input}.{extension}", image, mime)},
                    headers=self._headers,
                )
            else:
                reply = await client.post(
                    f"{self.base_url}/images/generations", json=fields, headers=self._headers
                )
            self._check_status(reply)
            if len(reply.content) > _DECODE_IN_THREAD_BYTES:
                found = await asyncio.to_thread(self._image_or_url, reply)
            else:
                found = self._image_or_url(reply)
            return found if isinstance(found, bytes) else await self._fetch(client, found)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _require(self) -> httpx.AsyncClient:
        if self._client is None:
            raise ConfigError("OpenAIImageRenderer is closed; use `async with` or await open()")
        return self._client

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return redact_url(text)

    def _image_or_url(self, reply: httpx.Response) -> bytes | str:
        """The decoded `b64_json` of the reply's first image, else its `url`."""
        item = self._first_item(reply)
        if isinstance(item.get("b64_json"), str):
            return self._decode(item["b64_json"])
        if isinstance(item.get("url"), str):
            url: str = item["url"]
            return url
        raise InvalidResponse(
            f"images API {self.endpoint} answered without `b64_json` or `url` in data[0]",
            endpoint=self.endpoint,
        )

    def _first_item(self, reply: httpx.Response) -> dict[str, Any]:
        try:
            body = reply.json()
        except ValueError:
            raise EndpointUnavailable(
                self._scrub(
                    f"images API {self.endpoint} sent a reply that is not JSON: "
                    f"{reply.text[:_BODY_EXCERPT_CHARS]!r}"
                ),
                endpoint=self.endpoint,
                kind="non_json",
            ) from None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not data or not isinstance(data[0], dict):
            raise InvalidResponse(
                f"images API {self.endpoint} answered without a `data` list of images",
                endpoint=self.endpoint,
            )
        item: dict[str, Any] = data[0]
        return item

    def _decode(self, encoded: str) -> bytes:
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidResponse(
                f"images API {self.endpoint} sent a `b64_json` that is not base64",
                endpoint=self.endpoint,
            ) from None

    async def _fetch(self, client: httpx.AsyncClient, url: str) -> bytes:
        # No API key: a returned URL usually points at a storage host, not the API.
        reply = await client.get(url)
        if reply.status_code != 200:
            raise InvalidResponse(
                f"images API {self.endpoint} returned an image URL that answered HTTP "
                f"{reply.status_code}",
                endpoint=self.endpoint,
            )
        return reply.content

    def _check_status(self, reply: httpx.Response) -> None:
        """Raise the engine error an HTTP error status means (see the module docstring)."""
        status = reply.status_code
        if status < 400:
            return
        said = self._scrub(_error_message(reply))
        what = f"images API {self.endpoint}"
        if status == 429:
            wait = parse_retry_after(reply.headers)
            asked = f"it asks to wait {wait:g} s" if wait is not None else "no wait given"
            raise EndpointUnavailable(
                f"{what} is rate limiting (HTTP 429, {asked}): {said}",
                endpoint=self.endpoint,
                kind="429",
                retry_after=wait,
            )
        if status >= 500 or status == 408:
            kind = "timeout" if status == 408 else "5xx"
            raise EndpointUnavailable(
                f"{what} failed with HTTP {status}: {said}", endpoint=self.endpoint, kind=kind
            )
        if status in (401, 403):
            raise ConfigError(
                f"{what} rejected the API key (HTTP {status}): {said}; set "
                f"${self._api_key_env} (or the renderer's `api_key`) to a valid key"
            )
        if status == 404:
            raise ConfigError(
                f"{what} answered HTTP 404: {said}; check the renderer `url` (it usually "
                "ends in /v1) and that `model` names a served images model"
            )
        raise RequestRefused(
            f"{what} refused the prompt (HTTP {status}): {said}",
            endpoint=self.endpoint,
            status=status,
            detail=said,
        )

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate every httpx exception raised in the block into an engine error."""
        what = f"images API {self.endpoint}"
        try:
            yield
        except httpx.TimeoutException as exc:
            raise EndpointUnavailable(
                f"{what} timed out ({self._timeout.read} s); raise the renderer's `timeout_s` "
                "or lower the number of renders in flight",
                endpoint=self.endpoint,
                kind="timeout",
            ) from exc
        except httpx.TransportError as exc:
            kind = "connect" if isinstance(exc, httpx.ConnectError) else "reset"
            raise EndpointUnavailable(
                self._scrub(
                    f"cannot reach {what}: {type(exc).__name__}: {exc}; check that the server "
                    "is running and the URL is right"
                ),
                endpoint=self.endpoint,
                kind=kind,
            ) from exc
        except httpx.HTTPError as exc:  # an invalid URL from the reply, too many redirects
            raise InvalidResponse(
                self._scrub(f"{what} failed: {type(exc).__name__}: {exc}"),
                endpoint=self.endpoint,
            ) from exc


def _error_message(reply: httpx.Response) -> str:
    """The server's own error message if it sent one, else the start of the body."""
    try:
        body = reply.json()
    except ValueError:
        return reply.text[:_BODY_EXCERPT_CHARS] or "(empty body)"
    inner = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(inner, dict):
        inner = inner.get("message") or inner.get("detail") or inner
    return str(inner)[:_BODY_EXCERPT_CHARS] or "(empty body)"


def _image_type(data: bytes) -> tuple[str, str]:
    """(MIME type, extension) of an encoded image, by its signature (PNG if unknown)."""
    for signature, mime, extension in _IMAGE_TYPES:
        if data.startswith(signature):
            return mime, extension
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp", "webp"
    return "image/png", "png"


def _check_http_url(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"renderer url {redact_url(url)!r} is not an http(s) URL; pass `url` like "
            "http://127.0.0.1:8000/v1"
        )


def _check_size(size: str) -> None:
    width, _, height = size.partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise ConfigError(f"renderer size is {size!r}; pass `size` as WIDTHxHEIGHT (512x512)")


def _url_password(url: str) -> str:
    return urllib.parse.urlsplit(url).password or ""
