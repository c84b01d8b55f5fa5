"""`gp8 migrate`, the start-up check of `gp8 serve` and `gp8 admin rotate-secrets-key`, as an
operator runs them on a file of the first release."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from pathlib import Path

import pytest

from gp8.cli import main
from storage import SQLITE_FILENAME
from storage.secrets import PREFIX, key_id
from storage.sqlite.migrations import SCHEMA_VERSION

FIXTURE = Path(__file__).parents[1] / "storage" / "fixtures" / "sqlite_v1.sql"


def _v1_data_dir(path: Path) -> Path:
    path.mkdir()
    with sqlite3.connect(path / SQLITE_FILENAME) as conn:
        conn.executescript(FIXTURE.read_text())
        conn.execute("INSERT INTO fleets VALUES ('flt_1', 'A', 1)")
        conn.execute(
            "INSERT INTO devices VALUES ('dev_1', 'flt_1', '356938035643809', 'GP8500',"
            " 'clear-secret', 1, 'active', NULL, 'gp8')"
        )
    return path


def _stored_secret(data: Path) -> str:
    with sqlite3.connect(data / SQLITE_FILENAME) as conn:
        (secret,) = conn.execute("SELECT secret FROM devices").fetchone()
    return str(secret)


def test_serve_refuses_then_migrate_upgrades_then_the_key_rotates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _v1_data_dir(tmp_path / "data")
    ports = ["--host", "127.0.0.1", "--api-host", "127.0.0.1", "--tcp-port", "0"]
    assert main(["serve", "--data-dir", str(data), *ports, "--api-port", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"gp8: database schema version 1 is older than this gp8's ({SCHEMA_VERSION}):"
        " back it up, then run `gp8 migrate` (docs/backups.md)"
    )
    assert _stored_secret(data) == "clear-secret"  # refused: nothing touched

    old, new = os.urandom(32), os.urandom(32)
    monkeypatch.setenv("GP8_SECRETS_KEY", base64.b64encode(old).decode())
    assert main(["migrate", "--data-dir", str(data)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (report["engine"], report["from"], report["to"]) == ("sqlite", 1, SCHEMA_VERSION)
    assert _stored_secret(data).startswith(f"{PREFIX}{key_id(old)}:")

    monkeypatch.setenv("GP8_SECRETS_KEY", base64.b64encode(new).decode())
    monkeypatch.setenv("GP8_SECRETS_OLD_KEYS", json.dumps([base64.b64encode(old).decode()]))
    assert main(["admin", "--data-dir", str(data), "rotate-secrets-key"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out == {"resealed": {"devices": 1, "webhooks": 0}}
    assert _stored_secret(data).startswith(f"{PREFIX}{key_id(new)}:")

    # Without the key that sealed them, the secrets do not open: one line, not a trace.
    monkeypatch.delenv("GP8_SECRETS_OLD_KEYS")
    monkeypatch.setenv("GP8_SECRETS_KEY", base64.b64encode(old).decode())
    assert main(["admin", "--data-dir", str(data), "rotate-secrets-key"]) == 1
    assert "not configured" in capsys.readouterr().err
