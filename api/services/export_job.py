"""Export jobs (the data subject's right of access and portability, docs/gdpr.md): the worker
that runs them in the serve process, and the zip it writes.

Bounded memory whatever the size: the records are read a page at a time (`PAGE` items) and
each page is written at once into the zip entry (zipfile streams an entry being written, with
ZIP64 for entries past 4 GiB), on a worker thread so compression never blocks the event loop.
Each kind goes twice through the store, once per format, since a zip has one entry open for
writing at a time.

Jobs are persisted (`ExportRepo`): a worker claims the oldest pending one with a lease it
renews as it goes; a job whose process died keeps its lease until it runs out, then any worker
marks it failed (`fail_stale`) and the client asks again. The file is written under a
temporary name and renamed when complete, so a download never sees half a zip.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import logging
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import orjson

from api.services import formats
from api.times import iso_ms
from retention.purge import export_file
from runtime import Periodic
from storage.errors import StorageError
from storage.models import AccessLogEntry, Alert, CommandRecord, now_ms
from storage.repository import Store
from storage.retention import ExportJob, ExportStatus

log = logging.getLogger(__name__)

# Records per read: bigger pages mean fewer thread hops; memory stays a few MiB.
PAGE = 5000
# Deflate's fastest level: JSON and CSV compress well at any level, and the export is
# CPU-bound on a machine that also serves the boxes.
COMPRESS_LEVEL = 1
POLL_INTERVAL_S = 2.0
# A worker renews its claim every `RENEW_PAGES` pages; a claim not renewed for this long is a
# dead worker's.
LEASE_S = 120.0
RENEW_PAGES = 50

Item = Mapping[str, Any]
Pages = Callable[[], AsyncIterator[Sequence[Item]]]

EVENT_COLUMNS = (
    "time",
    "type",
    "detail",
    "detail_decoded",
    "vehicle_id",
    "device_id",
    "received_at",
    "position",
)


def _fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


async def _paged(
    fetch: Callable[[str | None], Awaitable[Any]], render: Callable[[Any], Item]
) -> AsyncIterator[Sequence[Item]]:
    # The next page is read (on the store's thread) while this one is written (on another):
    # two pages in memory at most.
    pending: asyncio.Future[Any] = asyncio.ensure_future(fetch(None))
    try:
        while True:
            page = await pending
            if page.next_cursor is not None:
                pending = asyncio.ensure_future(fetch(page.next_cursor))
            yield [render(item) for item in page.items]
            if page.next_cursor is None:
                return
    finally:
        pending.cancel()


def sources(store: Store, job: ExportJob) -> list[tuple[str, tuple[str, ...], Pages]]:
    """(name, CSV columns, pages) of each kind of record about the job's subject."""
    fleet, start, end = job.fleet_id, job.from_ms, job.to_ms
    vehicle, badge = job.vehicle_id, job.driver_badge
    subject = vehicle if vehicle is not None else str(badge)

    def positions() -> AsyncIterator[Sequence[Item]]:
        if vehicle is not None:
            return _paged(
                lambda c: store.telemetry.positions(
                    fleet, vehicle, from_ms=start, to_ms=end, cursor=c, limit=PAGE
                ),
                formats.position_dict,
            )
        assert badge is not None
        return _paged(
            lambda c: store.exports.driver_positions(
                fleet, badge, from_ms=start, to_ms=end, cursor=c, limit=PAGE
            ),
            formats.position_dict,
        )

    def events() -> AsyncIterator[Sequence[Item]]:
        if vehicle is not None:
            return _paged(
                lambda c: store.telemetry.events(
                    fleet, vehicle_id=vehicle, from_ms=start, to_ms=end, cursor=c, limit=PAGE
                ),
                formats.event_dict,
            )
        assert badge is not None
        return _paged(
            lambda c: store.exports.driver_events(
                fleet, badge, from_ms=start, to_ms=end, cursor=c, limit=PAGE
            ),
            formats.event_dict,
        )

    async def nothing() -> AsyncIterator[Sequence[Item]]:
        # Alerts and commands are about a vehicle; a driver has none of their own.
        return
        yield

    def alerts() -> AsyncIterator[Sequence[Item]]:
        if vehicle is None:
            return nothing()
        return _paged(
            lambda c: store.alerts.list(
                fleet, vehicle_id=vehicle, from_ms=start, to_ms=end, cursor=c, limit=PAGE
            ),
            dataclasses.asdict,
        )

    def commands() -> AsyncIterator[Sequence[Item]]:
        if vehicle is None:
            return nothing()
        return _paged(
            lambda c: store.commands.list(
                fleet, vehicle_id=vehicle, from_ms=start, to_ms=end, cursor=c, limit=PAGE
            ),
            dataclasses.asdict,
        )

    async def access_log() -> AsyncIterator[Sequence[Item]]:
        # The entries whose resource is the subject (reads of its positions, its erasure...).
        async for page in _paged(
            lambda c: store.access_log.list(fleet, from_ms=start, to_ms=end, cursor=c, limit=PAGE),
            dataclasses.asdict,
        ):
            yield [e for e in page if e["resource_id"] == subject]

    return [
        ("positions", formats.CSV_COLUMNS, positions),
        ("events", EVENT_COLUMNS, events),
        ("alerts", _fields(Alert), alerts),
        ("commands", _fields(CommandRecord), commands),
        ("access_log", _fields(AccessLogEntry), access_log),
    ]


