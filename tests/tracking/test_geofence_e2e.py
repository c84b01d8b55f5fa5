"""End to end: a virtual box over real TCP into a gateway on the SQLite engine, the geofence
handler in its processing stage. Parked on the border with GPS jitter: one enter, one exit;
a backlog replayed late from outside the fence: no change."""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway import TcpGateway
from protocol.gp8 import Model
from simulator.box import VirtualBox
from simulator.records import make_record
from storage.models import DeviceModel, GeofenceEventKind, now_ms
from storage.sqlite import SqliteStore
from tests.tracking.helpers import east_of_border, square_fence
from tracking import GeofenceHandler

TIMEOUT = 10.0
IMEI = "356938035643809"
STEP_MS = 5_000


@pytest.fixture
def db_dir(tmp_path: Path) -> Iterator[Path]:
    """On tmpfs when there is one: an fsync per flush on a shared disk would only slow it."""
    tmpfs = Path("/dev/shm")
    if not tmpfs.is_dir():
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="gp8-geofence-e2e-", dir=tmpfs))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def store(db_dir: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(db_dir / "gp8.sqlite3")
    await s.start()
    yield s
    await s.close()


def border_track(rng: random.Random, start_ms: int) -> list[tuple[int, float]]:
    """(time, metres east of the border): drive in, park on the border with jitter and wild
    fixes shorter than the dwell, drive away."""
    offsets = [300.0 - 25 * i for i in range(30)]  # 300 m out to 425 m in
    offsets += [-425.0 + 25 * i for i in range(17)]  # back to the border
    for _ in range(12):
        offsets += [rng.uniform(-20, 20) for _ in range(rng.randint(2, 8))]
        offsets += [rng.choice([-60.0, 60.0])] * rng.randint(1, 5)  # < 30 s at 5 s
    offsets += [25.0 * i for i in range(30)]
    return [(start_ms + i * STEP_MS, d) for i, d in enumerate(offsets)]


async def test_border_jitter_one_enter_one_exit_late_backlog_ignored(store: SqliteStore) -> None:
    fleet = await store.fleets.create("e2e")
    vehicle = await store.vehicles.create(fleet.id, vin="VF1AAAAA000000001", plate="P", label="L")
    await store.devices.create(fleet.id, imei=IMEI, model=DeviceModel.GP8000, secret="s3cret")
    start_ms = now_ms() - 3_600_000
    await store.devices.fit(fleet.id, vehicle.id, IMEI, start_ms - 7_200_000)
    fence = await store.geofences.create(square_fence(fleet.id))

    handler = GeofenceHandler(store.geofences)
    gw = TcpGateway(store, host="127.0.0.1", port=0, max_delay_ms=2, handlers=[handler])
    await gw.start()
    box = VirtualBox(IMEI, "s3cret", Model.GP8000, port=gw.port, io_timeout_s=TIMEOUT)
    try:
        await box.connect()
        track = border_track(random.Random(17), start_ms)
        async with asyncio.timeout(30.0):
            for t, d in track:  # one fix per frame, as a box reporting live sends them
                lon, lat = east_of_border(d)
                await box.send_positions([make_record(t, lat, lon, speed_kmh=10.0)])
            await gw.processing.settle(TIMEOUT)
            # Hours of buffered fixes, all outside the fence but older than the last one:
            # stored as history, never live.
            backlog_start = start_ms - 1_800_000
            lon, lat = east_of_border(-300.0)  # inside, while the vehicle is now outside
            backlog = [
                make_record(backlog_start + i * STEP_MS, lat, lon, buffered=True) for i in range(40)
            ]
            await box.send_positions(backlog)
            await gw.processing.settle(TIMEOUT)
        events = (await store.geofences.events(fleet.id, from_ms=0)).items
        assert [e.kind for e in events] == [GeofenceEventKind.ENTER, GeofenceEventKind.EXIT]
        assert all(e.geofence_id == fence.id and e.vehicle_id == vehicle.id for e in events)
        (state,) = await store.geofences.states(fleet.id, vehicle.id)
        assert state.side.value == "outside"
        assert gw.processing.counters["failed"] == 0
        stored = await store.telemetry.positions(
            fleet.id, vehicle.id, from_ms=0, to_ms=now_ms() + 1, limit=10_000
        )
        assert len(stored.items) == len(track) + len(backlog)
    finally:
        await box.close()
        await gw.stop(grace_s=2.0)
