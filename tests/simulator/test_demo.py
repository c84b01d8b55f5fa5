"""`gp8 demo`: gp8 on SQLite with a simulated fleet, in one process, and where to look."""

from __future__ import annotations

import argparse
import io
import re
from pathlib import Path

import pytest

from gp8.demo import banner, demo_settings, run_demo
from gp8.settings import ApiSettings, Settings, TcpSettings

pytestmark = pytest.mark.slow


async def test_the_demo_runs_a_fleet_and_says_where_to_look(data_dir: Path) -> None:
    settings = Settings(
        data_dir=data_dir, log_level="warning", tcp=TcpSettings(port=0), api=ApiSettings(port=0)
    )
    args = argparse.Namespace(devices=3, interval=0.5, duration=3.0)
    out = io.StringIO()
    assert await run_demo(settings, args, out=out) == 0
    text = out.getvalue()
    api = re.search(r"API\s+(http://127\.0\.0\.1:\d+)", text)
    assert api is not None
    assert f"{api.group(1)}/docs" in text
    key = re.search(r"^  admin key\s+(\S+)", text, re.M)
    assert key is not None and f"Bearer {key.group(1)}" in text
    assert "/v1/fleet/positions" in text and "/v1/vehicles/veh_" in text
    acked = re.search(r"positions acknowledged\s*│\s*([\d,]+)", text)
    # 3 boxes, a working day of history at 30 s (960 fixes each), then 2 fixes a second.
    assert acked is not None and int(acked.group(1).replace(",", "")) >= 3 * 960
    assert (data_dir / "gp8.sqlite3").exists()


def test_demo_settings_keep_to_the_loopback_with_a_fresh_key() -> None:
    first, _ = demo_settings(Settings(tcp=TcpSettings(port=0), api=ApiSettings(port=0)))
    second, _ = demo_settings(Settings(tcp=TcpSettings(port=0), api=ApiSettings(port=0)))
    assert first.tcp.host == first.api.host == "127.0.0.1"
    assert first.bootstrap_key and first.bootstrap_key != second.bootstrap_key


def test_a_taken_port_is_replaced_by_a_free_one() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings, notes = demo_settings(
            Settings(tcp=TcpSettings(port=port), api=ApiSettings(port=0))
        )
    assert settings.tcp.port == 0 and notes


def test_the_banner_has_copyable_commands() -> None:
    text = banner(
        api="http://127.0.0.1:8000",
        tcp="127.0.0.1:5027",
        key="gp8_k",
        operator_key="gp8demo_op",
        fleet_id="flt_1",
        vehicle_id="veh_1",
        devices=2,
        data_dir="./gp8-data",
        history="",
    )
    assert 'curl -H "Authorization: Bearer gp8_k" http://127.0.0.1:8000/v1/fleet/positions' in text
    assert "/v1/vehicles/veh_1/positions" in text
    assert re.search(r"^  operator key\s+gp8demo_op\b", text, re.M)


def test_the_more_boxes_command_reports_within_seconds() -> None:
    import shlex

    from gp8.cli import build_parser

    text = banner(
        api="http://127.0.0.1:8000",
        tcp="127.0.0.1:5027",
        key="gp8_k",
        operator_key="gp8demo_op",
        fleet_id="flt_1",
        vehicle_id="veh_1",
        devices=2,
        data_dir="./gp8-data",
        history="",
    )
    start = text.index(".venv/bin/gp8 sim")
    command = text[start : text.index("\n\n", start)].replace("\\\n", " ")
    args = build_parser().parse_args(shlex.split(command)[1:])
    # A fix every few seconds from now, not the default 30 s of the "normal" scenario.
    assert args.interval is not None and args.interval <= 5
    assert args.scenario == "demo"
