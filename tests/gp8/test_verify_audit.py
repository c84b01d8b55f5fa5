"""`gp8 admin verify-audit`: the audit logs' hash chains, checked straight in the database; an
entry edited or deleted in the raw SQLite file fails the check at that entry (exit 1)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from gp8.cli import main
from storage import SQLITE_FILENAME, open_store
from storage.models import AccessLogEntry, AuditEntry, new_id


async def _seed(data_dir: Path) -> str:
    store = open_store(mongo_url=None, mongo_db="gp8", data_dir=data_dir)
    await store.start()
    try:
        fleet = await store.fleets.create("Acme")
        for i in range(4):
            await store.access_log.append(
                AccessLogEntry(
                    id=new_id("log"),
                    time_ms=1_000 + i,
                    key_id="key_x",
                    fleet_id=fleet.id,
                    action="read",
                    resource="positions",
                    resource_id="veh_x",
                    detail=f"GET #{i}",
                )
            )
        await store.audit.append(
            AuditEntry(
                id=new_id("aud"), time_ms=1, fleet_id=None, action="kill_switch.set", actor="system"
            )
        )
        return fleet.id
    finally:
        await store.close()


def _verify(
    capsys: pytest.CaptureFixture[str], data_dir: Path, *argv: str
) -> tuple[int, list[dict[str, object]]]:
    code = main(["admin", "--data-dir", str(data_dir), "verify-audit", *argv])
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_verify_audit_passes_then_fails_at_the_edited_then_the_deleted_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    fleet_id = asyncio.run(_seed(data))
    code, lines = _verify(capsys, data)
    assert code == 0
    assert {(line["log"], line["fleet_id"], line["entries"], line["ok"]) for line in lines} == {
        ("access_log", fleet_id, 4, True),
        ("command_audit", None, 1, True),
    }

    db = sqlite3.connect(data / SQLITE_FILENAME)
    (edited_id,) = db.execute("SELECT id FROM access_log WHERE seq = 2").fetchone()
    with db:
        db.execute("UPDATE access_log SET detail = 'nothing to see' WHERE seq = 2")
    code, lines = _verify(capsys, data, "--fleet", fleet_id)
    assert code == 1
    assert lines[0]["broken"] == {
        "seq": 2,
        "entry_id": edited_id,
        "reason": "the entry was altered",
    }

    with db:
        db.execute("DELETE FROM access_log WHERE seq = 2")
    code, lines = _verify(capsys, data, "--fleet", fleet_id)
    db.close()
    assert code == 1
    assert lines[0]["broken"] == {"seq": 2, "entry_id": None, "reason": "entry 2 is missing"}
