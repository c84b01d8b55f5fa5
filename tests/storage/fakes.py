"""Stand-ins behind small interfaces of the Mongo engine, for the in-memory fake."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from pymongo.asynchronous.client_session import AsyncClientSession

from storage.mongo.errors import translate_errors


class FakeSession:
    """Stands for a driver session. Falsy, because the in-memory fake refuses any truthy
    session argument: the writes still run, and the test sees which session each carried."""

    def __bool__(self) -> bool:
        return False


class FakeTransactions:
    """Transactions as the replica set offers them, for the in-memory fake (which has none)."""

    def __init__(self) -> None:
        self.session = FakeSession()
        self.runs = 0
        self.inside = False

    async def available(self) -> bool:
        return True

    async def run(self, work: Callable[[AsyncClientSession], Awaitable[None]]) -> None:
        self.runs += 1
        self.inside = True
        try:
            with translate_errors():  # as the real one: driver errors come out translated
                await work(cast(AsyncClientSession, self.session))
        finally:
            self.inside = False


def record_inside(db: Any, transactions: FakeTransactions) -> list[bool]:
    """Whether each driver call of ``db`` (a MongoDb) from now on runs inside
    ``transactions.run``, in call order (``db.call`` is wrapped)."""
    inside: list[bool] = []
    original = db.call

    async def call(op: Any, **kwargs: Any) -> Any:
        inside.append(transactions.inside)
        return await original(op, **kwargs)

    db.call = call
    return inside
