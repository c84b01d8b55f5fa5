"""The access log: who wrote what, and who read personal data, when (GDPR accountability).

Handlers record after the storage call succeeded and before the data leaves: a failed write
logs nothing, and a read that cannot be logged (storage down) is not answered.
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
        if reason:
            detail = f"{detail}; reason: {reason}" if detail else f"reason: {reason}"
        await self._repo.append(
            AccessLogEntry(
                id=new_id("log"),
                time_ms=now_ms(),
                key_id=self._key.id,
                fleet_id=fleet_id if fleet_id is not None else self._key.fleet_id,
                action=action,
                resource=resource,
                resource_id=resource_id,
                detail=detail,
            )
        )
