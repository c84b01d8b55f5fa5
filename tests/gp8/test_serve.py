"""`gp8 serve`'s composition root: start, health, a failed start that leaves nothing behind,
and the SQLite writer process seen from outside."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gp8.serve import start_services, stop_services
from gp8.settings import Settings
from tests.polling import eventually
from tests.storage.test_writer_process import alive, writer_pids


def _settings(data_dir: Path, api_port: int = 0, tcp_port: int = 0) -> Settings:
    return Settings(
        data_dir=data_dir,
        log_level="warning",
        tcp={"host": "127.0.0.1", "port": tcp_port},
        api={"host": "127.0.0.1", "port": api_port},
    )


async def test_health_reports_every_component(tmp_path: Path) -> None:
    run = await start_services(_settings(tmp_path))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{run.api_port}") as client:
            response = await client.get("/health", timeout=10)
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "ok"
        assert body["storage"]["engine"] == "sqlite"
        assert body["gateway"]["tcp_port"] == run.tcp_port
    finally:
        await stop_services(run)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_failed_start_stops_what_had_started(tmp_path: Path) -> None:
    tcp_port = _free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        api_port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="could not start"):
            await start_services(_settings(tmp_path, api_port=api_port, tcp_port=tcp_port))
    # The gateway had started before the API failed: it must have let go of its port.
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", tcp_port))


async def test_a_writer_process_that_dies_is_replaced_and_counted(tmp_path: Path) -> None:
    # `gp8 serve`'s default: the SQLite writes run in a process of their own.
    run = await start_services(_settings(tmp_path))
    try:
        await run.store.fleets.create("before")
        (pid,) = writer_pids()
        os.kill(pid, signal.SIGKILL)
        await eventually(lambda: not alive(pid))
        # The next write finds it gone (a write already on its way when it died is answered
        # unavailable): a new process takes its place and the write commits.
        await run.store.fleets.create("after")
        assert writer_pids() not in ([], [pid])
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{run.api_port}") as client:
            health = (await client.get("/health", timeout=10)).json()
            metrics = (await client.get("/metrics", timeout=10)).text
        assert (health["storage"]["writer"], health["storage"]["writer_exits"]) == ("process", 1)
        samples = {
            sample.name: sample.value
            for family in text_string_to_metric_families(metrics)
            for sample in family.samples
        }
        assert samples["gp8_sqlite_writer_process_exits_total"] == 1
    finally:
        await stop_services(run)
    assert writer_pids() == []
