"""The `gp8` console script: serve, sim, demo, admin, decode.

The entry point is the only place that reads Settings; it hands plain values down.
Flags override environment variables (GP8_*), which override defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from gp8.settings import Settings


def _add_storage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mongo-url", help="MongoDB URL (default: embedded SQLite; env GP8_MONGO_URL)")
    p.add_argument("--mongo-db", help="MongoDB database name (default gp8)")
    p.add_argument("--data-dir", type=Path, help="SQLite data directory (default ./gp8-data)")


def _apply_overrides(settings: Settings, args: argparse.Namespace) -> Settings:
    """Settings with the command line's explicit flags applied on top."""
    data = settings.model_dump()
    for flag, path in (
        ("mongo_url", ("mongo_url",)),
        ("mongo_db", ("mongo_db",)),
        ("data_dir", ("data_dir",)),
        ("bootstrap_key", ("bootstrap_key",)),
        ("tcp_port", ("tcp", "port")),
        ("teltonika_port", ("teltonika", "port")),
        ("api_port", ("api", "port")),
        ("host", ("tcp", "host")),
        ("api_host", ("api", "host")),
        ("mqtt_url", ("mqtt", "url")),
        ("tls_cert", ("tls", "cert")),
        ("tls_key", ("tls", "key")),
        ("tls_client_ca", ("tls", "client_ca")),
        ("gateway_id", ("gateway_id",)),
        ("log_level", ("log_level",)),
        ("log_format", ("log_format",)),
        ("serve_role", ("role",)),  # not "role": `admin create-key --role` is a key's
    ):
        value = getattr(args, flag, None)
        if value is None:
            continue
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return Settings.model_validate(data)


