"""The roles the engine talks to, as Protocols; `adapters/` implements them.

The engine knows only these shapes and the exceptions in `engine.errors`; it never
imports a vendor SDK. Every adapter is an async context manager owning its connections.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypedDict

import numpy as np

__all__ = ["ChatMessage", "Generator", "MediaReader", "Scorer", "TaskSpec"]


class ChatMessage(TypedDict):
    role: str
    content: str


class Generator(Protocol):
    """Proposes candidate texts: one chat completion per call."""

    @property
    def endpoint(self) -> str:
        """Where requests go (URL and model), for limits, logs and error messages."""
        ...

    async def complete(self, messages: Sequence[ChatMessage]) -> str:
        """Return the reply text.

        Raises:
            EndpointUnavailable: a transient fault (connection, timeout, 429, 5xx, a
                garbled 200 reply); the engine retries it.
            InvalidResponse: the endpoint refused this request (HTTP 400); not retried.
            ConfigError: the endpoint refuses every request (bad key, unknown model).
        """
        ...

    async def aclose(self) -> None: ...


class Scorer(Protocol):
    """Embeds texts and targets into one space; the engine scores by cosine.

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


class MediaReader(Protocol):
    """Reads a sample's source into the raw bytes the scorer takes."""

    async def read(self, source: str) -> bytes:
        """Raises InputError naming the source when it is unusable."""
        ...


class TaskSpec(Protocol):
    """What the loop needs from a task (see `tasks.base.Task`)."""

    @property
    def name(self) -> str: ...

    @property
    def system_prompt(self) -> str: ...

    @property
    def prompt_template(self) -> str:
        """User message with `{candidates}` and `{requested}` placeholders."""
        ...

    @property
    def higher_is_better(self) -> bool: ...
