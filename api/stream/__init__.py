"""The live stream (GET /v1/stream): protocol, fan-out, transports, pruning.

- protocol.py — what clients say and are told, close codes (pure);
- hub.py — one reader per fleet with clients, bounded mailboxes, slow consumers dropped;
- session.py — auth, vehicle check, access log and the pump, for both transports;
- websocket.py, sse.py — the two transports;
- pruner.py — keeps the log to its retention window.
"""

from __future__ import annotations

from api.stream.hub import Limits, StreamHub, Subscription
from api.stream.protocol import CLOSINGS, StreamError, StreamOptions, StreamRefused
from api.stream.pruner import StreamPruner

__all__ = [
    "CLOSINGS",
    "Limits",
    "StreamError",
    "StreamHub",
    "StreamOptions",
    "StreamPruner",
    "StreamRefused",
    "Subscription",
]
