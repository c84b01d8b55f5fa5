"""`gp8 sim`: a simulated fleet of GP8 boxes against a gateway, for testers and load.

Two ways to get boxes: ``--api URL --key FLEET_ADMIN_KEY`` creates ``--devices`` vehicles and
boxes through the fleet API and fits them; ``--provision FILE`` reads boxes that already exist
(JSON lines of imei/secret/model). The run ends by printing one JSON line with its figures
(devices, sent, acked, ...) on stdout; people also get live progress and a table on stderr.
See docs/simulator.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import secrets
import signal
import ssl
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from simulator.driver import RECONNECT_DELAY_S, RECONNECT_MAX_S
from simulator.fleet import DEFAULT_INTERVAL_S, Fleet, FleetOptions, make_clock, span_s
from simulator.geo import LatLon
from simulator.outbox import ACK_TIMEOUT_S
from simulator.pacing import plan_start, wall_ms
from simulator.provision import (
    ApiClient,
    ProvisionedBox,
    ProvisionError,
    load_provision_file,
    provision_fleet,
    save_provision_file,
)
from simulator.report import Report, live_progress, render_table
from simulator.scenario import Scenario, ScenarioError, builtin_names, load_scenario
from simulator.tracks import TrackError, load_track
from simulator.trajectory import RoadNetwork, StreetGrid, TrackRoute
from simulator.transport import DEFAULT_PORTS, PROTOCOLS, TRANSPORTS, TransportConfig

log = logging.getLogger(__name__)

DEFAULT_CENTER = LatLon(48.8566, 2.3522)  # Paris
DEFAULT_RADIUS_KM = 10.0
DEFAULT_DEVICES = 10
# Largest fleet one process runs: each box is a socket (or an MQTT client) and two tasks.
MAX_DEVICES = 10_000
# A fitting made now is back-dated this much before the simulated start, when the API allows,
# so the first record is inside it even with clock skew between us and the server.
FITTING_MARGIN_MS = 60_000
# Heartbeats are needed when records are further apart than the gateway's idle timeout allows.
HEARTBEAT_S = 120.0


class UsageError(Exception):
    """A bad command line: the message says what to change."""


def _center(text: str) -> LatLon:
    try:
        lat_text, lon_text = text.split(",")
        lat, lon = float(lat_text), float(lon_text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected LAT,LON like 48.8566,2.3522"
        ) from None
    if not (-85 <= lat <= 85 and -180 <= lon <= 180):
        raise argparse.ArgumentTypeError(f"{text!r}: latitude -85..85, longitude -180..180")
    return LatLon(lat, lon)


def _gateway(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT like 127.0.0.1:5027")
    return host.strip("[]"), int(port)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a number >= 0")
    return value


def _positive(text: str) -> float:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


# What `gp8 sim --help` tells a user (the module docstring is for developers).
SIM_DESCRIPTION = """\
Drive simulated GP8 (or Teltonika) boxes against a gp8 gateway: for trying gp8 out, testing
and load.

Boxes come from one of:
  --api URL --key KEY   create --devices vehicles and boxes through the fleet API (KEY: a
                        fleet admin key) and fit them
  --provision FILE      boxes that exist already (JSON lines: imei, secret, model)

