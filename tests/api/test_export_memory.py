"""An export streams to disk in bounded memory (docs/gdpr.md, "Right of access").

100,000 positions of one vehicle (bench/bench_export_memory.py does 1,000,000), seeded straight
through the SQLite repository: the export must raise the process's peak RSS by less than
`MAX_GROWTH_MIB`, where holding the records would take hundreds of MiB. Linux only (VmHWM, reset
through /proc/self/clear_refs).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from api.services.export_job import write_export
from storage.models import new_id
from storage.repository import Store
from storage.retention import ExportJob
from tests.api.helpers import make_position

POSITIONS = 100_000
BATCH = 10_000
T0 = 1_700_000_000_000
# A few pages of 5,000 rendered rows, the zip's buffers and the allocator's slack; the 100,000
# positions as Python objects alone would take ~200 MiB (bench/bench_export_memory.py: 1 million).
MAX_GROWTH_MIB = 64

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc"),
]


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


async def test_export_of_100k_positions_in_bounded_memory(store: Store, data_dir: Path) -> None:
    fleet = await store.fleets.create("big")
    vehicle = await store.vehicles.create(fleet.id, vin="VIN", plate="P", label="L")
    for start in range(0, POSITIONS, BATCH):
        await store.telemetry.store(
            [
                make_position(fleet.id, "dev_a", vehicle.id, T0 + i * 1000)
                for i in range(start, start + BATCH)
            ],
            [],
        )
    await store.telemetry.store([make_position(fleet.id, "dev_b", "veh_other", T0)], [])
    job = ExportJob(new_id("exp"), fleet.id, vehicle.id, None, 0, T0 + 10**10, None, 0)
    path = data_dir / "export.zip"

    _reset_peak_rss()
    before = _status_kib("VmRSS")
    counts = await write_export(store, job, path)
    growth_mib = (_status_kib("VmHWM") - before) / 1024

    assert counts["positions"] == POSITIONS
    assert growth_mib < MAX_GROWTH_MIB, f"the export raised the peak RSS by {growth_mib:.0f} MiB"
    with zipfile.ZipFile(path) as archive:
        with archive.open("positions.csv") as rows:
            assert sum(1 for _ in io.TextIOWrapper(rows, newline="")) == POSITIONS + 1
        assert json.loads(archive.read("manifest.json"))["counts"]["positions"] == POSITIONS
