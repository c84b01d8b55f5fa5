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
import ssl
from collections.abc import Mapping, Sequence

from gateway.adapters import gp8, teltonika
from gateway.auth import LoginChecker
from gateway.connection import (
    FRAME_TIMEOUT_S,
    Backlog,
    Connection,
    ConnectionConfig,
    Services,
)
from gateway.core import AnswerHook, LoginHook, log_answer
from gateway.lifecycle import Service
from gateway.metrics import GatewayMetrics, MetricsCollector
from gateway.networks import SourceNetworks
from gateway.pipeline import IngestPipeline
from gateway.ports import GatewayStore
from gateway.registry import SessionRegistry
from gateway.tls import HANDSHAKE_TIMEOUT_S, StreamHandler, TlsListener, TlsMetrics
from processing import Handler, ProcessingStage
from protocol.gp8 import Message
from storage.models import DeviceModel, Event, Position
from storage.pseudonyms import BadgePseudonyms
from throttle import AuthThrottle

log = logging.getLogger(__name__)

# Pending-connection queue of the listening socket. After a gateway restart thousands of boxes
# reconnect within seconds; the default (100) makes the kernel drop SYNs and the boxes back off
# for seconds. The kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 4096
# stop() without an explicit grace period.
DEFAULT_GRACE_S = 10.0
# Default high-water mark of the connections' backlog (gateway/connection.py), in multiples of
# the pipeline's queue_limit: records beyond the limit wait for room, and beyond this many
# they are refused SERVER_BUSY at once. Well above what a healthy fleet has in flight (1,000
# boxes with 4 frames of 25 records each: 100,000 records, twice the default queue_limit), so
# only a store that falls behind for good sheds.
SHED_FACTOR = 4


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
        frame_timeout_s: float = FRAME_TIMEOUT_S,
        login_throttle: AuthThrottle | None = None,
        hide_unknown_device: bool = False,
        max_connections: int = 20_000,
        batch_size: int = 1000,
        max_batch_size: int | None = None,
        max_delay_ms: int = 20,
        queue_limit: int = 50_000,
        shed_above: int | None = None,
        gateway_id: str | None = None,
        on_command_result: AnswerHook = log_answer,
        on_login: LoginHook | None = None,
        handlers: Sequence[Handler] = (),
        teltonika_port: int | None = None,
        tls: ssl.SSLContext | None = None,
        teltonika_tls: ssl.SSLContext | None = None,
        tls_handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
        allowed_networks: SourceNetworks | None = None,
        teltonika_allowed_networks: SourceNetworks | None = None,
        pseudonyms: BadgePseudonyms | None = None,
        teltonika_profiles: Mapping[DeviceModel, teltonika.DeviceProfile] | None = None,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.port = 0  # the bound port, once started
        # A second listener, for Teltonika boxes (docs/teltonika.md); None: off.
        self._teltonika_requested_port = teltonika_port
        self.teltonika_port: int | None = None  # its bound port, once started
        # TLS per listener (None: plain TCP), contexts built by the entry point (gp8/tls.py).
        self._tls = {"gp8": tls, "teltonika": teltonika_tls if teltonika_port is not None else None}
        self._handshake_timeout_s = tls_handshake_timeout_s
        # Where each listener's boxes may connect from (empty: anywhere).
        self._sources = {
            "gp8": allowed_networks or SourceNetworks(),
            "teltonika": teltonika_allowed_networks or SourceNetworks(),
        }
        self.tls_metrics = {name: TlsMetrics() for name, ctx in self._tls.items() if ctx}
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
            pseudonyms=pseudonyms,
        )
        self.registry = SessionRegistry(
            store.devices, gateway_id=self.gateway_id, metrics=self.metrics
        )
        self._services = Services(
            config=ConnectionConfig(
                idle_timeout_s=idle_timeout_s,
                login_timeout_s=login_timeout_s,
                write_timeout_s=write_timeout_s,
                frame_timeout_s=frame_timeout_s,
            ),
            pipeline=self.pipeline,
            open_session=gp8.sessions(
                LoginChecker(
                    store.devices,
                    metrics=self.metrics,
                    throttle=login_throttle,
                    hide_unknown_device=hide_unknown_device,
                ),
                store.devices,
            ),
            registry=self.registry,
            devices=store.devices,
            metrics=self.metrics,
            on_command_result=on_command_result,
            on_login=on_login,
            backlog=Backlog(shed_above if shed_above is not None else SHED_FACTOR * queue_limit),
        )
        # The same link, pipeline, registry and hooks; only the protocol differs.
        self._teltonika_services = dataclasses.replace(
            self._services,
            open_session=teltonika.sessions(
                store.devices, self.metrics, teltonika_profiles, throttle=login_throttle
            ),
        )
        self._server: asyncio.Server | TlsListener | None = None
        self._teltonika_server: asyncio.Server | TlsListener | None = None
        self._connections: dict[Connection, asyncio.Task[None]] = {}
        self._closing = False

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("gateway already started")
        await self.processing.start()
        await self.pipeline.start()
        try:
            self._server = await self._listen(
                functools.partial(self._on_connect, listener="gp8"), self._requested_port, "gp8"
            )
            if self._teltonika_requested_port is not None:
                self._teltonika_server = await self._listen(
                    functools.partial(
                        self._on_connect, services=self._teltonika_services, listener="teltonika"
                    ),
                    self._teltonika_requested_port,
                    "teltonika",
                )
        except BaseException:
            if self._server is not None:
                self._server.close()
            await self.pipeline.stop()
            await self.processing.stop()
            raise
        self.port = self._server.sockets[0].getsockname()[1]
        reach = describe_bind(self.host)
        log.info(
            "gateway %s: GP8 boxes on %s:%d (%s)", self.gateway_id, self.host, self.port, reach
        )
        if self._teltonika_server is not None:
            self.teltonika_port = self._teltonika_server.sockets[0].getsockname()[1]
            log.info("teltonika boxes on %s:%d (%s)", self.host, self.teltonika_port, reach)

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
        # The connections' "offline" states are queued by now: written in one go.
        await self.registry.close(grace_s=max(deadline - loop.time(), 1.0))
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
            **({"tls": self._tls_snapshot()} if self.tls_metrics else {}),
        }

    def collector(self) -> MetricsCollector:
        """The gateway's counters for a prometheus-client registry (GET /metrics)."""
        return MetricsCollector(self.metrics, "gp8_gateway_")

    def tls_collectors(self) -> list[MetricsCollector]:
        """The TLS handshake counters of each listener serving TLS (GET /metrics)."""
        return [
            MetricsCollector(counts, "gp8_tls_", {"listener": listener})
            for listener, counts in self.tls_metrics.items()
        ]

    async def _last_fix(self, fleet_id: str, vehicle_id: str) -> int | None:
        position = await self._telemetry.last_position(fleet_id, vehicle_id)
        return None if position is None else int(position.time_ms)

    async def _submit_derived(self, positions: Sequence[Position], events: Sequence[Event]) -> None:
        await self.pipeline.submit(positions, events, process=False)

    # --- connections -------------------------------------------------------------------------

    def _tls_snapshot(self) -> dict[str, object]:
        return {listener: counts.snapshot() for listener, counts in self.tls_metrics.items()}

    async def _listen(
        self, on_connect: StreamHandler, port: int, listener: str
    ) -> asyncio.Server | TlsListener:
        context = self._tls[listener]
        if context is None:
            return await asyncio.start_server(on_connect, self.host, port, backlog=LISTEN_BACKLOG)
        return await TlsListener.start(
            on_connect,
            self.host,
            port,
            context,
            backlog=LISTEN_BACKLOG,
            handshake_timeout_s=self._handshake_timeout_s,
            admit=functools.partial(self._admit, listener),
            metrics=self.tls_metrics[listener],
        )

    def _admit(self, listener: str, peer: object) -> bool:
        """Whether to take a new connection from ``peer``: checked as it is accepted, before
        any TLS handshake (which costs CPU and a slot) and again once it reaches
        `_on_connect`."""
        metrics = self.metrics
        if not self._sources[listener].allows(peer):
            metrics.source_refusals[listener] += 1
            log.debug("%s listener: %s is outside the allowed networks", listener, peer)
            return False
        if self._closing or len(self._connections) + self._handshaking() >= self._max_connections:
            metrics.connections_refused += 1
            return False
        return True

    def _handshaking(self) -> int:
        """Connections in their TLS handshake: they count against max_connections."""
        servers = (self._server, self._teltonika_server)
        return sum(s.handshaking for s in servers if isinstance(s, TlsListener))

    async def _on_connect(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        services: Services | None = None,  # the listener's protocol; default GP8
        listener: str = "gp8",
    ) -> None:
        metrics = self.metrics
        if not self._admit(listener, writer.get_extra_info("peername")):
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


def describe_bind(host: str) -> str:
    """What a listen address exposes, for the start-up log: operators must see a wildcard."""
    if host in ("", "0.0.0.0", "::"):
        return "every interface"
    if host in ("localhost", "::1") or host.startswith("127."):
        return "loopback only"
    return "this address only"