At the end the run prints one JSON line of figures (devices, sent, acked, ...) on stdout;
live progress and a table go to stderr. More in docs/simulator.md."""


def add_sim_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = SIM_DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    boxes = parser.add_argument_group("boxes")
    boxes.add_argument("--api", metavar="URL", help="fleet API base URL: create the boxes there")
    boxes.add_argument("--key", help="a fleet admin API key (with --api)")
    boxes.add_argument(
        "--provision",
        metavar="FILE",
        type=Path,
        help="JSON lines of provisioned boxes (imei, secret, model) instead of --api",
    )
    boxes.add_argument(
        "--save-provision",
        metavar="FILE",
        type=Path,
        help="write the boxes used as JSON lines (for a later --provision)",
    )
    boxes.add_argument(
        "--devices",
        type=_positive_int,
        help=f"boxes to simulate (default {DEFAULT_DEVICES}; with --provision: all in the file)",
    )
    link = parser.add_argument_group("transport")
    link.add_argument(
        "--gateway",
        type=_gateway,
        default=None,
        metavar="HOST:PORT",
        help="the gateway's TCP address (default 127.0.0.1:5027; with --protocol teltonika, "
        "127.0.0.1:5028)",
    )
    link.add_argument(
        "--transport", choices=TRANSPORTS, default="tcp", help="how boxes connect (default tcp)"
    )
    link.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="gp8",
        help="what the boxes speak: gp8 (default), or teltonika (FMC130 boxes over TCP, to gp8's "
        "--teltonika-port; see docs/teltonika.md)",
    )
    link.add_argument(
        "--tls", action="store_true", help="TCP inside TLS; the gateway's certificate is verified"
    )
    link.add_argument(
        "--ca",
        type=Path,
        metavar="FILE",
        help="with --tls: the CA (PEM) the gateway's certificate must chain to (default: the "
        "system's trust store)",
    )
    link.add_argument(
        "--client-cert",
        type=Path,
        metavar="FILE",
        help="with --tls: the boxes' certificate (PEM), for a gateway requiring mutual TLS",
    )
    link.add_argument("--client-key", type=Path, metavar="FILE", help="its private key (PEM)")
    link.add_argument(
        "--mqtt-url",
        default=None,
        help="broker for --transport mqtt (default mqtt://127.0.0.1:1883)",
    )
    link.add_argument(
        "--batch-size", type=_positive_int, default=50, help="records per frame (default 50)"
    )
    link.add_argument(
        "--window", type=_positive_int, default=4, help="frames awaiting ACK at once (default 4)"
    )
    link.add_argument(
        "--reconnect-delay",
        type=_positive,
        default=RECONNECT_DELAY_S,
        metavar="S",
        help=f"first back-off after a lost link, doubling to {RECONNECT_MAX_S:g} s "
        f"(default {RECONNECT_DELAY_S:g}, as the firmware)",
    )
    link.add_argument(
        "--ack-timeout",
        type=_positive,
        default=ACK_TIMEOUT_S,
        metavar="S",
        help=f"a frame unacknowledged this long means a dead link (default {ACK_TIMEOUT_S:g})",
    )
    link.add_argument(
        "--connect-concurrency",
        type=_positive_int,
        default=200,
        help="logins in progress at once while connecting (default 200)",
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--scenario",
        default="normal",
        help="built-in name (see --list-scenarios) or a file (TOML/JSON/YAML); default normal",
    )
    run.add_argument("--list-scenarios", action="store_true", help="list built-in scenarios")
    run.add_argument(
        "--count", type=_positive_int, help="positions per box, then stop (default: no limit)"
    )
    run.add_argument(
        "--interval",
        type=_non_negative,
        help="seconds of simulated time between positions; 0: each stamped now, as fast as "
        "ACKs allow (not with a scenario of fixed length) "
        f"(default: the scenario's, else {DEFAULT_INTERVAL_S:g})",
    )
    run.add_argument(
        "--duration",
        type=_positive,
        help="stop after this many wall seconds (default: at the scenario's end or Ctrl-C)",
    )
    run.add_argument(
        "--rate",
        type=_positive,
        help="target positions per second, whole fleet (default: no limit)",
    )
    run.add_argument("--seed", help="make the run reproducible (default: random)")
    run.add_argument(
        "--center",
        type=_center,
        default=DEFAULT_CENTER,
        metavar="LAT,LON",
        help="centre of the simulated city (default Paris, 48.8566,2.3522)",
    )
    run.add_argument(
        "--radius-km", type=_positive, default=DEFAULT_RADIUS_KM, help="city radius (default 10)"
    )
    run.add_argument(
        "--track", type=Path, help="drive along a GPX or GeoJSON track instead of the city"
    )
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="only the final JSON line, no table")
    out.add_argument("--no-progress", action="store_true", help="no live progress line")
    out.add_argument("--log-level", help="debug, info, warning (default warning)")


# --- building a run ---------------------------------------------------------------------------


def network_for(*, center: LatLon, radius_km: float, track: Path | None, seed: str) -> RoadNetwork:
    if track is not None:
        return TrackRoute(load_track(track))
    return StreetGrid(center, radius_km * 1000, seed=seed)


def transport_config(args: argparse.Namespace, interval_s: float) -> TransportConfig:
    if args.protocol == "teltonika" and args.transport != "tcp":
        raise UsageError("--protocol teltonika: Teltonika boxes speak over TCP only")
    host, port = args.gateway or ("127.0.0.1", DEFAULT_PORTS[args.protocol])
    return TransportConfig(
        kind=args.transport,
        protocol=args.protocol,
        host=host,
        port=port,
        mqtt_url=args.mqtt_url or "mqtt://127.0.0.1:1883",
        batch_size=min(args.batch_size, 255),
        window=args.window,
        heartbeat_interval_s=HEARTBEAT_S if interval_s >= HEARTBEAT_S / 2 else None,
        ack_timeout_s=args.ack_timeout,
        tls=tls_context(args),
    )


def tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The boxes' TLS context from --tls/--ca/--client-cert/--client-key; None: plain TCP."""
    if not args.tls:
        if args.ca or args.client_cert or args.client_key:
            raise UsageError("--ca, --client-cert and --client-key go with --tls")
        return None
    if args.transport != "tcp":
        raise UsageError("--tls is for --transport tcp; for MQTT give an mqtts:// --mqtt-url")
    if (args.client_cert is None) != (args.client_key is None):
        raise UsageError("--client-cert and --client-key go together")
    from simulator.tls import client_context

    try:
        return client_context(args.ca, cert=args.client_cert, key=args.client_key)
    except OSError as exc:  # a missing file, or not PEM (ssl.SSLError is an OSError)
        raise UsageError(f"TLS files: {exc}") from None


