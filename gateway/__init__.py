"""The gateway: box links (TCP, MQTT) around one device-session core and the ingest pipeline;
box frames in, durably stored positions and events out (docs/architecture.md)."""

from __future__ import annotations

from gateway.adapters.gp8 import to_event, to_position
from gateway.auth import LoginChecker, LoginOutcome
from gateway.connection import Connection, ConnectionConfig
from gateway.context import DeviceContext, Fittings
from gateway.core import AnswerHook, DeviceSession, LoginHook
from gateway.errors import GatewayError, PipelineClosed
from gateway.metrics import GatewayMetrics
from gateway.pipeline import IngestPipeline
from gateway.ports import DeviceDirectory, GatewayStore, TelemetrySink
from gateway.registry import SessionHandle, SessionRegistry
from gateway.server import TcpGateway

__all__ = [
    "AnswerHook",
    "Connection",
    "ConnectionConfig",
    "DeviceContext",
    "DeviceDirectory",
    "DeviceSession",
    "Fittings",
    "GatewayError",
    "GatewayMetrics",
    "GatewayStore",
    "IngestPipeline",
    "LoginChecker",
    "LoginHook",
    "LoginOutcome",
    "PipelineClosed",
    "SessionHandle",
    "SessionRegistry",
    "TcpGateway",
    "TelemetrySink",
    "to_event",
    "to_position",
]
