"""`async with` for the gateway's long-running parts: start on entry, stop on exit."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Service:
    """A part with ``start()`` and ``stop()``; ``async with part:`` runs it for the block."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
