"""Fixtures for the whole suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mongomock.collection import BulkOperationBuilder


@pytest.fixture(autouse=True)
def _unpile_mongo_fake_wrappers() -> Iterator[None]:
    """Undo a leak of the Mongo fake after each test.

    pymongo_async_mock wraps mongomock's ``BulkOperationBuilder.add_update`` once for every
    collection it patches; its "already wrapped" check never matches (functools.wraps copies
    the original name), so the wrappers pile up across the whole session until any bulk update
    dies with RecursionError, in whichever test happens to cross the limit.
    """
    original = BulkOperationBuilder.add_update
    yield
    BulkOperationBuilder.add_update = original  # type: ignore[method-assign]
