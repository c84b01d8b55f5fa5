"""The processing stage after the durable store: a chain of small handlers that run on what was
just stored for each device (docs/architecture.md). The gateway's ingest pipeline feeds it;
handlers (geofences, alerts, theft detection in ``tracking/``) plug into it."""

from __future__ import annotations

from processing.stage import DeviceBatch, Handler, ProcessingStage, Signal

__all__ = ["DeviceBatch", "Handler", "ProcessingStage", "Signal"]
