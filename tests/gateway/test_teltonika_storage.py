"""Devices' protocol in storage, on every engine: stored, read back, filtered; an existing SQLite
file from before the column gains it (as gp8) on start."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from storage.migrations import SchemaTooOld
from storage.models import DeviceModel, DeviceProtocol, Fleet
from storage.repository import Store
from storage.sqlite import SqliteStore

# The storage contract's fixtures: one store per engine.
from tests.storage.conftest import db_dir, engine, fleet, store  # noqa: F401

TELTONIKA_IMEI = "356307042441013"
GP8_IMEI = "356938035643809"


async def test_protocol_is_stored_and_filtered(store: Store, fleet: Fleet) -> None:  # noqa: F811
    tel = await store.devices.create(
        fleet.id,
        imei=TELTONIKA_IMEI,
        model=DeviceModel.FMB920,
        secret="",
        protocol=DeviceProtocol.TELTONIKA,
    )
    gp8 = await store.devices.create(fleet.id, imei=GP8_IMEI, model=DeviceModel.GP8000, secret="k")
    assert gp8.protocol is DeviceProtocol.GP8  # the default
    assert await store.devices.get_by_imei(TELTONIKA_IMEI) == tel
    assert (await store.devices.get(fleet.id, tel.id)).protocol is DeviceProtocol.TELTONIKA
    by_protocol = {
        p: [d.id for d in (await store.devices.list(fleet.id, protocol=p)).items]
        for p in DeviceProtocol
    }
    assert by_protocol == {DeviceProtocol.GP8: [gp8.id], DeviceProtocol.TELTONIKA: [tel.id]}
    assert len((await store.devices.list(fleet.id)).items) == 2


_OLD_DEVICES = """
CREATE TABLE devices (
    id TEXT PRIMARY KEY, fleet_id TEXT NOT NULL, imei TEXT NOT NULL UNIQUE, model TEXT NOT NULL,
    secret TEXT NOT NULL, created_ms INTEGER NOT NULL, status TEXT NOT NULL, vehicle_id TEXT
);
"""


async def test_sqlite_file_from_before_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(_OLD_DEVICES)
    conn.execute(
        "INSERT INTO devices VALUES ('dev_1', 'flt_1', ?, 'GP8000', 's', 1, 'active', NULL)",
        (GP8_IMEI,),
    )
    conn.commit()
    conn.close()
    with pytest.raises(SchemaTooOld):  # gp8 serve never migrates by itself (gp8 migrate)
        await SqliteStore(path).start()
    for migrate in (True, False):  # the migrated file then opens as it is
        sqlite = SqliteStore(path, migrate=migrate)
        await sqlite.start()
        device = await sqlite.devices.get_by_imei(GP8_IMEI)
        assert device is not None and device.protocol is DeviceProtocol.GP8
        await sqlite.close()
