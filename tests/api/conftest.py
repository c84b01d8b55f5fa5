from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from storage import open_store
from storage.repository import Store
from tests.api.helpers import OPERATOR_KEY, VALID_IMEIS, VALID_VINS, FleetFixture, create_fleet

# The real SQLite engine, on tmpfs when there is one: these tests exercise the API, and an
# fsync per commit on a disk would make the suite several times slower for nothing.
_TMPFS = Path("/dev/shm")


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    if not _TMPFS.is_dir():
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="gp8-api-test-", dir=_TMPFS))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def store(data_dir: Path) -> AsyncIterator[Store]:
    s = open_store(mongo_url=None, mongo_db="gp8", data_dir=data_dir)
    await s.start()
    yield s
    await s.close()


@pytest.fixture
def app(store: Store) -> FastAPI:
    return create_app(store, bootstrap_key=OPERATOR_KEY, rate_limit_per_minute=None)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


@pytest.fixture
async def fleet_a(client: httpx.AsyncClient) -> FleetFixture:
    return await create_fleet(client, "alpha", VALID_VINS[0], VALID_IMEIS[0])


@pytest.fixture
async def fleet_b(client: httpx.AsyncClient) -> FleetFixture:
    return await create_fleet(client, "bravo", VALID_VINS[1], VALID_IMEIS[1])
