"""Secrets at rest on both engines: nothing clear in the raw database, every secret readable
back, key rotation, and a value under an unknown key refused with a typed error."""

from __future__ import annotations

import base64
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pymongo_async_mock import AsyncMongoMockClient

from api.webhooks.signing import new_secret, signature_headers
from protocol.gp8.auth import login_proof, verify_login_proof
from protocol.gp8.frames import Model
from storage.models import DeviceModel
from storage.mongo import MongoStore
from storage.repository import Store
from storage.secrets import (
    PREFIX,
    InvalidSecretsKey,
    SecretBox,
    SecretDecryptionFailed,
    UnknownSecretsKey,
    key_id,
    load_secret_box,
)
from storage.sqlite import SqliteStore
from tests.storage.test_webhooks import endpoint

IMEI = "356938035643809"
KEY_A = os.urandom(32)
KEY_B = os.urandom(32)

Opener = Callable[[SecretBox], Store]


@pytest.fixture(params=["sqlite", "mongo-fake"])
async def opener(request: pytest.FixtureRequest, db_dir: Path) -> AsyncIterator[Opener]:
    """Opens stores of one engine on one database, each with the box it is given."""
    client = AsyncMongoMockClient()
    opened: list[Store] = []

    def open_store(box: SecretBox) -> Store:
        store: Store
        if request.param == "sqlite":
            store = SqliteStore(db_dir / "gp8.sqlite3", secrets=box)
        else:
            store = MongoStore(client, "gp8_secrets", secrets=box)
        opened.append(store)
        return store

    open_store.engine = request.param  # type: ignore[attr-defined]
    open_store.raw = lambda: _raw_values(request.param, db_dir, client)  # type: ignore[attr-defined]
    yield open_store
    for store in opened:
        await store.close()


