"""`gp8 serve`'s composition root: start, health, and a failed start that leaves nothing behind."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from gp8.serve import start_services, stop_services
from gp8.settings import Settings


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
