"""The access log: who wrote what, and who read personal data, when (GDPR accountability).

Handlers record after the storage call succeeded and before the data leaves: a failed write
logs nothing, and a read that cannot be logged (storage down) is not answered. A write whose
repository takes the entry (``log=audit.entry(...)``, VehicleRepo) has it appended in its own
transaction instead: one commit rather than two, and a failed write logs nothing by
construction.
"""

from __future__ import annotations

from storage.models import AccessLogEntry, ApiKey, new_id, now_ms
from storage.repository import AccessLogRepo


class Audit:
    """Appends access-log entries on behalf of the request's key."""

    def __init__(self, repo: AccessLogRepo, key: ApiKey) -> None:
        self._repo = repo
        self._key = key

    async def __call__(
        self,
        action: str,
        resource: str,
        resource_id: str | None = None,
        *,
        fleet_id: str | None = None,
        detail: str = "",
        reason: str = "",
    ) -> None:
        """Record ``action`` on ``resource``; ``fleet_id`` defaults to the key's fleet (an
        operator key's entries form the platform's chain, fleet None); ``reason``, the one
        the caller gave, if any, is appended to ``detail``."""
        await self._repo.append(
            self.entry(
                action, resource, resource_id, fleet_id=fleet_id, detail=detail, reason=reason
            )
        )

    def entry(
        self,
        action: str,
        resource: str,
        resource_id: str | None = None,
        *,
        fleet_id: str | None = None,
        detail: str = "",
        reason: str = "",
    ) -> AccessLogEntry:
        """The entry `__call__` appends, for a repository write that appends it itself."""
        if reason:
            detail = f"{detail}; reason: {reason}" if detail else f"reason: {reason}"
        return AccessLogEntry(
            id=new_id("log"),
            time_ms=now_ms(),
            key_id=self._key.id,
            fleet_id=fleet_id if fleet_id is not None else self._key.fleet_id,
            action=action,
            resource=resource,
            resource_id=resource_id,
            detail=detail,
        )
