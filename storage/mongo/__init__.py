"""The MongoDB engine (PyMongo's async API): production, several gateways on one database."""

from __future__ import annotations

from storage.mongo.store import MongoStore

__all__ = ["MongoStore"]
