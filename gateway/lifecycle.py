"""`async with` for the gateway's long-running parts: start on entry, stop on exit; and the
process-wide setting a long-running gateway wants (`tune_gc`)."""

from __future__ import annotations

import gc
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


# How many young (generation-1) collections a full one waits for; CPython's default is 10. A
# gateway holding 10,000 box sessions tracks ~500,000 long-lived objects (bench/bench_storm.py
# prints the count), and a full collection scans them all with the event loop stopped: every
# ACK due meanwhile waits (0.4 to 0.9 s measured on the 2-core bench machine under load). With
# the default, 1,000 positions/s from 10,000 boxes made 22 full collections in two minutes,
# enough for the ACK p99. Young collections stay as frequent and as cheap as CPython makes
# them (they scan young objects only, and collect most cycles there); what reaches the old
# generation is the sessions' own state, which lives as long as the session. Measured: raising
# the young threshold instead (50,000) made each young collection scan that many survivors,
# 0.1 s each, and the generation-1 ones over 1 s.
GC_FULL_AFTER = 1000


def tune_gc(full_after: int = GC_FULL_AFTER) -> None:
    """Set the process's GC for a long-running gateway (call once, at start-up).

    What exists by then (modules, classes, settings) is never garbage: `gc.freeze` moves it out
    of every later scan."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, full_after)
