"""The purge job: every ``interval_s`` it applies each fleet's retention periods, removes the
files of expired exports, and erases the fleets whose offboarding window ended
(docs/gdpr.md). It runs in every `gp8 serve` process, like the offline sweep: two purges of
the same fleet delete nothing twice, and a fleet is erased once (`erase_offboarded` is
idempotent).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from runtime import Periodic
from storage.errors import NotFound, StorageError
from storage.models import now_ms
from storage.repository import Store
from storage.retention import DataKind, ExportJob, PurgeRun

log = logging.getLogger(__name__)

PURGE_INTERVAL_S = 3600.0
# One fleet's purge; a slow database makes the next pass try again.
FLEET_TIMEOUT_S = 600.0
PAGE = 1000


def export_file(directory: Path, job: ExportJob) -> Path:
    """Where the export worker (api/services/export_job.py) writes a job's zip: a directory
    per fleet, which goes whole with the fleet."""
    return directory / job.fleet_id / f"{job.id}.zip"


class RetentionService:
    def __init__(
        self,
        store: Store,
        *,
        exports_dir: Path,
        interval_s: float = PURGE_INTERVAL_S,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._store = store
        self._exports_dir = exports_dir
        self._interval_s = interval_s
        self._clock = clock
        self._job = Periodic("retention", self.run_once, interval_s)
        self.counters: Counter[str] = Counter()  # deleted per table, "passes", "failed"

    async def start(self) -> None:
        self._job.start()

    async def stop(self) -> None:
        await self._job.stop()

    async def run_once(self) -> None:
        """One pass: offboardings due, then every fleet's retention."""
        self.counters["passes"] += 1
        now = self._clock()
        for offboarding in await self._store.retention.due_offboardings(now):
            try:
                await self._erase(offboarding.fleet_id, now)
            except (StorageError, OSError, TimeoutError) as exc:
                self.counters["failed"] += 1
                log.warning("erasing offboarded fleet %s failed: %r", offboarding.fleet_id, exc)
        cursor = None
        while True:
            page = await self._store.fleets.list(cursor=cursor, limit=PAGE)
            for fleet in page.items:
                try:
                    async with asyncio.timeout(FLEET_TIMEOUT_S):
                        await self.purge_fleet(fleet.id, now)
                except NotFound:
                    pass  # erased meanwhile
                except (StorageError, OSError, TimeoutError) as exc:
                    self.counters["failed"] += 1
                    log.warning("retention of fleet %s failed: %r", fleet.id, exc)
            if (cursor := page.next_cursor) is None:
                break

    async def purge_fleet(self, fleet_id: str, now: int) -> PurgeRun:
        rules = await self._store.retention.get(fleet_id)
        cutoffs = rules.cutoffs(now)
        deleted = await self._store.retention.purge(fleet_id, cutoffs, at_ms=now)
        expired = await self._store.exports.expire(fleet_id, cutoffs[DataKind.EXPORTS])
        self._remove_files(expired)
        deleted["exports"] = len(expired)
        run = PurgeRun(at_ms=now, deleted=deleted)
        await self._store.retention.record_run(fleet_id, run)
        self.counters.update({k: v for k, v in deleted.items() if v})
        return run

    async def _erase(self, fleet_id: str, now: int) -> None:
        report = await self._store.retention.erase_offboarded(fleet_id, now)
        await asyncio.to_thread(shutil.rmtree, self._exports_dir / fleet_id, ignore_errors=True)
        log.info("offboarded fleet %s erased: %s", fleet_id, dict(report.deleted))
        self.counters["fleets_erased"] += 1

    def _remove_files(self, jobs: list[ExportJob]) -> None:
        for job in jobs:
            export_file(self._exports_dir, job).unlink(missing_ok=True)
