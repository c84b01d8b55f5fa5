"""An export of one vehicle with a million positions, in bounded memory (docs/gdpr.md).

Seeds ``--positions`` positions of one vehicle (default 1,000,000) straight into the SQLite
repository in batches of 10,000, plus 1,000 of another vehicle, then runs the export job's
writer (api/services/export_job.py) and prints the time, the zip's size, and how much the
export raised the process's peak RSS (VmHWM reset before it): a few pages' worth, however many
records (tests/api/test_export_memory.py checks the same bound on 200,000 in the suite).

Run: ``.venv/bin/python bench/bench_export_memory.py [--positions N] [--data-dir DIR]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.services.export_job import write_export
from storage.models import Position, new_id
from storage.retention import ExportJob
from storage.sqlite import SqliteStore

BATCH = 10_000
T0 = 1_700_000_000_000


def fix(fleet_id: str, device_id: str, vehicle_id: str, t: int) -> Position:
    return Position(
        fleet_id,
        device_id,
        vehicle_id,
        t,
        t + 500,
        48.85,
        2.35,
        35,
        42.0,
        90.0,
        9,
        0.8,
        True,
        True,
        False,
        False,
        True,
        100_000 + t % 10_000,
        12_600,
        4_100,
        20,
        0,
        4242,
    )


def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


async def seed(store: SqliteStore, fleet_id: str, vehicle_id: str, n: int) -> None:
    for start in range(0, n, BATCH):
        batch = [
            fix(fleet_id, "dev_a", vehicle_id, T0 + i * 1000)
            for i in range(start, min(n, start + BATCH))
        ]
        await store.telemetry.store(batch, [])
    other = [fix(fleet_id, "dev_b", "veh_other", T0 + i * 1000) for i in range(1000)]
    await store.telemetry.store(other, [])


async def run(positions: int, data_dir: Path) -> dict[str, float]:
    store = SqliteStore(data_dir / "gp8.sqlite3")
    await store.start()
    try:
        fleet = await store.fleets.create("bench")
        vehicle = await store.vehicles.create(fleet.id, vin="VIN", plate="P", label="L")
        started = time.perf_counter()
        await seed(store, fleet.id, vehicle.id, positions)
        seeded_s = time.perf_counter() - started
        job = ExportJob(new_id("exp"), fleet.id, vehicle.id, None, 0, T0 + 10**10, None, 0)
        # The process's peak RSS from here on (Linux: writing 5 to clear_refs resets VmHWM):
        # what the export adds to the memory of a process that has seeded a million rows.
        _reset_peak_rss()
        rss_before = _status_kib("VmRSS")
        started = time.perf_counter()
        counts = await write_export(store, job, data_dir / "export.zip")
        export_s = time.perf_counter() - started
        export_growth_mib = (_status_kib("VmHWM") - rss_before) / 1024
        assert counts["positions"] == positions, counts
        return {
            "positions": positions,
            "seed_s": round(seeded_s, 1),
            "export_s": round(export_s, 1),
            "zip_mib": round((data_dir / "export.zip").stat().st_size / 2**20, 1),
            "export_rss_growth_mib": round(export_growth_mib, 1),
        }
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--positions", type=int, default=1_000_000)
    parser.add_argument("--data-dir", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.data_dir) as tmp:
        for name, value in asyncio.run(run(args.positions, Path(tmp))).items():
            print(f"{name}: {value}")


if __name__ == "__main__":
    main()
