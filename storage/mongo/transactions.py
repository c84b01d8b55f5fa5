"""Multi-document transactions on MongoDB, where the deployment has them.

A replica set member or a mongos runs them; a standalone server (and the in-memory test fake)
does not, and each repository that uses them has an ordered fallback for it (commands: claim,
audit, command; telemetry: records, then the stream's log). The question is asked once per
store: a deployment does not change kind while gp8 runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from pymongo.asynchronous.client_session import AsyncClientSession

from storage.errors import StorageError, StorageUnavailable
from storage.mongo.db import Doc, MongoDb

__all__ = ["ServerTransactions", "Transactions", "supports_transactions"]


class Transactions(Protocol):
    """Multi-document transactions, where the deployment has them (tests pass a fake)."""

    async def available(self) -> bool:
        """Whether `run` may be used: a replica set member or mongos answers."""
        ...

    async def run(self, work: Callable[[AsyncClientSession], Awaitable[None]]) -> None:
        """Run ``work`` (every write of it given the session) as one committed transaction;
        driver errors come out as storage errors (a duplicate key: Conflict)."""
        ...


class ServerTransactions:
    """Transactions through the database's own client, if its server has them."""

    def __init__(self, db: MongoDb) -> None:
        self._db = db
        self._available: bool | None = None  # asked once: a deployment does not change kind

    async def available(self) -> bool:
        if self._available is None:
            self._available = await self._ask()
        return self._available

    async def _ask(self) -> bool:
        try:
            hello: Doc = await self._db.call(self._db.database.command("hello"))
        except StorageUnavailable:
            raise  # not an answer: ask again next time
        except (StorageError, NotImplementedError):
            # A server too old for `hello`, or a stand-in (the test fake) that implements few
            # commands: neither runs transactions.
            return False
        return supports_transactions(hello)

    async def run(self, work: Callable[[AsyncClientSession], Awaitable[None]]) -> None:
        async with self._db.database.client.start_session() as session:
            # One call at the error boundary: with_transaction retries a transient error
            # itself (it must see the driver's exception, so `work` calls the driver
            # directly), and the operation timeout bounds the whole transaction.
            await self._db.call(
                session.with_transaction(work, write_concern=self._db.database.write_concern)
            )


def supports_transactions(hello: Doc) -> bool:
    """Does the server that gave this `hello` reply run multi-document transactions?"""
    sessions = hello.get("logicalSessionTimeoutMinutes") is not None
    return sessions and ("setName" in hello or hello.get("msg") == "isdbgrid")
