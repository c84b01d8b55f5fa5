"""`gp8 admin ...`: operator tasks straight against the database (MongoDB in production,
or the SQLite file), for when there is no operator key yet or no API to call."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from api.security import ensure_operator_key, new_api_key
from gp8.settings import Settings
from storage import open_store
from storage.errors import NotFound
from storage.models import Role
from storage.repository import Store


def _print(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")


async def run_admin(settings: Settings, args: argparse.Namespace) -> int:
    store = open_store(
        mongo_url=settings.mongo_url, mongo_db=settings.mongo_db, data_dir=settings.data_dir
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
        _print({"id": fleet.id, "name": fleet.name, "created_ms": fleet.created_ms})
        return 0
    if command == "list-fleets":
        cursor: str | None = None
        while True:
            page = await store.fleets.list(cursor=cursor, limit=500)
            for fleet in page.items:
                _print({"id": fleet.id, "name": fleet.name, "created_ms": fleet.created_ms})
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
        secret, record = new_api_key(fleet_id=args.fleet, role=role, name=args.name)
        await store.keys.create(record)
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
    raise AssertionError(f"unknown admin command {command}")  # argparse enforces choices
