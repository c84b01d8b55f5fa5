"""`gp8 admin backup` while a real `gp8 serve` ingests from simulated boxes over TCP, then
`gp8 admin restore` into a fresh data dir and gp8 started on it: every position stored (so
acknowledged) before the backup began is there, and the copy is one consistent snapshot."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sqlite3
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from gp8.cli import build_parser, main
from gp8.serve import start_services, stop_services
from gp8.settings import ApiSettings, Settings, TcpSettings
from simulator.cli import run_sim
from simulator.provision import ApiClient
from storage import SQLITE_FILENAME

pytestmark = pytest.mark.slow

GP8 = Path(sys.executable).with_name("gp8")
OPERATOR_KEY = "gp8-backup-test-operator-key"
DEADLINE_S = 60.0
# The positions asked for: the day around the run (the API serves 31 days at most).
_NOW_MS = int(time.time() * 1000)
WINDOW = (_NOW_MS - 86_400_000, _NOW_MS + 86_400_000)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _gp8(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`gp8 admin ...` in this process (its own event loop, in a thread): quicker than a
    subprocess, and the server it backs up is another process anyway."""
    capsys.readouterr()
    code = await asyncio.wait_for(asyncio.to_thread(main, list(argv)), DEADLINE_S)
    out, err = capsys.readouterr()
    return code, out, err


async def _positions(client: httpx.AsyncClient) -> dict[str, set[int]]:
    """Every stored position's time by vehicle, through the API."""
    vehicles = (await client.get("/v1/vehicles", params={"limit": 1000})).json()["data"]
    out: dict[str, set[int]] = {}
    for vehicle in vehicles:
        times: set[int] = set()
        cursor = None
        while True:
            params: dict[str, Any] = {"from": WINDOW[0], "to": WINDOW[1], "limit": 10_000}
            if cursor:
                params["cursor"] = cursor
            response = await client.get(f"/v1/vehicles/{vehicle['id']}/positions", params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            times |= {_ms(p["time"]) for p in page["data"]}
            cursor = page["next_cursor"]
            if not cursor:
                break
        out[vehicle["id"]] = times
    return out


def _ms(value: int | str) -> int:
    if isinstance(value, int):
        return value
    return round(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


def _backup_positions(path: Path) -> dict[str, set[int]]:
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        # One snapshot: the newest fix of every vehicle is a row of the same copy.
        orphans = conn.execute(
            "SELECT count(*) FROM last_positions l WHERE NOT EXISTS (SELECT 1 FROM positions p"
            " WHERE p.time_ms = l.time_ms AND p.device_id = l.device_id)"
        ).fetchone()
        assert orphans == (0,)
        out: dict[str, set[int]] = {}
        for vehicle_id, time_ms in conn.execute("SELECT vehicle_id, time_ms FROM positions"):
            out.setdefault(vehicle_id, set()).add(time_ms)
        return out


async def test_backup_during_ingestion_restores_every_acknowledged_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, restored, backup_file = tmp_path / "data", tmp_path / "restored", tmp_path / "b.sqlite3"
    tcp_port, api_port = _free_port(), _free_port()
    base_url = f"http://127.0.0.1:{api_port}"
    server = await asyncio.create_subprocess_exec(
        *(str(GP8), "serve", "--data-dir", str(data), "--host", "127.0.0.1"),
        *("--api-host", "127.0.0.1", "--tcp-port", str(tcp_port), "--api-port", str(api_port)),
        *("--bootstrap-key", OPERATOR_KEY, "--log-level", "warning"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as probe:
            deadline = time.monotonic() + DEADLINE_S
            while True:
                try:
                    if (await probe.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and server.returncode is None
                await asyncio.sleep(0.1)
        async with ApiClient(base_url, OPERATOR_KEY) as operator:
            fleet = await operator.create_fleet("backup")
            admin = await operator.create_key(fleet["id"], "admin", "backup")
        headers = {"Authorization": f"Bearer {admin['key']}"}
        sim_args = build_parser().parse_args(
            [
                *("sim", "--api", base_url, "--key", admin["key"]),
                *("--gateway", f"127.0.0.1:{tcp_port}", "--devices", "3"),
                # Paced (150 fixes a second in all, 5 a frame): about 4 s of ingestion.
                *("--count", "200", "--rate", "150", "--batch-size", "5", "--json"),
            ]
        )
        sim = asyncio.create_task(run_sim(sim_args))
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10) as client:
            # Mid-ingestion: some positions stored, the boxes still sending.
            deadline = time.monotonic() + DEADLINE_S
            while sum(len(t) for t in (await _positions(client)).values()) < 30:
                assert time.monotonic() < deadline and not sim.done()
                await asyncio.sleep(0.05)
            before = await _positions(client)
            code, out, err = await _gp8(
                capsys, "admin", "--data-dir", str(data), "backup", str(backup_file)
            )
            after = await _positions(client)
            assert code == 0, err
            assert not sim.done(), "the backup must run during ingestion"
            assert await asyncio.wait_for(sim, DEADLINE_S) == 0
            final = await _positions(client)
    finally:
        if server.returncode is None:
            server.send_signal(signal.SIGTERM)
        await asyncio.wait_for(server.wait(), DEADLINE_S)
    report = json.loads(out)
    assert report["schema_version"] >= 1 and report["bytes"] > 0

    copied = _backup_positions(backup_file)
    for vehicle_id, times in before.items():
        assert times <= copied.get(vehicle_id, set()) <= after[vehicle_id], vehicle_id
    # The backup is a snapshot taken mid-way: what was stored after it is not in it. (`after`
    # itself may equal the copy: a quick backup can fall between two of the boxes' frames.)
    assert sum(len(t) for t in final.values()) > sum(len(t) for t in copied.values())

    code, _, err = await _gp8(
        capsys, "admin", "--data-dir", str(restored), "restore", str(backup_file)
    )
    assert code == 0, err
    code, _, err = await _gp8(
        capsys, "admin", "--data-dir", str(restored), "restore", str(backup_file)
    )
    assert code == 1 and "not empty" in err  # never over a data dir silently
    assert (restored / SQLITE_FILENAME).is_file()

    run = await start_services(
        Settings(
            data_dir=restored,
            log_level="warning",
            tcp=TcpSettings(host="127.0.0.1", port=0),
            api=ApiSettings(host="127.0.0.1", port=0),
        )
    )
    try:
        url = f"http://127.0.0.1:{run.api_port}"
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client:
            served = await _positions(client)
    finally:
        await stop_services(run)
    assert {v: t for v, t in served.items() if t} == {v: t for v, t in copied.items() if t}