async def _raw_values(engine: str, db_dir: Path, client: AsyncMongoMockClient) -> list[str]:
    """Every value of every row or document, as text: what a dump of the database shows."""
    if engine == "sqlite":
        with sqlite3.connect(db_dir / "gp8.sqlite3") as conn:
            tables = [
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            return [
                str(value)
                for table in tables
                for row in conn.execute(f"SELECT * FROM {table}")
                for value in row
            ]
    database = client.get_database("gp8_secrets")
    values = []
    for name in await database.list_collection_names():
        for doc in await database.get_collection(name).find({}).to_list():
            values.append(repr(doc))
    return values


async def _provision(store: Store) -> tuple[str, str, str]:
    await store.start()
    fleet = await store.fleets.create("secrets")
    device = await store.devices.create(
        fleet.id, imei=IMEI, model=DeviceModel.GP8500, secret="box-secret-0123456789"
    )
    hook = await store.webhooks.create(endpoint(fleet.id, secret=new_secret()))
    return fleet.id, device.secret, hook.secret


async def _check_readable(store: Store, fleet_id: str, box_secret: str, hook_secret: str) -> None:
    device = await store.devices.get_by_imei(IMEI)
    assert device is not None and device.secret == box_secret
    # The gateway's login check and the delivery service's signature work on what is read.
    nonce = b"n" * 16
    proof = login_proof(box_secret, nonce, IMEI, Model.GP8500)
    assert verify_login_proof(device.secret, nonce, IMEI, Model.GP8500, proof)
    (hook,) = await store.webhooks.active()
    assert hook.secret == hook_secret
    assert (await store.webhooks.list(fleet_id)).items[0].secret == hook_secret
    expected = signature_headers(hook_secret, "msg_1", 1_000_000, "{}")
    assert signature_headers(hook.secret, "msg_1", 1_000_000, "{}") == expected


async def test_the_raw_database_holds_no_secret(opener: Opener) -> None:
    store = opener(SecretBox(KEY_A))
    fleet_id, box_secret, hook_secret = await _provision(store)
    raw = "\n".join(await opener.raw())  # type: ignore[attr-defined]
    assert box_secret not in raw and hook_secret not in raw
    assert raw.count(f"{PREFIX}{key_id(KEY_A)}:") == 2
    await _check_readable(store, fleet_id, box_secret, hook_secret)


async def test_rotation_reseals_and_everything_still_works(opener: Opener) -> None:
    fleet_id, box_secret, hook_secret = await _provision(opener(SecretBox(KEY_A)))
    # The new key current, the old one kept to open what it sealed: then rotate.
    rotating = opener(SecretBox(KEY_B, [KEY_A]))
    await rotating.start()
    assert await rotating.rotate_secrets() == {"devices": 1, "webhooks": 1}
    assert await rotating.rotate_secrets() == {"devices": 0, "webhooks": 0}  # nothing left
    raw = "\n".join(await opener.raw())  # type: ignore[attr-defined]
    assert key_id(KEY_A) not in raw and raw.count(key_id(KEY_B)) == 2
    # The old key can now be dropped from the configuration.
    after = opener(SecretBox(KEY_B))
    await after.start()
    await _check_readable(after, fleet_id, box_secret, hook_secret)


async def test_a_secret_under_an_unknown_key_is_a_typed_error(opener: Opener) -> None:
    await _provision(opener(SecretBox(KEY_A)))
    stranger = opener(SecretBox(KEY_B))
    await stranger.start()
    with pytest.raises(UnknownSecretsKey, match=key_id(KEY_A)):
        await stranger.devices.get_by_imei(IMEI)
    with pytest.raises(UnknownSecretsKey):
        await stranger.webhooks.active()
    # Rotation cannot proceed either, and changes nothing.
    with pytest.raises(UnknownSecretsKey):
        await stranger.rotate_secrets()
    raw = "\n".join(await opener.raw())  # type: ignore[attr-defined]
    assert raw.count(key_id(KEY_A)) == 2


# --- the box itself --------------------------------------------------------------------------


def test_a_sealed_value_opens_only_for_its_record_and_untampered() -> None:
    box = SecretBox(KEY_A)
    sealed = box.seal("s3cret", "device:dev_1")
    assert sealed.startswith(f"{PREFIX}{box.current_key_id}:") and "s3cret" not in sealed
    assert box.open(sealed, "device:dev_1") == "s3cret"
    assert box.seal("s3cret", "device:dev_1") != sealed  # a fresh nonce each time
    with pytest.raises(SecretDecryptionFailed):
        box.open(sealed, "device:dev_2")  # copied onto another row
    kid, payload = sealed[len(PREFIX) :].split(":")
    raw = bytearray(base64.b64decode(payload))
    raw[-1] ^= 1
    tampered = f"{PREFIX}{kid}:{base64.b64encode(bytes(raw)).decode()}"
    with pytest.raises(SecretDecryptionFailed):
        box.open(tampered, "device:dev_1")
    for not_sealed in ("s3cret", f"{PREFIX}", f"{PREFIX}{kid}:!!"):
        with pytest.raises(SecretDecryptionFailed):
            box.open(not_sealed, "device:dev_1")


def test_keys_from_settings_values(tmp_path: Path) -> None:
    a, b = (base64.b64encode(k).decode() for k in (KEY_A, KEY_B))
    default = load_secret_box(key=None, key_file=None)
    assert default.is_default
    assert not load_secret_box(key=a, key_file=None).is_default
    key_file = tmp_path / "keys"
    key_file.write_text(f"# current first\n{b}\n\n{a}\n")
    from_file = load_secret_box(key=None, key_file=key_file)
    assert from_file.current_key_id == key_id(KEY_B)
    assert from_file.key_ids == {key_id(KEY_A), key_id(KEY_B)}
    # What the old key sealed opens with the file's keys.
    sealed = SecretBox(KEY_A).seal("x", "webhook:wh_1")
    assert from_file.open(sealed, "webhook:wh_1") == "x"
    bad: list[dict[str, Any]] = [
        {"key": "c2hvcnQ=", "key_file": None},  # 5 bytes
        {"key": "not base64!", "key_file": None},
        {"key": a, "key_file": key_file},  # ambiguous
        {"key": None, "key_file": tmp_path / "missing"},
    ]
    for kwargs in bad:
        with pytest.raises(InvalidSecretsKey):
            load_secret_box(**kwargs)
