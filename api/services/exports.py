"""Listings as downloads: ``format=csv`` (or ``Accept: text/csv``) on the events, trips and
alerts listings, and the ``Content-Disposition`` file name every download carries.

A CSV export holds every item of the request's range or filter, streamed page by page (never
all in memory), where the JSON answer is one page: a spreadsheet wants the whole period.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any

from fastapi.responses import StreamingResponse

from api.services import formats

CSV_MEDIA_TYPE = "text/csv; charset=utf-8; header=present"
# What a listing route declares for its 200 besides its JSON model (OpenAPI).
CSV_CONTENT: dict[str, Any] = {"text/csv": {"schema": {"type": "string"}}}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class ListFormat(StrEnum):
    JSON = "json"
    CSV = "csv"


def list_format(format: ListFormat | None, accept: str | None) -> ListFormat:
    """``format`` when given, else what Accept prefers of JSON and CSV (JSON for none)."""
    if format is not None:
        return format
    return ListFormat.CSV if formats.negotiate(accept) is formats.Format.CSV else ListFormat.JSON


def attachment(*parts: str, extension: str) -> dict[str, str]:
    """A Content-Disposition header naming the download ``part1_part2.ext``, with only
    characters every file system and browser take (RFC 6266 quoted-string, ASCII)."""
    stem = "_".join(_UNSAFE.sub("-", part).strip("-") for part in parts if part)
    return {"Content-Disposition": f'attachment; filename="{stem or "export"}.{extension}"'}


def csv_download(
    columns: Sequence[str],
    pages: AsyncIterator[Iterable[Mapping[str, Any]]],
    headers: Mapping[str, str],
) -> StreamingResponse:
    """A streamed RFC 4180 CSV: a header row, then a row per item (cells as in the positions
    export: booleans true/false, lists joined by ``|``, objects as JSON, null empty)."""
    return StreamingResponse(_rows(columns, pages), media_type=CSV_MEDIA_TYPE, headers=headers)


async def _rows(
    columns: Sequence[str], pages: AsyncIterator[Iterable[Mapping[str, Any]]]
) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    yield buffer.getvalue().encode()
    async for page in pages:
        buffer.seek(0)
        buffer.truncate()
        for item in page:
            writer.writerow([formats.csv_cell(item.get(column)) for column in columns])
        yield buffer.getvalue().encode()


async def single(items: Iterable[Mapping[str, Any]]) -> AsyncIterator[Iterable[Mapping[str, Any]]]:
    """One page already in memory, as the page iterator `csv_download` takes."""
    yield items
