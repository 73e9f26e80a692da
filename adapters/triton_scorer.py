"""A `Scorer` over Triton Inference Server (tritonclient gRPC or HTTP, asyncio).

The Triton models (see `triton_models/`) take raw inputs — UTF-8 text as `TEXT`, encoded
media bytes as `IMAGE` (or the target model's input name), all TYPE_STRING with dims [1] —
and return float32 `EMBEDDING`s;
all tokenisation and decoding happens server-side, so this process stays free of torch.
Every tritonclient / grpc / aiohttp exception is translated in `mils.adapters._triton`
(shared with the renderer and media-scorer adapters), the one place where foreign
exceptions become `engine.errors` types. Nothing is retried here: the engine
retries `EndpointUnavailable` with its own policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self

import numpy as np

from mils.adapters._resource import OpensAndCloses
from mils.adapters._triton import DEFAULT_TIMEOUT, TritonConnection, address
from mils.engine.errors import ConfigError, InvalidResponse
from mils.engine.logs import get_logger

__all__ = ["DEFAULT_TIMEOUT", "ScorerSettings", "TritonScorer"]

log = get_logger(__name__)

OUTPUT = "EMBEDDING"


@dataclass(frozen=True, slots=True, kw_only=True)
class ScorerSettings:
    """Where the scorer of a run lives: what `TritonScorer` (an encoder pair) is built from
    (and saved), or the style/content loss model of a style-transfer run."""

    url: str
    """"host:port" of the Triton server's gRPC (or HTTP) endpoint."""
    text_model: str = "clip_text"
    target_model: str = "clip_image"
    target_input: str = "IMAGE"
    """The target model's TYPE_STRING input ("IMAGE"; "VIDEO", "AUDIO" for other media)."""
    protocol: Literal["grpc", "http"] = "grpc"
    timeout: float = DEFAULT_TIMEOUT
    """Seconds allowed per request."""
    style_model: str | None = None
    """A style/content loss model on the same server (style transfer): the run's scorer
    instead of the encoder pair."""

    def __post_init__(self) -> None:
        address(self.url)

    def build(self) -> TritonScorer:
        return TritonScorer(
            self.url,
            text_model=self.text_model,
            target_model=self.target_model,
            target_input=self.target_input,
            protocol=self.protocol,
            timeout=self.timeout,
        )


class TritonScorer(OpensAndCloses):
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
        self._triton = TritonConnection(
            url, protocol=protocol, timeout=timeout, owner="TritonScorer"
        )
        self.url = self._triton.url
        self.text_model = text_model
        self.target_model = target_model
        self.target_input = target_input
        self.protocol = protocol
        self.timeout = timeout
        self._max_batch_size = 0

    @property
    def name(self) -> str:
        """Identity of the text encoder, the embedding-cache key: "url/text_model"."""
        return f"{self.url}/{self.text_model}"

    @property
    def max_batch_size(self) -> int:
        """Most texts one `embed_texts` call may carry (the text model's max_batch_size)."""
        return self._max_batch_size

    async def open(self) -> Self:
        """Connect and check the server and both models; see the class docstring."""
        if self._triton.is_open:
            return self
        await self._triton.open()
        try:
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
            EndpointUnavailable, InvalidResponse, ModelNotReady: see `mils.adapters._triton`.
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
        await self._triton.aclose()

    async def _inspect(self, model: str, input_name: str, parameter: str) -> int:
        """Check `model` is ready and shaped as we expect; return its max_batch_size."""
        config = await self._triton.model_config(model, parameter)
        return _check_config(config, model=model, input_name=input_name)

    async def _infer(self, model: str, input_name: str, rows: np.ndarray) -> np.ndarray:
        found = await self._triton.infer(model, {input_name: rows}, [OUTPUT])
        embeddings = found[OUTPUT]
        # Non-finite rows and a changed size are judged by the engine, per text.
        return _check_embeddings(embeddings, n=len(rows), endpoint=f"{self.url}/{model}")


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
