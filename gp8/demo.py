"""`gp8 demo`: gp8 on the embedded SQLite engine with a simulated fleet, in one process.

Starts the gateway and the API (gp8.serve.start_services), creates a demo fleet and its admin
key through the API, creates and fits the vehicles and boxes through the API exactly as
`gp8 sim --api` does, and drives them. The first run gives the fleet a past: the boxes' clocks
start a working day ago (`HISTORY_S`), so they send that day's trips and parkings first, as
fast as the gateway acknowledges them (late records, stored like any others), then drive live.
It prints where to look.

The data dir keeps the demo's fleet, keys and boxes (`demo.json`, `demo-boxes.jsonl`): a second
run reuses them and drives on from now; `--reset` erases the demo's data first. Runs until
Ctrl-C (or --duration), then stops gracefully: the boxes deliver what they hold, the gateway
drains, storage closes. Needs no MongoDB and no broker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import secrets
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from gp8.serve import start_services, stop_services
from gp8.settings import Settings
from simulator.cli import DEFAULT_CENTER, network_for, print_report, provision_through_api
from simulator.fleet import Fleet, FleetOptions, make_clock
from simulator.pacing import wall_ms
from simulator.provision import (
    ApiClient,
    ProvisionedBox,
    ProvisionError,
    load_provision_file,
    save_provision_file,
)
from simulator.report import Report, live_progress
from simulator.scenario import load_scenario
from simulator.transport import TransportConfig
from storage import SQLITE_FILENAME

# The demo listens on the loopback only: it prints an admin key for anyone to copy.
DEMO_HOST = "127.0.0.1"
DEMO_SCENARIO = "demo"
DEMO_RADIUS_KM = 8.0
QUIET_LOGGERS = ("httpx", "simulator", "gateway.auth", "gateway.connection", "gateway.registry")
# The past a new demo fleet starts with: a working day of trips and parkings, so trips,
# mileage and events are there at once rather than after hours of watching.
HISTORY_S = 8 * 3600
# Between the history's fixes: what real boxes send by default, and 20 boxes' day is then
# 19,200 records, caught up with in seconds (at the live interval it would take minutes).
HISTORY_INTERVAL_S = 30.0
# What the data dir keeps between runs (besides the database).
STATE_FILE = "demo.json"
BOXES_FILE = "demo-boxes.jsonl"
# What --reset removes: the demo's files and the SQLite database with its journal files.
_RESET_FILES = (
    STATE_FILE,
    BOXES_FILE,
    SQLITE_FILENAME,
    f"{SQLITE_FILENAME}-wal",
    f"{SQLITE_FILENAME}-shm",
)


@dataclass(frozen=True, slots=True)
class DemoState:
    """The demo's fleet and keys, kept in the data dir so a re-run finds its fleet again."""

    fleet_id: str
    operator_key: str
    admin_key: str

    @classmethod
    def load(cls, data_dir: Path) -> DemoState | None:
        try:
            data = json.loads((data_dir / STATE_FILE).read_text(encoding="utf-8"))
            return cls(str(data["fleet_id"]), str(data["operator_key"]), str(data["admin_key"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, data_dir: Path) -> None:
        path = data_dir / STATE_FILE
        path.write_text(json.dumps(asdict(self)) + "\n", encoding="utf-8")
        path.chmod(0o600)  # it holds keys


def _prepare(data_dir: Path, *, reset_first: bool) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    if reset_first:
        removed = reset(data_dir)
        print(
            f"gp8 demo: --reset removed {', '.join(removed) or 'nothing'} from {data_dir}",
            file=sys.stderr,
        )
    return data_dir


def reset(data_dir: Path) -> list[str]:
    """Remove the demo's data from ``data_dir`` (nothing else in it); the names removed."""
    removed = []
    for name in _RESET_FILES:
        path = data_dir / name
        if path.exists():
            path.unlink()
            removed.append(name)
    return removed


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


def demo_settings(
    settings: Settings, operator_key: str | None = None
) -> tuple[Settings, list[str]]:
    """The settings with the demo's overrides: the demo's operator key as the bootstrap key (a
    new random one on a first run), loopback only, and a free port instead of a taken default
    one. Returns them and what was changed, to say so."""
    notes: list[str] = []
    data = settings.model_dump()
    data["bootstrap_key"] = operator_key or "gp8demo_" + secrets.token_urlsafe(24)
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
    *,
    api: str,
    tcp: str,
    key: str,
    operator_key: str,
    fleet_id: str,
    vehicle_id: str,
    devices: int,
    data_dir: str,
    history: str,
) -> str:
    auth = f'-H "Authorization: Bearer {key}"'
    return f"""
gp8 demo is running: {devices} simulated vehicles drive around Paris, their boxes report to gp8.
{history}

  API           {api}
  console       {api}/console   (sign in with the admin key below)
  API docs      {api}/docs
  health        {api}/health
  box gateway   tcp {tcp}
  data          {data_dir} (SQLite)
  fleet         {fleet_id}
  admin key     {key}   (the fleet's data)
  operator key  {operator_key}   (fleets and keys)

Try:
  curl {auth} {api}/v1/fleet/positions
  curl {auth} {api}/v1/vehicles/{vehicle_id}/position
  curl {auth} "{api}/v1/vehicles/{vehicle_id}/positions?format=geojson"
  curl {auth} {api}/v1/events
  curl {auth} {api}/v1/vehicles
  curl {auth} {api}/v1/vehicles/{vehicle_id}/trips
  curl {auth} {api}/v1/vehicles/{vehicle_id}/mileage

More boxes (on the map within seconds: a fix every 2 s):
  .venv/bin/gp8 sim --api {api} --key {key} --gateway {tcp} --devices 10 --scenario demo \\
      --interval 2

Stop with Ctrl-C.
"""


async def run_demo(
    settings: Settings,
    args: argparse.Namespace,
    out: TextIO | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run the demo until ``stop`` is set (Ctrl-C sets it), or --duration."""
    out = out or sys.stdout
    err = sys.stderr
    devices: int = args.devices
    if devices < 1:
        print("gp8 demo: --devices must be at least 1", file=err)
        return 2
    interval: float = args.interval
    if not interval > 0:
        print("gp8 demo: --interval must be more than 0 seconds", file=err)
        return 2
    duration: float | None = args.duration
    data_dir = _prepare(Path(settings.data_dir), reset_first=getattr(args, "reset", False))
    # A login line per box and a line per API call would bury the banner.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    state = DemoState.load(data_dir)
    settings, notes = demo_settings(settings, state.operator_key if state else None)
    for note in notes:
        print(f"gp8 demo: {note}", file=err)
    stop = stop or asyncio.Event()
    run = await start_services(settings)
    try:
        api = f"http://{DEMO_HOST}:{run.api_port}"
        tcp = f"{DEMO_HOST}:{run.tcp_port}"
        assert settings.bootstrap_key is not None
        scenario = load_scenario(DEMO_SCENARIO)
        seed = secrets.token_hex(4)
        options = FleetOptions(
            transport=TransportConfig(kind="tcp", host=DEMO_HOST, port=run.tcp_port),
            interval_s=interval,
            duration_s=duration,
            seed=seed,
            history_interval_s=HISTORY_INTERVAL_S,
        )
        boxes = await _reused_boxes(api, state, data_dir, devices)
        if state is not None and boxes is not None:
            history = f"It goes on with the fleet of the last run (in {data_dir}; --reset: anew)."
            start_ms = wall_ms()
        else:
            state, boxes = await _new_fleet(api, settings.bootstrap_key, devices, seed)
            state.save(data_dir)
            save_provision_file(data_dir / BOXES_FILE, boxes)
            history = (
                f"First they send the last {HISTORY_S // 3600} hours of trips and parkings (a "
                "working day, late records), then drive live."
            )
            start_ms = wall_ms() - HISTORY_S * 1000
        clock = make_clock(scenario, options, lon=DEFAULT_CENTER.lon)
        # After every box's fitting: records before it would belong to no vehicle.
        clock.start_ms = max(start_ms, max(b.fitted_ms or 0 for b in boxes) + 1)
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
                key=state.admin_key,
                operator_key=state.operator_key,
                fleet_id=state.fleet_id,
                vehicle_id=boxes[0].vehicle_id or "",
                devices=len(boxes),
                data_dir=str(data_dir),
                history=history,
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


async def _new_fleet(
    api: str, operator_key: str, devices: int, seed: str
) -> tuple[DemoState, list[ProvisionedBox]]:
    """A demo fleet with its admin key and ``devices`` vehicles with boxes fitted since before
    the history starts."""
    async with ApiClient(api, operator_key) as operator:
        fleet = await operator.create_fleet(f"gp8 demo {time.strftime('%Y-%m-%d %H:%M')}")
        admin = await operator.create_key(fleet["id"], "admin", "demo admin")
    async with ApiClient(api, admin["key"]) as client:
        boxes = await provision_through_api(
            client, devices, seed=seed, desired_start_ms=wall_ms() - HISTORY_S * 1000
        )
    return DemoState(fleet["id"], operator_key, admin["key"]), boxes


async def _reused_boxes(
    api: str, state: DemoState | None, data_dir: Path, devices: int
) -> list[ProvisionedBox] | None:
    """The last run's boxes when its fleet is still there and its admin key still works (the
    database may have been replaced under the state file); None: start a new fleet."""
    if state is None or not (data_dir / BOXES_FILE).exists():
        return None
    try:
        boxes = load_provision_file(data_dir / BOXES_FILE)
        async with ApiClient(api, state.admin_key) as client:
            await client.request("GET", f"/v1/fleets/{state.fleet_id}")
    except ProvisionError:
        return None
    if len(boxes) != devices:
        print(
            f"gp8 demo: reusing the last run's {len(boxes)} boxes (--devices {devices} applies "
            "to a new fleet: --reset)",
            file=sys.stderr,
        )
    return boxes
