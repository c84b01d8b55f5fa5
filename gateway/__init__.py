"""The TCP gateway: box connections in, durably stored positions and events out."""

from __future__ import annotations

from gateway.auth import LoginChecker, LoginOutcome
from gateway.connection import CommandResultHandler, Connection, ConnectionConfig
from gateway.convert import DeviceContext, Fittings, to_event, to_position
from gateway.errors import GatewayError, PipelineClosed
from gateway.metrics import GatewayMetrics
from gateway.pipeline import IngestPipeline
from gateway.ports import DeviceDirectory, GatewayStore, TelemetrySink
from gateway.registry import SessionHandle, SessionRegistry
from gateway.server import TcpGateway

__all__ = [
    "CommandResultHandler",
    "Connection",
    "ConnectionConfig",
    "DeviceContext",
    "DeviceDirectory",
    "Fittings",
    "GatewayError",
    "GatewayMetrics",
    "GatewayStore",
    "IngestPipeline",
    "LoginChecker",
    "LoginOutcome",
    "PipelineClosed",
    "SessionHandle",
    "SessionRegistry",
    "TcpGateway",
    "TelemetrySink",
    "to_event",
    "to_position",
]
