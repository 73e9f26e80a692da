"""Media scorers: rendered media -> named terms, for `RenderThenScore`.

    AlignmentScorer     {"alignment": cosine(text embedding of the sample's prompt, image
                        embedding of the render)}, over an encoder pair on Triton (a
                        `TritonScorer`): scene_text/scene_image in the closed world,
                        clip_text/clip_image for real. On a PickScore checkpoint
                        (MILS_CLIP_MODEL=yuvalkirstain/PickScore_v1) this is PickScore up to
                        its logit scale, a monotone factor that does not change the ranking.
    TritonStyleScorer   {"style": STYLE_LOSS, "content": CONTENT_LOSS} of a style/content
                        model on Triton (inputs IMAGE, CONTENT, STYLE, encoded images):
                        closed world `scene_style`, real `vgg_style` (VGG features).

Errors are translated as for every Triton adapter (`mils.adapters._triton`): a render the
model refuses fails its text alone (InvalidResponse), an unreachable server is retried.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Self

import numpy as np

from mils.adapters._resource import OpensAndCloses
from mils.adapters._triton import Protocol, TritonConnection, check_batching, check_tensor
from mils.adapters.triton_scorer import ScorerSettings, TritonScorer
from mils.engine.errors import ConfigError, InvalidResponse
from mils.engine.logs import get_logger

__all__ = ["DEFAULT_PROMPTS_KEPT", "AlignmentScorer", "TritonStyleScorer"]

log = get_logger(__name__)

DEFAULT_PROMPTS_KEPT = 4096
"""Prompt embeddings an `AlignmentScorer` keeps (one per distinct sample prompt)."""
DEFAULT_STYLE_TIMEOUT = 60.0


class AlignmentScorer(OpensAndCloses):
    """How well a render matches the sample's prompt: the cosine of their embeddings.

    The prompt's text embedding is computed once per distinct prompt (concurrent asks share
    it); each render's image embedding once per render.

    Args:
        scorer: the encoder pair: a `TritonScorer` (opened here if it is not yet, closed
            by its owner) or `ScorerSettings` (built, opened and closed here).
        prompt_input: the sample input holding the prompt text ("prompt").
        prompts_kept: most prompt embeddings kept (least recently used dropped first).
    """

    def __init__(
        self,
        scorer: TritonScorer | ScorerSettings,
        *,
        prompt_input: str = "prompt",
        prompts_kept: int = DEFAULT_PROMPTS_KEPT,
    ) -> None:
        if prompts_kept < 1:
            raise ConfigError(f"prompts_kept is {prompts_kept}; it must be at least 1")
        self._owned = isinstance(scorer, ScorerSettings)
        self._scorer = scorer.build() if isinstance(scorer, ScorerSettings) else scorer
        self.prompt_input = prompt_input
        self._prompts: OrderedDict[str, asyncio.Future[np.ndarray]] = OrderedDict()
        self._prompts_kept = prompts_kept

    def __repr__(self) -> str:
        return f"AlignmentScorer(name={self.name!r})"

    @property
    def name(self) -> str:
        return f"alignment({self._scorer.name})"

    async def open(self) -> Self:
        """Open the encoder pair (a no-op when its owner has opened it already)."""
        await self._scorer.open()
        return self

    async def aclose(self) -> None:
        if self._owned:
            await self._scorer.aclose()

    async def score(
        self, media: bytes, text: str, inputs: Mapping[str, bytes]
    ) -> Mapping[str, float]:
        """{"alignment": cosine}, NaN for an all-zero or non-finite embedding (the text is
        then dropped as unscorable).

        Raises:
            ConfigError: the sample has no `prompt_input`.
            EndpointUnavailable, InvalidResponse, ModelNotReady: from the encoder pair.
        """
        if self.prompt_input not in inputs:
            raise ConfigError(
                f"{self.name} scores against the sample input {self.prompt_input!r}, which "
                f"the samples do not have (they have {sorted(inputs)}); pass `prompt_input`"
            )
        prompt = bytes(inputs[self.prompt_input]).decode("utf-8", errors="replace")
        text_vector = await self._prompt_embedding(prompt)
        image_vector = np.asarray(await self._scorer.embed_target(media), dtype=np.float64)
        return {"alignment": _cosine(text_vector, image_vector)}

    async def _prompt_embedding(self, prompt: str) -> np.ndarray:
        """The prompt's text embedding: kept, being computed for another ask, or computed."""
        while (shared := self._prompts.get(prompt)) is not None:
            self._prompts.move_to_end(prompt)
            try:
                return await asyncio.shield(shared)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not shared.cancelled() or (task is not None and task.cancelling()):
                    raise
        made: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._prompts[prompt] = made
        try:
            found = await self._scorer.embed_texts([prompt])
            if found.shape[0] != 1:
                raise InvalidResponse(
                    f"{self._scorer.name} returned {found.shape[0]} embeddings for one prompt",
                    endpoint=self._scorer.name,
                )
            vector = np.asarray(found[0], dtype=np.float64)
        except BaseException as exc:
            if self._prompts.get(prompt) is made:
                del self._prompts[prompt]
            if isinstance(exc, asyncio.CancelledError):
                made.cancel()
            else:
                made.set_exception(exc)
                made.exception()  # retrieved here: no "never retrieved" warning
            raise
        made.set_result(vector)
        while len(self._prompts) > self._prompts_kept:
            self._prompts.popitem(last=False)
        return vector


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        raise InvalidResponse(
            f"text embedding has dim {a.shape} but image embedding {b.shape}; the text and "
            "image models must come from the same encoder pair",
            endpoint="alignment",
        )
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    if not math.isfinite(norms) or norms == 0.0:
        return math.nan
    return float(a @ b) / norms