# What `gp8 --help` tells a user (the module docstring is for developers).
_DESCRIPTION = """\
gp8: the telematics backend for GP8000/GP8500 (and Teltonika) vehicle boxes.

Settings come from GP8_* environment variables; a command's flags override them.
Start with `gp8 demo`: a simulated fleet on this machine, nothing else to install."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gp8", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway and the API in one process")
    _add_storage_args(serve)
    serve.add_argument("--tcp-port", type=int, help="box TCP port (default 5027)")
    serve.add_argument("--teltonika-port", type=int, help="Teltonika box TCP port (default: off)")
    serve.add_argument("--api-port", type=int, help="REST API port (default 8000)")
    serve.add_argument("--host", help="TCP listen address (default 0.0.0.0)")
    serve.add_argument(
        "--api-host", help="API listen address (default 127.0.0.1; 0.0.0.0 to expose it)"
    )
    serve.add_argument("--bootstrap-key", help="ensure this operator API key exists at start")
    serve.add_argument("--mqtt-url", help="enable the MQTT transport, e.g. mqtt://127.0.0.1:1883")
    serve.add_argument(
        "--tls-cert", type=Path, help="TLS certificate (PEM) for the box ports and the API"
    )
    serve.add_argument("--tls-key", type=Path, help="its private key (PEM)")
    serve.add_argument(
        "--tls-client-ca",
        type=Path,
        help="mutual TLS: boxes must present a certificate signed by this CA (PEM)",
    )
    serve.add_argument("--gateway-id", help="this process's id (default: host:pid)")
    serve.add_argument("--log-level", help="debug, info, warning, error")
    serve.add_argument("--log-format", choices=["json", "text"], help="default json")
    serve.add_argument(
        "--role",
        dest="serve_role",
        choices=["all", "gateway", "api"],
        help="all (default); gateway: box listeners and MQTT, HTTP only for /, /health, /ready "
        "and /metrics; api: the REST API without box listeners",
    )

    demo = sub.add_parser(
        "demo", help="run gp8 on the embedded SQLite engine with a simulated fleet"
    )
    demo.add_argument("--data-dir", type=Path, help="SQLite data directory (default ./gp8-data)")
    demo.add_argument("--tcp-port", type=int, help="box TCP port (default 5027)")
    demo.add_argument("--api-port", type=int, help="REST API port (default 8000)")
    demo.add_argument("--devices", type=int, default=20, help="simulated boxes (default 20)")
    demo.add_argument(
        "--interval", type=float, default=5.0, help="seconds between live fixes (default 5)"
    )
    demo.add_argument(
        "--duration", type=float, default=None, help="stop after S seconds (default: at Ctrl-C)"
    )
    demo.add_argument(
        "--reset",
        action="store_true",
        help="erase the demo's data (its fleet, keys and database in --data-dir) and start anew; "
        "without it a second run reuses them",
    )

    decode = sub.add_parser("decode", help="print the frames of a capture as JSON, one per line")
    decode.add_argument("--protocol", choices=["gp8", "teltonika"], default="gp8")
    decode.add_argument("input", help="hex, - for stdin (hex or raw bytes), or a raw capture file")

    from simulator.cli import add_sim_arguments

    sim = sub.add_parser("sim", help="drive simulated boxes against a gateway")
    add_sim_arguments(sim)

    admin = sub.add_parser("admin", help="operator tasks against the database")
    _add_storage_args(admin)
    asub = admin.add_subparsers(dest="admin_command", required=True)
    ok = asub.add_parser("ensure-operator-key", help="make sure an operator API key exists")
    ok.add_argument("key")
    cf = asub.add_parser("create-fleet", help="create a fleet and print it as JSON")
    cf.add_argument("--name", required=True)
    ck = asub.add_parser("create-key", help="create an API key and print it (shown once)")
    ck.add_argument("--fleet", help="fleet id (omit for an operator key)")
    ck.add_argument("--role", required=True, choices=["operator", "admin", "manager", "viewer"])
    ck.add_argument("--name", required=True, help="the person the key belongs to")
    ck.add_argument("--email", default="", help="their address")
    asub.add_parser("list-fleets", help="list fleets as JSON lines")
    va = asub.add_parser(
        "verify-audit",
        help="check the audit logs' hash chains; exit 1 at the first broken link",
    )
    va.add_argument("--fleet", help="fleet id (default: every chain, the platform's included)")
    acl = asub.add_parser(
        "mqtt-acl", help="write the Mosquitto password and ACL files for every provisioned box"
    )
    acl.add_argument("--out-dir", type=Path, default=Path("mosquitto"))
    acl.add_argument("--gateway-user", default="gp8-gateway")
    acl.add_argument("--gateway-password", required=True)
    backup = asub.add_parser(
        "backup", help="copy the SQLite database to DEST, consistent while gp8 runs"
    )
    backup.add_argument("dest", type=Path, help="the backup file to write")
    backup.add_argument("--force", action="store_true", help="overwrite DEST if it exists")
    restore = asub.add_parser("restore", help="restore a backup file into --data-dir")
    restore.add_argument("src", type=Path, help="a file `gp8 admin backup` wrote")
    restore.add_argument(
        "--force", action="store_true", help="replace the database of a non-empty data dir"
    )
    asub.add_parser(
        "rotate-secrets-key", help="seal every stored secret again with the current secrets key"
    )
    imp = asub.add_parser(
        "import",
        help="onboard vehicles, boxes and fittings from a CSV file, all or nothing"
        " (as POST /v1/imports)",
    )
    imp.add_argument("file", type=Path, help="CSV: vin,plate,label,imei,model,protocol,fitted_at")
    imp.add_argument("--fleet", required=True, help="the fleet id to import into")

    migrate = sub.add_parser("migrate", help="upgrade the database schema to this gp8's version")
    _add_storage_args(migrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = _apply_overrides(Settings(), args)
    from gp8.logs import configure_logging

    # JSON lines for the server (a log shipper reads them); the tools' logs are for people.
    configure_logging(
        level=settings.log_level,
        levels=settings.log_levels,
        fmt=settings.log_format or ("json" if args.command == "serve" else "text"),
    )
    if args.command == "serve":
        from gp8.serve import run_serve

        return _run(run_serve(settings))
    if args.command == "demo":
        from gp8.demo import run_demo

        return _run(run_demo(settings, args))
    if args.command == "sim":
        from simulator.cli import run_sim

        return _run(run_sim(args))
    if args.command == "decode":
        from gp8.decode import run_decode
        from storage.models import now_ms

        return run_decode(args.protocol, args.input, now_ms())
    if args.command == "admin":
        from gp8.admin import run_admin

        return _run(run_admin(settings, args))
    if args.command == "migrate":
        from gp8.admin import run_migrate

        return _run(run_migrate(settings))
    return 2  # pragma: no cover - argparse enforces the choices


def _run(coro: Coroutine[Any, Any, int]) -> int:
    runner: Callable[[Coroutine[Any, Any, int]], int] = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # uvloop is optional (not on Windows)
        pass
    from storage.migrations import SchemaVersionError
    from storage.pseudonyms import InvalidDriverKey
    from storage.secrets import SecretsError

    try:
        result = runner(coro)
    except KeyboardInterrupt:
        return 130
    except (SchemaVersionError, SecretsError, InvalidDriverKey) as exc:
        # An operator's matter (run gp8 migrate, fix the key), not a bug: one line, no trace.
        sys.stderr.write(f"gp8: {exc}\n")
        return 1
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
