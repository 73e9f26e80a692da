"""The async-context-manager shape the adapters share: `open()` on entry, `aclose()` on exit."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["OpensAndCloses"]


class OpensAndCloses:
    """Mixin: `async with adapter:` opens it (its checks run) and closes it on the way out.

    Subclasses define `async open() -> Self` and `async aclose()`.
    """

    async def open(self) -> Self:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
