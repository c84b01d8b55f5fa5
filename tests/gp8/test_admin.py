"""`gp8 admin ...`: operator tasks straight against the database (here the SQLite file)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from api.security import hash_key
from gp8.cli import main
from storage import open_store


def _run(capsys: pytest.CaptureFixture[str], data_dir: Path, *argv: str) -> list[dict[str, str]]:
    code = main(["admin", "--data-dir", str(data_dir), *argv])
    assert code == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


async def _key_role(data_dir: Path, key: str) -> str | None:
    store = open_store(mongo_url=None, mongo_db="gp8", data_dir=data_dir)
    await store.start()
    try:
        found = await store.keys.get_by_hash(hash_key(key))
        return None if found is None else found.role.value
    finally:
        await store.close()


def test_admin_creates_fleets_keys_and_the_mqtt_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    (fleet,) = _run(capsys, data, "create-fleet", "--name", "Acme")
    assert fleet["name"] == "Acme" and fleet["id"].startswith("flt_")
    assert _run(capsys, data, "list-fleets") == [fleet]

    (key,) = _run(
        capsys, data, "create-key", "--fleet", fleet["id"], "--role", "admin", "--name", "ops"
    )
    assert key["key"].startswith("gp8_") and key["fleet_id"] == fleet["id"]
    (operator,) = _run(capsys, data, "ensure-operator-key", "bootstrap-secret-1")
    # Idempotent: the same key again is the same record.
    assert _run(capsys, data, "ensure-operator-key", "bootstrap-secret-1") == [operator]

    assert asyncio.run(_key_role(data, key["key"])) == "admin"
    assert asyncio.run(_key_role(data, "bootstrap-secret-1")) == "operator"

    (written,) = _run(
        capsys, data, "mqtt-acl", "--out-dir", str(tmp_path / "mq"), "--gateway-password", "pw"
    )
    assert sorted(Path(p).name for p in written["written"]) == ["acl", "gp8.conf", "passwd"]
    assert "topic read gp8/+/up" in (tmp_path / "mq" / "acl").read_text()


def test_admin_refuses_a_fleet_key_without_a_fleet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["admin", "--data-dir", str(tmp_path), "create-key", "--role", "admin", "--name", "x"])
        == 2
    )
    assert (
        main(
            [
                "admin",
                "--data-dir",
                str(tmp_path),
                "create-key",
                "--fleet",
                "flt_nope",
                "--role",
                "viewer",
                "--name",
                "x",
            ]
        )
        == 1
    )
