"""Property-based run over the OpenAPI schema: no 5xx, every response as the schema says.

The app runs in-process (schemathesis' ASGI transport) on the real SQLite engine and on the
MongoDB engine over the in-memory fake, started and seeded in the app's lifespan so it lives on
the event loop schemathesis drives the app with.
Requests carry a seeded admin key; path ids are sometimes swapped for seeded ones so the 200
paths (positions in every format, trips, ...) are exercised too, not only 404s.
"""

from __future__ import annotations

import atexit
import itertools
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from pymongo_async_mock import AsyncMongoMockClient
from schemathesis import checks

from api.app import create_app
from api.security import new_api_key
from storage import open_store
from storage.models import DeviceModel, Role, now_ms
from storage.mongo import MongoStore
from storage.repository import Store
from tests.api.helpers import VALID_VINS, luhn_imei, make_event, make_position

# The seeded fleet's ids and admin key; replaced at each lifespan start (see below).
SEEDED: dict[str, str] = {}
_SEEDS = itertools.count()


async def seed(store: Store) -> None:
    """A fresh fleet with an admin key, a vehicle with a fitted box and an hour of positions."""
    fleet = await store.fleets.create("fuzzed")
    secret, key = new_api_key(fleet_id=fleet.id, role=Role.ADMIN, name="schemathesis")
    await store.keys.create(key)
    vehicle = await store.vehicles.create(fleet.id, vin=VALID_VINS[0], plate="FZ-1", label="f")
    # A new IMEI at each seed: IMEIs are unique across fleets.
    imei = luhn_imei(f"{35_000_000_000_000 + next(_SEEDS):014d}")
    device = await store.devices.create(
        fleet.id, imei=imei, model=DeviceModel.GP8000, secret="s" * 32
    )
    await store.devices.fit(fleet.id, vehicle.id, device.imei, now_ms() - 7_200_000)
    start = now_ms() - 3_600_000
    positions = [
        make_position(
            fleet.id,
            device.id,
            vehicle.id,
            start + i * 30_000,
            ignition=5 <= i < 60,
            odometer_m=1000 + 300 * i,
            lat=45 + i / 1000,
            lon=5.0,
        )
        for i in range(100)
    ]
    await store.telemetry.store(positions, [make_event(positions[10], "sos")])
    SEEDED.update(
        fleet_id=fleet.id, vehicle_id=vehicle.id, device_id=device.id, key_id=key.id, key=secret
    )


def build_schema(engine: str) -> Any:
    """The schema of an app over a fresh store of ``engine`` (SQLite, or MongoDB on the
    in-memory fake), started and seeded by the lifespan.

    Built at import: schemathesis' lazy `from_fixture` loader does not work with this pytest
    (it reads a private attribute pytest 9 no longer has).
    """
    tmpfs = Path("/dev/shm")
    path = Path(tempfile.mkdtemp(prefix="gp8-schemathesis-", dir=tmpfs if tmpfs.is_dir() else None))
    atexit.register(shutil.rmtree, path, True)
    # One fake server for the run: the stores opened on it below share its data, like
    # reconnections to a real one.
    mongo_client = AsyncMongoMockClient()

    def open_engine() -> Store:
        if engine == "mongo":
            return MongoStore(mongo_client, "gp8_schemathesis")
        return open_store(mongo_url=None, mongo_db="gp8", data_dir=path)

    # The store given here is replaced by the one the lifespan opens (below).
    app = create_app(open_engine(), rate_limit_per_minute=None)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[Any]:
        # Schemathesis stops the lifespan after each operation's test and starts it again for
        # the next; a closed store cannot reopen, so each start opens the same data anew.
        store = open_engine()
        await store.start()
        application.state.store = store
        # Each operation's test starts with a fresh fleet: an earlier test may have deleted the
        # vehicle or purged the positions (the key is an admin's: every write is allowed).
        await seed(store)
        async with inner(application) as state:
            yield state
        await store.close()

    app.router.lifespan_context = lifespan
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app)

    @loaded.hook
    def map_path_parameters(
        context: Any, path_parameters: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        if not path_parameters:
            return path_parameters
        # Half the time (decided by the drawn value) aim at a real record of the fleet.
        for name, value in list(path_parameters.items()):
            if name in SEEDED and len(str(value)) % 2 == 0:
                path_parameters[name] = SEEDED[name]
        return path_parameters

    return loaded


schema = build_schema("sqlite")
mongo_schema = build_schema("mongo")

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


@schema.parametrize()  # type: ignore[untyped-decorator]
@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_schema(case: Any) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {SEEDED['key']}"}, checks=CHECKS)


# The same run on the MongoDB engine, with fewer examples: the engines share the API code, so
# what differs (queries, conflicts, cursors) shows within a few cases per operation.
@mongo_schema.parametrize()  # type: ignore[untyped-decorator]
@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_schema_on_mongo(case: Any) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {SEEDED['key']}"}, checks=CHECKS)