async def provision_through_api(
    client: ApiClient,
    devices: int,
    *,
    seed: str,
    desired_start_ms: int | None,
    on_progress: Callable[[int], None] | None = None,
    protocol: str = "gp8",
) -> list[ProvisionedBox]:
    """Create and fit ``devices`` vehicles and boxes; fittings are back-dated to before the
    simulated start when the API takes ``fitted_at`` (else they start now)."""
    fitted_at = None
    if desired_start_ms is not None and await client.supports_backdated_fitting():
        fitted_at = desired_start_ms - FITTING_MARGIN_MS
    return await provision_fleet(
        client,
        devices,
        seed=seed,
        fitted_at_ms=fitted_at,
        on_progress=on_progress,
        protocol=protocol,
    )


def fitting_floor(boxes: list[ProvisionedBox]) -> int | None:
    """The simulated clock starts after every box's fitting (+1 ms)."""
    fitted = [b.fitted_ms for b in boxes if b.fitted_ms is not None]
    return max(fitted) + 1 if fitted else None


def clock_note(scenario: Scenario, options: FleetOptions, start_ms: int, lon: float) -> str | None:
    wanted = plan_start(
        wall_ms(),
        span_s(scenario, options.interval_s, options.count),
        start_local_min=scenario.start_local_min,
        lon=lon,
    )
    if start_ms > wanted + 5_000:
        return (
            "the boxes' fittings start now (the API takes no back-dated fitting), so the "
            "simulated clock starts now and runs in real time"
        )
    return None


