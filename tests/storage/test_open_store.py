"""The engine factory."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import SQLITE_FILENAME, StorageError, open_store
from storage.mongo import MongoStore
from storage.sqlite import SqliteStore


async def test_sqlite_when_no_mongo_url(tmp_path: Path) -> None:
    data_dir = tmp_path / "data" / "nested"
    store = open_store(mongo_url=None, mongo_db="gp8", data_dir=data_dir)
    assert isinstance(store, SqliteStore)
    assert store.path == data_dir / SQLITE_FILENAME
    await store.start()
    try:
        assert (data_dir / SQLITE_FILENAME).is_file()
        assert (await store.health())["path"] == str(data_dir / SQLITE_FILENAME)
    finally:
        await store.close()


async def test_mongo_when_url_given(tmp_path: Path) -> None:
    store = open_store(
        mongo_url="mongodb://127.0.0.1:9", mongo_db="fleetdb", data_dir=tmp_path / "unused"
    )
    assert isinstance(store, MongoStore)
    assert store.db_name == "fleetdb"
    assert not (tmp_path / "unused").exists()  # nothing local for the Mongo engine
    await store.close()  # never started, never connected


def test_malformed_mongo_url_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        open_store(mongo_url="http://not-mongo", mongo_db="gp8", data_dir=tmp_path)
