"""The TCP gateway: accepts box connections and runs one `Connection` per socket, and owns
the process's ingest pipeline and processing stage (which the MQTT bridge shares).

Takes plain values (the entry point reads Settings). Isolation between boxes comes from
per-connection timeouts on every read and write, and from the shared ingest pipeline, which
only ever waits on storage, never on a socket: a silent, slow or half-open box costs its own
task and buffers, nothing else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import socket
from collections.abc import Sequence

from gateway.adapters import gp8, teltonika
from gateway.auth import LoginChecker
from gateway.connection import Connection, ConnectionConfig, Services
from gateway.core import AnswerHook, LoginHook, log_answer
from gateway.lifecycle import Service
from gateway.metrics import GatewayMetrics, MetricsCollector
from gateway.pipeline import IngestPipeline
from gateway.ports import GatewayStore
from gateway.registry import SessionRegistry
from processing import Handler, ProcessingStage
from protocol.gp8 import Message
from storage.models import Event, Position

log = logging.getLogger(__name__)

# Pending-connection queue of the listening socket. After a gateway restart thousands of boxes
# reconnect within seconds; the default (100) makes the kernel drop SYNs and the boxes back off
# for seconds. The kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 4096
# stop() without an explicit grace period.
DEFAULT_GRACE_S = 10.0


class TcpGateway(Service):
    def __init__(
        self,
        store: GatewayStore,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        idle_timeout_s: float = 300.0,
        login_timeout_s: float = 30.0,
        write_timeout_s: float = 30.0,
        max_connections: int = 20_000,
        batch_size: int = 1000,
        max_batch_size: int | None = None,
        max_delay_ms: int = 20,
        queue_limit: int = 50_000,
        gateway_id: str | None = None,
        on_command_result: AnswerHook = log_answer,
        on_login: LoginHook | None = None,
        handlers: Sequence[Handler] = (),
        teltonika_port: int | None = None,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.port = 0  # the bound port, once started
        # A second listener, for Teltonika boxes (docs/teltonika.md); None: off.
        self._teltonika_requested_port = teltonika_port
        self.teltonika_port: int | None = None  # its bound port, once started
        self.gateway_id = gateway_id or f"{socket.gethostname()}-{os.getpid()}"
        self._max_connections = max_connections
        self.metrics = GatewayMetrics()
        # The processing stage runs after the durable store, on what every transport of this
        # process stored (the MQTT bridge shares this pipeline); what it derives goes back in.
        self.processing = ProcessingStage(
            handlers,
            submit=self._submit_derived,
            counters=self.metrics.processing,
            last_fix=self._last_fix,
        )
        self._telemetry = store.telemetry
        self.pipeline = IngestPipeline(
            store.telemetry,
            batch_size=batch_size,
            max_batch_size=max_batch_size,
            max_delay_ms=max_delay_ms,
            queue_limit=queue_limit,
            metrics=self.metrics,
            processing=self.processing,
        )
        self.registry = SessionRegistry(
            store.devices, gateway_id=self.gateway_id, metrics=self.metrics
        )
        self._services = Services(
            config=ConnectionConfig(
                idle_timeout_s=idle_timeout_s,
                login_timeout_s=login_timeout_s,
                write_timeout_s=write_timeout_s,
            ),
            pipeline=self.pipeline,
            open_session=gp8.sessions(
                LoginChecker(store.devices, metrics=self.metrics), store.devices
            ),
            registry=self.registry,
            devices=store.devices,
            metrics=self.metrics,
            on_command_result=on_command_result,
            on_login=on_login,
        )
        # The same link, pipeline, registry and hooks; only the protocol differs.
        self._teltonika_services = dataclasses.replace(
            self._services, open_session=teltonika.sessions(store.devices, self.metrics)
        )
        self._server: asyncio.Server | None = None
        self._teltonika_server: asyncio.Server | None = None
        self._connections: dict[Connection, asyncio.Task[None]] = {}
        self._closing = False

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("gateway already started")
        await self.processing.start()
        await self.pipeline.start()
        try:
            self._server = await asyncio.start_server(
                self._on_connect, self.host, self._requested_port, backlog=LISTEN_BACKLOG
            )
            if self._teltonika_requested_port is not None:
                self._teltonika_server = await asyncio.start_server(
                    functools.partial(self._on_connect, services=self._teltonika_services),
                    self.host,
                    self._teltonika_requested_port,
                    backlog=LISTEN_BACKLOG,
                )
        except BaseException:
            if self._server is not None:
                self._server.close()
            await self.pipeline.stop()
            await self.processing.stop()
            raise
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("gateway %s listening on %s:%d", self.gateway_id, self.host, self.port)
        if self._teltonika_server is not None:
            self.teltonika_port = self._teltonika_server.sockets[0].getsockname()[1]
            log.info("teltonika boxes on %s:%d", self.host, self.teltonika_port)

    async def stop(self, grace_s: float = DEFAULT_GRACE_S) -> None:
        """Stop accepting and reading; store and ACK what was received; close every socket.

        Connections get ``grace_s`` seconds to finish what they were doing; then they are
        cancelled (anything not ACKed by then is resent by the boxes) and the pipeline drains.
        """
        if self._closing:
            return
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        if self._server is not None:
            self._server.close()
        if self._teltonika_server is not None:
            self._teltonika_server.close()
        for connection in list(self._connections):
            connection.stop()
        tasks = list(self._connections.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.pipeline.stop(grace_s=max(deadline - loop.time(), 1.0))
        # Derived events of the last flushes cannot be stored once the pipeline is closed;
        # they are counted (processing{result="derived_failed"}).
        await self.processing.stop(grace_s=max(deadline - loop.time(), 1.0))
        if self._server is not None:
            await self._server.wait_closed()
        if self._teltonika_server is not None:
            await self._teltonika_server.wait_closed()
        log.info("gateway %s stopped", self.gateway_id)

    # --- for /health and the command issue ---------------------------------------------------

    def is_online(self, imei: str) -> bool:
        return self.registry.is_online(imei)

    async def send(self, imei: str, message: Message) -> bool:
        return await self.registry.send(imei, message)

    def health(self) -> dict[str, object]:
        """The gateway's counters and state, for GET /health."""
        return {
            "gateway_id": self.gateway_id,
            "port": self.port,
            **({"teltonika_port": self.teltonika_port} if self.teltonika_port else {}),
            "sessions": len(self.registry),
            "ingest_pending": self.pipeline.pending,
            "processing_pending": self.processing.pending,
            **self.metrics.snapshot(),
        }

    def collector(self) -> MetricsCollector:
        """The gateway's counters for a prometheus-client registry (GET /metrics)."""
        return MetricsCollector(self.metrics, "gp8_gateway_")

    async def _last_fix(self, fleet_id: str, vehicle_id: str) -> int | None:
        position = await self._telemetry.last_position(fleet_id, vehicle_id)
        return None if position is None else int(position.time_ms)

    async def _submit_derived(self, positions: Sequence[Position], events: Sequence[Event]) -> None:
        await self.pipeline.submit(positions, events, process=False)

    # --- connections -------------------------------------------------------------------------

    async def _on_connect(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        services: Services | None = None,  # the listener's protocol; default GP8
    ) -> None:
        metrics = self.metrics
        if self._closing or len(self._connections) >= self._max_connections:
            metrics.connections_refused += 1
            writer.transport.abort()
            return
        connection = Connection(reader, writer, services or self._services)
        task = asyncio.current_task()
        assert task is not None
        self._connections[connection] = task
        metrics.connections_total += 1
        metrics.connections_current += 1
        try:
            await connection.run()
        except asyncio.CancelledError:
            # Cancelled by stop() after its grace period (or by the loop shutting down): the
            # connection is over either way. Ending normally matters on Python 3.11, whose
            # StreamReaderProtocol reports a cancelled handler task as an unhandled error.
            writer.transport.abort()
        except Exception:
            # A bug in the handler must cost one connection, not reach the loop's handler.
            log.exception("connection from %s failed", connection.remote)
            writer.transport.abort()
        finally:
            del self._connections[connection]
            metrics.connections_current -= 1
