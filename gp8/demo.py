"""`gp8 demo`: gp8 on the embedded SQLite engine with a simulated fleet, in one process.

Starts the gateway and the API (gp8.serve.start_services) with a fresh random operator key,
creates a demo fleet and its admin key through the API, creates and fits the vehicles and boxes
through the API exactly as `gp8 sim --api` does, drives them live, and prints where to look.
Runs until Ctrl-C (or --duration), then stops gracefully: the boxes deliver what they hold, the
gateway drains, storage closes. Needs no MongoDB and no broker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import secrets
import signal
import socket
import sys
import time
from collections.abc import Iterator
from typing import TextIO

from gp8.serve import start_services, stop_services
from gp8.settings import Settings
from simulator.cli import DEFAULT_CENTER, network_for, print_report, provision_through_api
from simulator.fleet import Fleet, FleetOptions, make_clock
from simulator.provision import ApiClient, ProvisionError
from simulator.report import Report, live_progress
from simulator.scenario import load_scenario
from simulator.transport import TransportConfig

# The demo listens on the loopback only: it prints an admin key for anyone to copy.
DEMO_HOST = "127.0.0.1"
DEMO_SCENARIO = "demo"
DEMO_RADIUS_KM = 8.0
QUIET_LOGGERS = ("httpx", "simulator", "gateway.auth", "gateway.connection", "gateway.registry")


def _port_free(port: int) -> bool:
    if port == 0:
        return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((DEMO_HOST, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def demo_settings(settings: Settings) -> tuple[Settings, list[str]]:
    """The settings with the demo's overrides: a random bootstrap key, loopback only, and a
    free port instead of a taken default one. Returns them and what was changed, to say so."""
    notes: list[str] = []
    data = settings.model_dump()
    data["bootstrap_key"] = "gp8demo_" + secrets.token_urlsafe(24)
    for group, name in (("tcp", "box TCP"), ("api", "API")):
        data[group]["host"] = DEMO_HOST
        port = data[group]["port"]
        if not _port_free(port):
            notes.append(f"port {port} ({name}) is taken: using a free one")
            data[group]["port"] = 0
    return Settings.model_validate(data), notes


@contextlib.contextmanager
def _signals(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def banner(
    *, api: str, tcp: str, key: str, fleet_id: str, vehicle_id: str, devices: int, data_dir: str
) -> str:
    auth = f'-H "Authorization: Bearer {key}"'
    return f"""
gp8 demo is running: {devices} simulated vehicles drive around Paris, their boxes report to gp8.

  API           {api}
  API docs      {api}/docs
  health        {api}/health
  box gateway   tcp {tcp}
  data          {data_dir} (SQLite)
  fleet         {fleet_id}
  admin key     {key}

Try:
  curl {auth} {api}/v1/fleet/positions
  curl {auth} {api}/v1/vehicles/{vehicle_id}/position
  curl {auth} "{api}/v1/vehicles/{vehicle_id}/positions?format=geojson"
  curl {auth} {api}/v1/events
  curl {auth} {api}/v1/vehicles

More boxes: .venv/bin/gp8 sim --api {api} --key {key} --gateway {tcp} --devices 10

Stop with Ctrl-C.
"""


async def run_demo(settings: Settings, args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = sys.stderr
    devices: int = args.devices
    if devices < 1:
        print("gp8 demo: --devices must be at least 1", file=err)
        return 2
    interval: float = args.interval
    duration: float | None = args.duration
    # A login line per box and a line per API call would bury the banner.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    settings, notes = demo_settings(settings)
    for note in notes:
        print(f"gp8 demo: {note}", file=err)
    stop = asyncio.Event()
    run = await start_services(settings)
    try:
        api = f"http://{DEMO_HOST}:{run.api_port}"
        tcp = f"{DEMO_HOST}:{run.tcp_port}"
        assert settings.bootstrap_key is not None
        async with ApiClient(api, settings.bootstrap_key) as operator:
            fleet = await operator.create_fleet(f"gp8 demo {time.strftime('%Y-%m-%d %H:%M')}")
            admin = await operator.create_key(fleet["id"], "admin", "demo admin")
        scenario = load_scenario(DEMO_SCENARIO)
        seed = secrets.token_hex(4)
        options = FleetOptions(
            transport=TransportConfig(kind="tcp", host=DEMO_HOST, port=run.tcp_port),
            interval_s=interval,
            duration_s=duration,
            seed=seed,
        )
        async with ApiClient(api, admin["key"]) as client:
            boxes = await provision_through_api(client, devices, seed=seed, desired_start_ms=None)
        clock = make_clock(scenario, options, lon=DEFAULT_CENTER.lon)
        clock.start_ms = max(clock.start_ms, max(b.fitted_ms or 0 for b in boxes) + 1)
        network = network_for(
            center=DEFAULT_CENTER, radius_km=DEMO_RADIUS_KM, track=None, seed=seed
        )
        report = Report()
        fleet_run = Fleet(
            boxes, scenario=scenario, network=network, clock=clock, options=options, report=report
        )
        print(
            banner(
                api=api,
                tcp=tcp,
                key=admin["key"],
                fleet_id=fleet["id"],
                vehicle_id=boxes[0].vehicle_id or "",
                devices=devices,
                data_dir=str(settings.data_dir),
            ),
            file=out,
            flush=True,
        )
        with _signals(stop), live_progress(report, err, enabled=err.isatty()):
            await fleet_run.run(stop)
        print_report(report, table=True, json_line=False, out=out, err=out)
        return 0
    except ProvisionError as exc:
        print(f"gp8 demo: {exc}", file=err)
        return 1
    finally:
        await stop_services(run)