@contextlib.contextmanager
def _signals(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows, threads
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _stderr_is_tty() -> bool:
    return sys.stderr.isatty()


def print_report(
    report: Report, *, table: bool, json_line: bool, out: TextIO, err: TextIO
) -> dict[str, Any]:
    """The final report: a table on ``err`` for people, one JSON line on ``out`` for machines."""
    snap = report.snapshot()
    if table:
        from rich.console import Console

        Console(file=err).print(render_table(snap))
        for note in snap["notes"]:
            print(f"note: {note}", file=err)
    if json_line:
        print(json.dumps(snap, separators=(",", ":")), file=out, flush=True)
    return snap


# --- the command ------------------------------------------------------------------------------


async def run_sim(args: argparse.Namespace) -> int:
    if args.log_level is None:
        # Per-box and per-request chatter is noise at fleet scale; the report says it all.
        for name in ("simulator", "httpx"):
            logging.getLogger(name).setLevel(logging.WARNING)
    if args.list_scenarios:
        for name in builtin_names():
            print(f"{name:16} {load_scenario(name).description}")
        return 0
    try:
        return await _run(args)
    except (UsageError, ScenarioError, TrackError, ProvisionError) as exc:
        print(f"gp8 sim: {exc}", file=sys.stderr)
        return 2


async def _run(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    interval = args.interval
    if interval is None:
        interval = scenario.interval_s if scenario.interval_s is not None else DEFAULT_INTERVAL_S
    if interval == 0 and scenario.duration_s is not None:
        # 0 stamps each record "now": the scenario's simulated hours would pass in its first
        # records (2 positions for the 5-hour theft scenario). Say so rather than end early.
        raise UsageError(
            f"--interval 0 (each record stamped now, as fast as ACKs allow) cannot play the "
            f"{scenario.name!r} scenario, which covers {scenario.duration_s / 3600:g} h of "
            "simulated time: give a positive --interval (its records then go as fast as ACKs "
            "allow until they reach now), or use an open-ended scenario such as normal"
        )
    seed = args.seed if args.seed is not None else secrets.token_hex(4)
    if args.api and args.provision:
        raise UsageError("give --api (create boxes) or --provision (existing boxes), not both")
    if args.api and not args.key:
        raise UsageError("--api needs --key, a fleet admin API key")
    if not args.api and not args.provision:
        raise UsageError("give --api URL --key KEY to create boxes, or --provision FILE")
    options = FleetOptions(
        transport=transport_config(args, interval),
        interval_s=interval,
        count=args.count,
        duration_s=args.duration,
        rate=args.rate,
        seed=seed,
        connect_concurrency=args.connect_concurrency,
        reconnect_delay_s=args.reconnect_delay,
        reconnect_max_s=max(RECONNECT_MAX_S, args.reconnect_delay),
        flush_timeout_s=args.ack_timeout,
    )
    network = network_for(center=args.center, radius_km=args.radius_km, track=args.track, seed=seed)
    lon = args.center.lon
    interactive = not args.json and not args.no_progress and _stderr_is_tty()
    if args.api:
        devices = args.devices or DEFAULT_DEVICES
        if devices > MAX_DEVICES:
            raise UsageError(f"at most {MAX_DEVICES} devices in one process")
        desired = make_clock(scenario, options, lon=lon).start_ms
        async with ApiClient(args.api, args.key) as client:
            if not args.json:
                print(
                    f"creating {devices} vehicles and boxes through {args.api} ...", file=sys.stderr
                )
            boxes = await provision_through_api(
                client, devices, seed=seed, desired_start_ms=desired, protocol=args.protocol
            )
    else:
        boxes = load_provision_file(args.provision)
        others = {b.protocol for b in boxes} - {args.protocol}
        if others:
            raise UsageError(
                f"{args.provision} has {', '.join(sorted(others))} boxes: "
                f"give --protocol {sorted(others)[0]}"
            )
        if args.devices:
            if args.devices > len(boxes):
                raise UsageError(f"--devices {args.devices}: the file has {len(boxes)} boxes")
            boxes = boxes[: args.devices]
        if len(boxes) > MAX_DEVICES:
            raise UsageError(f"at most {MAX_DEVICES} devices in one process")
    if args.save_provision:
        save_provision_file(args.save_provision, boxes)
    clock = make_clock(scenario, options, lon=lon, floor_ms=fitting_floor(boxes))
    report = Report()
    note = clock_note(scenario, options, clock.start_ms, lon)
    if note:
        report.note(note)
    fleet = Fleet(
        boxes, scenario=scenario, network=network, clock=clock, options=options, report=report
    )
    stop = asyncio.Event()
    with _signals(stop), live_progress(report, sys.stderr, enabled=interactive):
        await fleet.run(stop)
    snap = print_report(report, table=not args.json, json_line=True, out=sys.stdout, err=sys.stderr)
    delivered = snap["acked"] + snap["events_acked"] + snap["rejected"]
    complete = (
        snap["pending"] == 0
        and delivered == snap["sent"] + snap["events_sent"]
        and not fleet.failures()
    )
    return 0 if complete else 1
