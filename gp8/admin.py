"""`gp8 admin ...`: operator tasks straight against the database (MongoDB in production,
or the SQLite file), for when there is no operator key yet or no API to call."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from api.security import ensure_operator_key, new_api_key
from api.services.imports import ImportInvalid, import_csv
from api.times import iso_ms
from gp8.secrets_key import driver_pseudonyms, secret_box
from gp8.settings import Settings
from storage import SQLITE_FILENAME, open_store
from storage.audit_chain import verify as verify_chain
from storage.audit_chain import walk
from storage.errors import NotFound
from storage.models import AccessLogEntry, Role, new_id, now_ms
from storage.repository import Store
from storage.sqlite import backup as sqlite_backup
from storage.sqlite.migrations import SCHEMA_VERSION


def _print(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")


async def _audit(
    store: Store,
    fleet_id: str | None,
    action: str,
    resource: str,
    resource_id: str | None,
    detail: str = "",
) -> None:
    """Log an operator's act as the API logs it (api/audit.py), by no key: the operator at the
    database. Hash chained like the rest: the fleet's chain, or the platform's (None)."""
    await store.access_log.append(
        AccessLogEntry(
            new_id("log"), now_ms(), None, fleet_id, action, resource, resource_id, detail
        )
    )


async def run_admin(settings: Settings, args: argparse.Namespace) -> int:
    if args.admin_command in ("backup", "restore"):
        return await asyncio.to_thread(_backup_or_restore, settings, args)
    store = open_store(
        mongo_url=settings.mongo_url,
        mongo_db=settings.mongo_db,
        data_dir=settings.data_dir,
        secrets=secret_box(settings),
    )
    await store.start()
    try:
        return await _dispatch(store, args)
    finally:
        await store.close()


async def _dispatch(store: Store, args: argparse.Namespace) -> int:
    command = args.admin_command
    if command == "ensure-operator-key":
        key = await ensure_operator_key(store.keys, args.key)
        _print({"id": key.id, "role": key.role.value, "prefix": key.prefix})
        return 0
    if command == "create-fleet":
        fleet = await store.fleets.create(args.name)
        await _audit(store, fleet.id, "create", "fleet", fleet.id, "gp8 admin")
        # The API's names and time format (FleetPublic): one spelling of a field everywhere.
        _print({"id": fleet.id, "name": fleet.name, "created_at": iso_ms(fleet.created_ms)})
        return 0
    if command == "list-fleets":
        cursor: str | None = None
        while True:
            page = await store.fleets.list(cursor=cursor, limit=500)
            for fleet in page.items:
                _print({"id": fleet.id, "name": fleet.name, "created_at": iso_ms(fleet.created_ms)})
            if page.next_cursor is None:
                return 0
            cursor = page.next_cursor
    if command == "create-key":
        role = Role(args.role)
        if (role is Role.OPERATOR) != (args.fleet is None):
            sys.stderr.write("an operator key has no --fleet; a fleet key needs one\n")
            return 2
        if args.fleet is not None:
            try:
                await store.fleets.get(args.fleet)
            except NotFound:
                sys.stderr.write(f"no fleet {args.fleet}\n")
                return 1
        secret, record = new_api_key(
            fleet_id=args.fleet, role=role, name=args.name, email=args.email
        )
        await store.keys.create(record)
        await _audit(store, args.fleet, "create", "key", record.id, f"{role.value}, gp8 admin")
        _print({"id": record.id, "key": secret, "role": role.value, "fleet_id": args.fleet})
        return 0
    if command == "mqtt-acl":
        from gateway.mqtt.acl import generate_acl

        written = await generate_acl(
            store,
            args.out_dir,
            gateway_user=args.gateway_user,
            gateway_password=args.gateway_password,
        )
        _print({"written": [str(p) for p in written]} if written else {"written": []})
        return 0
    if command == "verify-audit":
        return await _verify_audit(store, args.fleet)
    if command == "import":
        return await _import(store, args.fleet, args.file)
    if command == "rotate-secrets-key":
        counts = await store.rotate_secrets()
        detail = ", ".join(f"{kind}={n}" for kind, n in sorted(counts.items()))
        await _audit(store, None, "rotate", "secrets_key", None, f"resealed {detail}")
        _print({"resealed": counts})
        return 0
    raise AssertionError(f"unknown admin command {command}")  # argparse enforces choices


async def _import(store: Store, fleet_id: str, path: Path) -> int:
    """POST /v1/imports' code path: one JSON line per box created (its secret shown once),
    then the counts; the file's errors as JSON lines on stderr and exit 1, nothing stored."""
    try:
        text = await asyncio.to_thread(path.read_text, encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        sys.stderr.write(f"cannot read {path}: {exc}\n")
        return 2
    at = now_ms()
    try:
        result = await import_csv(store, fleet_id, text, now_ms=at)
    except ImportInvalid as exc:
        for error in exc.errors:
            sys.stderr.write(json.dumps(dataclasses.asdict(error)) + "\n")
        sys.stderr.write(f"{exc}\n")
        return 1
    except NotFound:
        sys.stderr.write(f"no fleet {fleet_id}\n")
        return 1
    counts = {"vehicles": len(result.vehicles), "boxes": len(result.boxes)}
    detail = f"{counts['vehicles']} vehicles, {counts['boxes']} boxes, {result.fittings} fittings"
    await _audit(store, fleet_id, "import", "fleet", fleet_id, detail)
    for box in result.boxes:
        _print(dataclasses.asdict(box))
    _print({**counts, "fittings": result.fittings})
    return 0


async def _verify_audit(store: Store, fleet_id: str | None) -> int:
    """One JSON line per chain checked (log, fleet, entries, broken link); 1 if any is broken."""
    status = 0
    for log, repo in (("access_log", store.access_log), ("command_audit", store.audit)):
        fleets = [fleet_id] if fleet_id is not None else await repo.chain_fleets()
        for fleet in fleets:

            def read(after: int, limit: int, fleet: str | None = fleet, repo: Any = repo) -> Any:
                return repo.chain(fleet, after_seq=after, limit=limit)

            report = await verify_chain(walk(read))
            line: dict[str, Any] = {
                "log": log,
                "fleet_id": fleet,
                "entries": report.entries,
                "first_seq": report.first_seq,
                "last_seq": report.last_seq,
                "ok": report.broken is None,
            }
            if report.broken is not None:
                status = 1
                line["broken"] = dataclasses.asdict(report.broken)
            _print(line)
    return status


async def run_migrate(settings: Settings) -> int:
    """`gp8 migrate`: apply the schema steps this database lacks (docs/storage.md)."""
    store = open_store(
        mongo_url=settings.mongo_url,
        mongo_db=settings.mongo_db,
        data_dir=settings.data_dir,
        secrets=secret_box(settings),
        # The step that turns stored badges into pseudonyms needs the driver key.
        pseudonyms=driver_pseudonyms(settings),
        migrate=True,
    )
    await store.start()
    try:
        state = store.schema
    finally:
        await store.close()
    assert state is not None  # set by start()
    _print(
        {
            "engine": state.engine,
            "from": state.found,
            "to": state.version,
            "applied": list(state.applied),
        }
    )
    return 0


def _backup_or_restore(settings: Settings, args: argparse.Namespace) -> int:
    # Blocking file work, run in a thread: no store is opened (the backup reads the file
    # beside a running gp8; a restore must not have gp8 running on its data dir).
    if settings.mongo_url is not None:
        sys.stderr.write(
            "gp8 admin backup/restore are for the SQLite engine; for MongoDB use mongodump and"
            " mongorestore (docs/backups.md)\n"
        )
        return 2
    database = settings.data_dir / SQLITE_FILENAME
    try:
        if args.admin_command == "backup":
            info = sqlite_backup.backup(database, args.dest, overwrite=args.force)
        else:
            info = sqlite_backup.restore(args.src, database, overwrite=args.force)
    except sqlite_backup.BackupError as exc:
        sys.stderr.write(f"gp8: {exc}\n")
        return 1
    out: dict[str, Any] = {
        "path": str(info.path),
        "bytes": info.bytes,
        "schema_version": info.schema_version,
    }
    if info.schema_version < SCHEMA_VERSION:
        out["next"] = "gp8 migrate"  # an older backup: migrate before gp8 serve
    _print(out)
    return 0
