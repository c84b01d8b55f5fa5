"""Errors of the gateway layer. Storage errors (storage.errors) pass through unchanged: the
connection handler turns them into NACK SERVER_BUSY / LOGIN_RESULT SERVER_BUSY."""

from __future__ import annotations


class GatewayError(Exception):
    """Base class of every gateway error."""


class PipelineClosed(GatewayError):
    """The ingest pipeline is stopping or stopped and takes no new records."""