def _json_lines(items: Iterable[Item], first: bool) -> bytes:
    # A JSON array written as it goes: "[" before the first item, "," before the next ones.
    out = bytearray()
    for item in items:
        out += b"[\n" if first else b",\n"
        first = False
        out += orjson.dumps(item)
    return bytes(out)


def _csv_rows(columns: Sequence[str], items: Iterable[Item]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for item in items:
        writer.writerow([formats.csv_cell(item.get(column)) for column in columns])
    return buffer.getvalue().encode()


async def write_export(
    store: Store, job: ExportJob, path: Path, *, on_page: Callable[[], Any] | None = None
) -> dict[str, int]:
    """Write the job's zip to ``path``; the count of records of each kind."""
    counts: dict[str, int] = {}
    archive = await asyncio.to_thread(
        zipfile.ZipFile,
        path,
        "w",
        compression=zipfile.ZIP_DEFLATED,
        allowZip64=True,
        compresslevel=COMPRESS_LEVEL,
    )
    try:
        for name, columns, pages in sources(store, job):
            handle: IO[bytes] = await asyncio.to_thread(
                archive.open, f"{name}.json", "w", force_zip64=True
            )
            count = 0
            async for page in pages():
                data = _json_lines(page, count == 0)
                count += len(page)
                await asyncio.to_thread(handle.write, data)
                if on_page is not None:
                    await on_page()
            await asyncio.to_thread(handle.write, b"\n]\n" if count else b"[]\n")
            await asyncio.to_thread(handle.close)
            counts[name] = count
            handle = await asyncio.to_thread(archive.open, f"{name}.csv", "w", force_zip64=True)
            await asyncio.to_thread(handle.write, _csv_rows(columns, [{c: c for c in columns}]))
            async for page in pages():
                await asyncio.to_thread(handle.write, _csv_rows(columns, page))
                if on_page is not None:
                    await on_page()
            await asyncio.to_thread(handle.close)
        manifest = {
            "export_id": job.id,
            "fleet_id": job.fleet_id,
            "vehicle_id": job.vehicle_id,
            "driver_badge": None if job.driver_badge is None else str(job.driver_badge),
            "from": iso_ms(job.from_ms),
            "to": iso_ms(job.to_ms),
            "created_at": iso_ms(job.created_ms),
            "counts": counts,
        }
        await asyncio.to_thread(
            archive.writestr, "manifest.json", orjson.dumps(manifest, option=orjson.OPT_INDENT_2)
        )
    finally:
        await asyncio.to_thread(archive.close)
    return counts


class ExportWorker:
    """Runs pending export jobs one at a time, in every gp8 process that serves the API."""

    def __init__(
        self,
        store: Store,
        *,
        directory: Path,
        poll_interval_s: float = POLL_INTERVAL_S,
        lease_s: float = LEASE_S,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._store = store
        self.directory = directory
        self._poll_interval_s = poll_interval_s
        self._lease_ms = int(lease_s * 1000)
        self._clock = clock
        # run_once is True while jobs wait: the worker drains them, then polls.
        self._job = Periodic(
            "export-worker", self.run_once, poll_interval_s, expected=(StorageError, OSError)
        )
        self.done = 0
        self.failed = 0

    def wake(self) -> None:
        """A job was just created: look now rather than at the next poll."""
        self._job.wake()

    async def start(self) -> None:
        if not self._job.running:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._job.start()

    async def stop(self) -> None:
        await self._job.stop()

    async def run_once(self) -> bool:
        """Run one pending job, if any; whether there was one."""
        now = self._clock()
        await self._store.exports.fail_stale(now)
        job = await self._store.exports.claim(now, now + self._lease_ms)
        if job is None:
            return False
        await self._execute(job)
        return True

    async def _execute(self, job: ExportJob) -> None:
        path = export_file(self.directory, job)
        partial = path.with_suffix(".part")
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        pages = 0

        async def renew() -> None:
            nonlocal pages
            pages += 1
            if pages % RENEW_PAGES == 0:
                await self._store.exports.renew(job.id, self._clock() + self._lease_ms)

        try:
            counts = await write_export(self._store, job, partial, on_page=renew)
            await asyncio.to_thread(partial.replace, path)
            final = dataclasses.replace(
                job,
                status=ExportStatus.DONE,
                counts=counts,
                file_name=path.name,
                size_bytes=path.stat().st_size,
                updated_ms=self._clock(),
            )
        except (StorageError, OSError) as exc:
            log.warning("export %s failed: %r", job.id, exc)
            partial.unlink(missing_ok=True)
            final = dataclasses.replace(
                job, status=ExportStatus.FAILED, error=str(exc), updated_ms=self._clock()
            )
        if await self._store.exports.finish(final):
            if final.status is ExportStatus.DONE:
                self.done += 1
            else:
                self.failed += 1
        else:  # failed meanwhile as stale: its file is not served
            path.unlink(missing_ok=True)
