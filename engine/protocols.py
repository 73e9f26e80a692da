"""The roles the engine talks to, as Protocols; `adapters/` implements them.

The engine knows only these shapes and the exceptions in `mils.engine.errors`; it never
imports a vendor SDK. Every adapter is an async context manager owning its connections.

    Generator     proposes candidate texts (one chat completion per call)
    RateLimited   a Generator that also states its provider's rate limits (optional)
    Scorer        embeds texts and targets into one space (the embedding objective)
    Renderer      turns a candidate text into media (the render-then-score objective)
    MediaScorer   scores rendered media against a sample's inputs, as named terms
    MediaReader   reads one named input of a sample into bytes
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypedDict, runtime_checkable

import numpy as np

from mils.engine.config import RateLimits

__all__ = [
    "ChatMessage",
    "Generator",
    "MediaReader",
    "MediaScorer",
    "ProviderLimits",
    "RateLimited",
    "Renderer",
    "Reply",
    "Scorer",
    "TaskSpec",
]


class ChatMessage(TypedDict):
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class ProviderLimits:
    """What a reply said of its endpoint's rate limits (OpenAI's `x-ratelimit-*` headers,
    parsed by the adapter); None where it said nothing. Limits are per minute."""

    requests: int | None = None
    """Requests allowed per minute (`x-ratelimit-limit-requests`)."""
    tokens: int | None = None
    """Tokens allowed per minute (`x-ratelimit-limit-tokens`)."""
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests_s: float | None = None
    """Seconds until the requests limit is whole again (`x-ratelimit-reset-requests`)."""
    reset_tokens_s: float | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """One generator reply."""

    text: str
    truncated: bool = False
    """The reply hit its token limit (finish_reason "length"): its last line is cut off."""
    prompt_tokens: int | None = None
    """Prompt tokens the server counted (its `usage`); None when it sent none."""
    completion_tokens: int | None = None
    """Completion tokens the server counted (its `usage`); None when it sent none."""
    provider_limits: ProviderLimits | None = None
    """The rate limits the reply's headers stated; None when they stated none."""


class Generator(Protocol):
    """Proposes candidate texts: one chat completion per call."""

    @property
    def endpoint(self) -> str:
        """Where requests go (URL and model), for limits, logs and error messages."""
        ...

    async def complete(self, messages: Sequence[ChatMessage]) -> Reply:
        """Return the reply.

        Raises:
            EndpointUnavailable: a transient fault (connection, timeout, 429, 5xx, a
                garbled 200 reply); the engine retries it.
            InvalidResponse: the endpoint refused this request (HTTP 400); not retried.
            ConfigError: the endpoint refuses every request (bad key, unknown model).
        """
        ...

    @property
    def prompt_mode(self) -> str:
        """ "chat" (`complete` is used) or "completion" (`continue_text` is used)."""
        ...

    async def continue_text(self, prompt: str) -> Reply:
        """Return a plain continuation of `prompt`, stopped at a blank line. Raises as
        `complete` does."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class RateLimited(Protocol):
    """A Generator that states its provider's rate limits: the engine paces its requests
    under them. Optional: a generator without `rate_limits` is limited only by what its
    replies state (`Reply.provider_limits`)."""

    @property
    def rate_limits(self) -> RateLimits: ...


class Scorer(Protocol):
    """Embeds texts and targets into one space; the embedding objective scores by cosine.

    Embeddings need not be normalised: the engine L2-normalises them.
    """

    @property
    def name(self) -> str:
        """Identity of the text encoder (server and model), the key of the embedding cache."""
        ...

    @property
    def max_batch_size(self) -> int:
        """Most texts one `embed_texts` call may carry."""
        ...

    async def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Return a float array of shape (len(texts), dim)."""
        ...

    async def embed_target(self, data: bytes) -> np.ndarray:
        """Return the embedding of one raw target (image bytes, ...), shape (dim,)."""
        ...

    async def aclose(self) -> None: ...


class Renderer(Protocol):
    """Turns a candidate text into media: a text-to-image model, an image editor, ..."""

    @property
    def name(self) -> str: ...

    @property
    def suffix(self) -> str:
        """File suffix of what `render` returns (".png"), for the run's artefacts."""
        ...

    @property
    def reads(self) -> tuple[str, ...]:
        """Names of the sample inputs `render` uses: () for text-to-image, ("content",) for
        an editor of the sample's "content" image.

        With `name` (which includes the model and its seed) this is what makes a render
        reproducible: the engine caches renders by the text and the digests of these inputs.
        """
        ...

    async def render(self, text: str, inputs: Mapping[str, bytes]) -> bytes:
        """Render `text`, given the sample's inputs (an image to edit, ...).

        Raises:
            EndpointUnavailable: transient; retried.
            InvalidResponse: this text cannot be rendered; it is dropped alone.
        """
        ...


class MediaScorer(Protocol):
    """Scores rendered media against the sample's inputs as named terms."""

    @property
    def name(self) -> str: ...

    async def score(
        self, media: bytes, text: str, inputs: Mapping[str, bytes]
    ) -> Mapping[str, float]:
        """Named terms ({"style": 0.8, "content": 0.1}); the objective combines them."""
        ...


class MediaReader(Protocol):
    """Reads one input of a sample into the raw bytes the objective takes."""

    async def read(self, source: str) -> bytes:
        """Raises InputError naming the source when it is unusable."""
        ...


class TaskSpec(Protocol):
    """What the loop needs from a task to talk to the generator (see `mils.tasks.Task`)."""

    @property
    def name(self) -> str: ...

    @property
    def system_prompt(self) -> str: ...

    @property
    def prompt_template(self) -> str:
        """User message with `{candidates}` and `{requested}` placeholders."""
        ...

    @property
    def max_candidate_chars(self) -> int:
        """Longer reply lines are not candidates (counted, logged, dropped)."""
        ...

    @property
    def completion_header(self) -> str:
        """First line of a continuation prompt: what the scored lines below are."""
        ...

    @property
    def strip_annotations(self) -> bool:
        """Remove a trailing "(remark)" and "!" from reply lines (captions)."""
        ...

    @property
    def text_inputs(self) -> tuple[str, ...]:
        """Sample inputs that are texts (UTF-8; a prompt to improve): each fills the
        `{name}` placeholder of the template and the completion header, and is scored as
        a first candidate of its sample, beside the initial pool."""
        ...