_STYLE_INPUTS = ("IMAGE", "CONTENT", "STYLE")
_STYLE_OUTPUTS = {"style": "STYLE_LOSS", "content": "CONTENT_LOSS"}


class TritonStyleScorer(OpensAndCloses):
    """Style and content losses of a render, from a style/content model on Triton.

    The render goes as IMAGE, the sample's content and style images as CONTENT and STYLE;
    the terms are {"style": STYLE_LOSS, "content": CONTENT_LOSS} (lower is better).
    Use as `async with TritonStyleScorer(url) as scorer:` or `await open()` then `aclose()`;
    `open()` checks the model is ready and has those tensors.

    Args:
        url: "host:port" of the gRPC endpoint, or "http://host:port" of the HTTP one.
        model: the Triton model ("scene_style", "vgg_style").
        content_input: the sample input holding the content image ("content").
        style_input: the sample input holding the style image ("style").
        protocol: "grpc" or "http"; None infers it from the url's scheme.
        timeout: seconds allowed per request.
    """

    def __init__(
        self,
        url: str,
        *,
        model: str = "scene_style",
        content_input: str = "content",
        style_input: str = "style",
        protocol: Protocol | None = None,
        timeout: float = DEFAULT_STYLE_TIMEOUT,
    ) -> None:
        if protocol is None:
            protocol = "http" if url.lower().startswith(("http://", "https://")) else "grpc"
        self._triton = TritonConnection(
            url, protocol=protocol, timeout=timeout, owner="TritonStyleScorer"
        )
        self.url = self._triton.url
        self.model = model
        self.content_input = content_input
        self.style_input = style_input

    def __repr__(self) -> str:
        return f"TritonStyleScorer(name={self.name!r})"

    @property
    def name(self) -> str:
        return f"{self.model}@{self.url}"

    async def open(self) -> Self:
        if self._triton.is_open:
            return self
        await self._triton.open()
        try:
            self._check_config(await self._triton.model_config(self.model, "model"))
        except BaseException:
            await self.aclose()
            raise
        log.info("triton_style_scorer_opened", scorer=self.name)
        return self

    async def score(
        self, media: bytes, text: str, inputs: Mapping[str, bytes]
    ) -> Mapping[str, float]:
        """{"style": loss, "content": loss} of `media` against the sample's images.

        Raises:
            ConfigError: the sample lacks the content or style input.
            InvalidResponse: the model refused an image, or answered no losses.
            EndpointUnavailable, ModelNotReady: see `mils.adapters._triton`.
        """
        missing = [n for n in (self.content_input, self.style_input) if n not in inputs]
        if missing:
            raise ConfigError(
                f"{self.name} scores against the sample inputs {missing}, which the samples "
                f"do not have (they have {sorted(inputs)}); pass `content_input` and "
                "`style_input`"
            )
        images = (media, inputs[self.content_input], inputs[self.style_input])
        tensors = {
            name: np.array([[bytes(data)]], dtype=np.object_)
            for name, data in zip(_STYLE_INPUTS, images, strict=True)
        }
        found = await self._triton.infer(self.model, tensors, list(_STYLE_OUTPUTS.values()))
        return {term: self._loss(found[output], output) for term, output in _STYLE_OUTPUTS.items()}

    async def aclose(self) -> None:
        await self._triton.aclose()

    def _loss(self, found: np.ndarray | None, output: str) -> float:
        endpoint = f"{self.url}/{self.model}"
        if found is None or found.size != 1:
            shape = None if found is None else found.shape
            raise InvalidResponse(
                f"{endpoint} returned {output} of shape {shape}, expected one value",
                endpoint=endpoint,
            )
        return float(found.reshape(-1)[0])  # NaN passes: the objective drops that text

    def _check_config(self, config: dict[str, Any]) -> None:
        for name in _STYLE_INPUTS:
            check_tensor(
                config.get("input", []), name, "TYPE_STRING", model=self.model, role="input"
            )
        for name in _STYLE_OUTPUTS.values():
            check_tensor(
                config.get("output", []), name, "TYPE_FP32", model=self.model, role="output"
            )
        check_batching(config, model=self.model)
