"""`gp8 admin import FILE`: the API's import code path, straight against the database."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gp8.cli import main
from storage import open_store
from tests.api.helpers import luhn_imei

HEADER = "vin,plate,label,imei,model,protocol,fitted_at"


def _fleet(capsys: pytest.CaptureFixture[str], data: Path) -> str:
    assert main(["admin", "--data-dir", str(data), "create-fleet", "--name", "Acme"]) == 0
    fleet_id: str = json.loads(capsys.readouterr().out)["id"]
    return fleet_id


async def _stored(data: Path, fleet_id: str) -> tuple[int, list[str]]:
    store = open_store(mongo_url=None, mongo_db="gp8", data_dir=data)
    await store.start()
    try:
        vehicles = await store.vehicles.list(fleet_id, limit=1000)
        log = await store.access_log.list(fleet_id)
        return len(vehicles.items), [e.action for e in log.items]
    finally:
        await store.close()


def test_admin_import_stores_the_file_and_prints_each_box(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    fleet_id = _fleet(capsys, data)
    rows = [f"WVWZZZ1JZ{i:08d},P-{i},,{luhn_imei(f'35391805{i:06d}')},GP8000,," for i in range(5)]
    good = tmp_path / "fleet.csv"
    good.write_text("\n".join([HEADER, *rows]) + "\n")

    code = main(["admin", "--data-dir", str(data), "import", str(good), "--fleet", fleet_id])

    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[-1] == {"vehicles": 5, "boxes": 5, "fittings": 5}
    assert all(box["secret"] and box["vehicle_id"] for box in lines[:-1])
    assert asyncio.run(_stored(data, fleet_id)) == (
        5,
        ["create", "import"],
    )  # create-fleet, then the import

    # Again: every row clashes with the store, reported per line; nothing more is stored.
    code = main(["admin", "--data-dir", str(data), "import", str(good), "--fleet", fleet_id])
    assert code == 1
    errors = [json.loads(line) for line in capsys.readouterr().err.splitlines()[:-1]]
    assert {(e["row"], e["column"]) for e in errors} >= {(2, "vin"), (2, "imei"), (6, "imei")}
    assert asyncio.run(_stored(data, fleet_id))[0] == 5
