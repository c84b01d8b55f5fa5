"""`gp8 serve`: the composition root. Storage, the TCP gateway and the API in one process."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import resource
import signal
import socket
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry

from gp8.metrics import FamilyCollector
from gp8.settings import Settings

log = logging.getLogger("gp8.serve")

# Time given to connections to finish the frames they already sent when we are asked to stop.
SHUTDOWN_GRACE_S = 10.0


class _ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: gp8 owns SIGINT/SIGTERM because the gateway
    must drain (store and acknowledge what boxes already sent) as part of the shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def default_gateway_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Running:
    """What `start_services` started; `ports` are the bound ones (0 in tests picks free ones)."""

    def __init__(self) -> None:
        self.store: Any = None
        self.gateway: Any = None
        self.mqtt: Any = None
        self.commands: Any = None
        self.api_server: uvicorn.Server | None = None
        self.api_task: asyncio.Task[None] | None = None
        self.stream_hub: Any = None
        self.stream_pruner: Any = None
        self.webhooks: Any = None
        self.offline_sweep: Any = None
        self.retention: Any = None
        self.export_worker: Any = None

    @property
    def tcp_port(self) -> int:
        return int(self.gateway.port)

    @property
    def api_port(self) -> int:
        assert self.api_server is not None
        servers = self.api_server.servers
        return int(servers[0].sockets[0].getsockname()[1])


async def start_services(settings: Settings) -> Running:
    """Start storage, gateway, optional MQTT bridge and API; `stop_services` undoes it.

    If any part fails to start (a port in use, storage unreachable), what already started is
    stopped again before the error propagates: nothing is left listening.
    """
    run = Running()
    try:
        await _start(run, settings)
    except BaseException:
        try:
            await stop_services(run)
        except Exception:
            log.exception("while undoing a failed start")
        raise
    return run


async def _start(run: Running, settings: Settings) -> None:
    from api.app import create_app
    from api.http_limits import HttpLimits, connection_cap, limited_http
    from api.routes.console import ConsoleOptions
    from api.routes.health import ReadyCheck, link_check
    from api.security import KeyThrottle
    from commands import CommandService
    from gateway import TcpGateway
    from gateway.adapters import teltonika
    from gateway.networks import SourceNetworks
    from gp8.tls import broker_config, server_contexts, uvicorn_context_factory
    from storage import open_store
    from storage.sqlite import SqliteStore
    from throttle import AuthThrottle, FailureLimit, FailureThrottle

    # TLS first: a bad certificate or key file stops the start before anything opens.
    tls = server_contexts(settings)
    broker = broker_config(settings)
    readiness: dict[str, ReadyCheck] = {}  # GET /ready's checks beyond storage

    from gp8.secrets_key import driver_pseudonyms, secret_box

    # One driver key for the whole process: the gateway hashes the badges it stores, the API
    # those a client names, the migration those stored before (storage/pseudonyms.py).
    pseudonyms = driver_pseudonyms(settings)
    # start() refuses a schema older or newer than this gp8's: `gp8 migrate` upgrades (never
    # done here, not even for the embedded default: an upgrade rewrites the secrets, so it is
    # an operator's step, after a backup; docs/storage.md).
    store = open_store(
        mongo_url=settings.mongo_url,
        mongo_db=settings.mongo_db,
        data_dir=settings.data_dir,
        secrets=secret_box(settings),
        pseudonyms=pseudonyms,
        sqlite_writer=settings.sqlite_writer,
    )
    await store.start()
    run.store = store
    gateway_id = settings.gateway_id or default_gateway_id()
    commands = CommandService(store, gateway_id=gateway_id)
    from tracking import GeofenceHandler

    # Geofence enter/exit (docs/alerts.md): first in the chain, the alert rules act on its signals.
    geofences = GeofenceHandler(store.geofences)
    from tracking.alerts import AlertRulesHandler
    from tracking.guard import GuardHandler
    from tracking.rules import RuleBook

    # The alert rules and the parked guard (docs/alerts.md, docs/theft.md), after the
    # geofences: one rule book (each fleet's rules, read through a 5 s cache) for both.
    rule_book = RuleBook(store.alert_rules)
    alert_rules = AlertRulesHandler(store, rule_book)
    parked_guard = GuardHandler(store, rule_book)
    from tracking.privacy_toggles import PrivacyToggleHandler

    # A driver presenting the fleet's privacy badge toggles the vehicle's privacy (docs/privacy.md).
    privacy_toggles = PrivacyToggleHandler(store.privacy)
    # Failed logins: by (address, IMEI) and by address (docs/security.md).
    lockout = settings.tcp.login_lockout_s
    gateway = TcpGateway(
        store,
        host=settings.tcp.host,
        port=settings.tcp.port,
        idle_timeout_s=settings.tcp.idle_timeout_s,
        login_timeout_s=settings.tcp.login_timeout_s,
        write_timeout_s=settings.tcp.write_timeout_s,
        frame_timeout_s=settings.tcp.frame_timeout_s,
        login_throttle=AuthThrottle(
            per_identity=FailureLimit(settings.tcp.login_failures_per_imei, 600.0, lockout),
            per_source=FailureLimit(settings.tcp.login_failures_per_source, 60.0, lockout),
        ),
        hide_unknown_device=settings.tcp.hide_unknown_device,
        max_connections=settings.tcp.max_connections,
        batch_size=settings.ingest.batch_size,
        max_delay_ms=settings.ingest.max_delay_ms,
        queue_limit=settings.ingest.queue_limit,
        shed_above=settings.ingest.shed_above,
        gateway_id=gateway_id,
        on_command_result=commands.on_box_reply,
        on_login=commands.on_box_online,
        teltonika_port=settings.teltonika.port,
        tls=tls["tcp"],
        teltonika_tls=tls["teltonika"],
        tls_handshake_timeout_s=settings.tls.handshake_timeout_s,
        allowed_networks=SourceNetworks(settings.tcp.allowed_networks),
        teltonika_allowed_networks=SourceNetworks(settings.teltonika.allowed_networks),
        handlers=[geofences, alert_rules, parked_guard, privacy_toggles],
        pseudonyms=pseudonyms,
        teltonika_profiles=teltonika.with_privacy_input(settings.teltonika.privacy_input),
    )
    gateway.registry.on_duplicate = commands.on_duplicate_login
    # The connection rows other gp8 processes write: cross-process duplicate boxes and the
    # live sessions' seen_ms (docs/scaling.md).
    gateway.registry.ledger = store.devices
    # Role "api" listens to no box: the commands it queues are sent by the gateway processes,
    # whose sweepers poll for them (docs/commands.md, "Transports and processes").
    boxes = settings.role != "api"
    if boxes:
        commands.add_sender(gateway)
        await gateway.start()
        run.gateway = gateway

    metrics = CollectorRegistry()
    if boxes:
        metrics.register(gateway.collector())
        for collector in gateway.tls_collectors():
            metrics.register(collector)
    metrics.register(commands.metrics)
    if isinstance(store, SqliteStore):  # 0 throughout with the writer on a thread
        sqlite_store = store
        metrics.register(
            FamilyCollector(
                "gp8_sqlite_writer_process_exits",
                "Times the SQLite writer process ended unexpectedly or was killed as hung"
                " (its writes in flight failed; a new process took its place).",
                (),
                lambda: [((), sqlite_store.writer_exits)],
            )
        )
    health_parts: list[Callable[[], Awaitable[dict[str, Any]]]] = []

    async def gateway_health() -> dict[str, Any]:
        return {"gateway": {"status": "ok", "tcp_port": gateway.port, **gateway.health()}}

    if boxes:
        health_parts.append(gateway_health)

    if broker is not None and boxes:
        from gateway.mqtt import MqttBridge

        bridge = MqttBridge(
            broker,
            gateway.pipeline,
            store,
            share_group=settings.mqtt.share_group,
            # Stable across restarts (no pid): the broker keeps this session's share of the
            # uplink while the process is down and hands it back to the same id (docs/mqtt.md).
            client_id=settings.mqtt.client_id
            or f"gp8-{settings.gateway_id or socket.gethostname()}",
            gateway_id=gateway_id,
            session_expiry_s=settings.mqtt.session_expiry_s,
            on_command_result=commands.on_box_reply,
            on_box_online=commands.on_box_online,
        )
        commands.add_sender(bridge)
        metrics.register(bridge.collector())
        await bridge.start()
        run.mqtt = bridge
        # Unready while the broker link is down: the bridge says so through `connected`.
        readiness["mqtt"] = link_check(bridge, f"broker {broker.address}")

        async def mqtt_health() -> dict[str, Any]:
            return {"mqtt": bridge.health()}

        health_parts.append(mqtt_health)

    await commands.start()
    run.commands = commands

    async def commands_health() -> dict[str, Any]:
        return {"commands": commands.health()}

    health_parts.append(commands_health)

    # The live stream: this process's fan-out to its clients, and the log's retention window.
    from api.services.privacy import EntryPrivacy
    from api.stream import StreamHub, StreamPruner

    # Private fixes never reach the stream (docs/privacy.md).
    stream_hub = StreamHub(
        store.stream, queue_limit=settings.stream.queue_limit, privacy=EntryPrivacy(store)
    )
    run.stream_hub = stream_hub
    stream_pruner = StreamPruner(store.stream, retention_s=settings.stream.retention_s)
    await stream_pruner.start()
    run.stream_pruner = stream_pruner

    async def stream_health() -> dict[str, Any]:
        return {"stream": stream_hub.health()}

    metrics.register(
        FamilyCollector(
            "gp8_stream_clients",
            "Live-stream clients connected to this process.",
            (),
            lambda: [((), stream_hub.health()["clients"])],
            gauge=True,
        )
    )
    metrics.register(
        FamilyCollector(
            "gp8_stream_slow_consumers_dropped",
            "Live-stream clients dropped for not keeping up.",
            (),
            lambda: [((), stream_hub.dropped)],
        )
    )

    health_parts.append(stream_health)

    if settings.webhooks.enabled:
        from api.webhooks import WebhookService

        # Per-fleet webhooks: follows the stream log, so it runs in every process, safely.
        webhooks = WebhookService(
            store,
            allow_private=settings.webhooks.allow_private,
            poll_interval_s=settings.webhooks.poll_interval_s,
            request_timeout_s=settings.webhooks.request_timeout_s,
            max_in_flight=settings.webhooks.max_in_flight,
            per_endpoint_in_flight=settings.webhooks.per_endpoint_in_flight,
            # What the stream leaves out (privacy mode), webhooks leave out too.
            privacy=EntryPrivacy(store),
        )
        await webhooks.start()
        run.webhooks = webhooks

        async def webhooks_health() -> dict[str, Any]:
            return {"webhooks": webhooks.health()}

        metrics.register(
            FamilyCollector(
                "gp8_webhook_deliveries",
                "Webhook deliveries and attempts by result.",
                ("result",),
                lambda: [((k,), v) for k, v in dataclasses.asdict(webhooks.counters).items()],
            )
        )

        health_parts.append(webhooks_health)

    from tracking.offline import OfflineSweep

    # The box_offline rule: boxes that went silent send nothing a handler could see.
    offline_sweep = OfflineSweep(store, rule_book, interval_s=settings.tracking.offline_sweep_s)
    await offline_sweep.start()
    run.offline_sweep = offline_sweep

    async def tracking_health() -> dict[str, Any]:
        return {
            "tracking": {
                "alert_rules": dict(alert_rules.counters),
                "parked_guard": dict(parked_guard.counters),
                "offline_sweep": dict(offline_sweep.counters),
            }
        }

    health_parts.append(tracking_health)

    from api.services.export_job import ExportWorker
    from retention import RetentionService

    # Retention and offboarding enforced by gp8 itself, and the export jobs (docs/gdpr.md).
    exports_dir = settings.data_dir / "exports"
    retention = RetentionService(
        store, exports_dir=exports_dir, interval_s=settings.retention.purge_interval_s
    )
    await retention.start()
    run.retention = retention
    export_worker = ExportWorker(store, directory=exports_dir)
    if settings.role != "gateway":
        await export_worker.start()
        run.export_worker = export_worker
    tracked = {
        "alert_rules": alert_rules.counters,
        "parked_guard": parked_guard.counters,
        "offline": offline_sweep.counters,
    }
    metrics.register(
        FamilyCollector(
            "gp8_tracking",
            "What the tracking handlers did: alerts raised, updated, closed; failures.",
            ("handler", "result"),
            lambda: [
                ((name, result), count)
                for name, counts in tracked.items()
                for result, count in sorted(counts.items())
            ],
        )
    )

    async def health() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for part in health_parts:
            out.update(await part())
        return out

    app = create_app(
        store,
        bootstrap_key=settings.bootstrap_key,
        rate_limit_per_minute=settings.api.rate_limit_per_minute,
        key_ttl_days=settings.api.key_ttl_days,
        health=health,
        metrics=metrics,
        stream_hub=stream_hub,
        webhook_allow_private=settings.webhooks.allow_private,
        readiness=readiness,
        # Role "gateway" serves HTTP for the operational endpoints only (/, /health, /metrics).
        ops_only=settings.role == "gateway",
        # Unset console settings keep the console's defaults (OpenStreetMap's tiles).
        console=ConsoleOptions(**settings.console.model_dump(exclude_none=True)),
        pseudonyms=pseudonyms,
    )
    app.state.commands = commands
    app.state.export_worker = export_worker
    app.state.exports_dir = exports_dir
    app.state.offboarding_days = settings.retention.offboarding_days
    # Invalid API keys per client address (api/security.py): a flood of them is answered 429.
    key_throttle = KeyThrottle(
        FailureThrottle(
            FailureLimit(settings.api.key_failures_per_source, 60.0, settings.api.key_lockout_s)
        )
    )
    app.state.key_throttle = key_throttle
    # Fence writes through this API apply to the handler at once (else within its 30 s cache).
    app.state.geofences_changed = geofences.invalidate
    # Alert rule writes through this API apply to the handlers at once (else within 5 s).
    app.state.rule_book = rule_book
    # So does a new privacy badge (tracking/privacy_toggles.py).
    app.state.privacy_badge_changed = privacy_toggles.invalidate
    # Theft cases (api/routes/theft.py, tracking/theft.py).
    app.state.theft_options = {
        "fast_interval_s": settings.tracking.theft_fast_interval_s,
        "default_interval_s": settings.tracking.default_report_interval_s,
        "hold_days": settings.tracking.theft_hold_days,
    }
    http_refusals: Counter[str] = Counter()
    for name, help_, counts in (
        ("gp8_api_connections_refused", "API connections closed by a limit.", http_refusals),
        ("gp8_api_key_failures", "Invalid API keys and their throttling.", key_throttle.counts),
    ):
        metrics.register(FamilyCollector(name, help_, ("reason",), _by_label(counts)))
    config = uvicorn.Config(
        app,
        host=settings.api.host,
        port=settings.api.port,
        log_level=settings.log_level.lower(),
        # Not uvicorn's own handlers: its loggers propagate to gp8's (gp8/logs.py, JSON lines).
        log_config=None,
        lifespan="on",
        access_log=False,
        # Clients send the stream one small message at most (api/stream/protocol.py).
        ws_max_size=64 * 1024,
        ssl_context_factory=uvicorn_context_factory(tls["api"]),
        # httptools (llhttp) parses in C, h11 in Python; uvicorn has no header deadline, head
        # size limit nor connection caps (slowloris; api/http_limits.py).
        http=limited_http(
            HttpLimits(
                header_timeout_s=settings.api.header_timeout_s,
                max_connections=connection_cap(
                    settings.api.max_connections, resource.getrlimit(resource.RLIMIT_NOFILE)[0]
                ),
                max_connections_per_source=settings.api.max_connections_per_source,
            ),
            http_refusals,
        ),
    )
    server = _ApiServer(config)
    run.api_server = server
    run.api_task = asyncio.create_task(_serve_api(server))
    while not server.started:
        if run.api_task.done():
            await run.api_task  # raises the start-up error (port in use, ...)
            raise RuntimeError("API server exited during start-up")
        await asyncio.sleep(0.02)


def _by_label(counts: Counter[str]) -> Callable[[], list[tuple[tuple[str], int]]]:
    return lambda: [((key,), value) for key, value in sorted(counts.items())]


async def _serve_api(server: uvicorn.Server) -> None:
    # uvicorn reports a failed start (port in use, lifespan error) with sys.exit; a SystemExit
    # escaping a task would stop the whole event loop, so it becomes an ordinary error here.
    try:
        await server.serve()
    except SystemExit as exc:
        raise RuntimeError(f"the API server could not start (exit status {exc.code})") from None


async def stop_services(run: Running) -> None:
    """Graceful: stop the API, then the gateway (drains, stores and acks), then storage."""
    if run.stream_hub is not None:
        # First: live-stream clients are told to resume elsewhere, and uvicorn's graceful
        # shutdown does not wait on their endless responses.
        await run.stream_hub.stop()
    if run.stream_pruner is not None:
        await run.stream_pruner.stop()
    if run.api_server is not None and run.api_task is not None:
        run.api_server.should_exit = True
        if not run.api_task.done():
            await run.api_task
    if run.webhooks is not None:
        await run.webhooks.stop()
    if run.offline_sweep is not None:
        await run.offline_sweep.stop()
    if run.retention is not None:
        await run.retention.stop()
    if run.export_worker is not None:
        await run.export_worker.stop()
    if run.commands is not None:
        await run.commands.stop()
    if run.mqtt is not None:
        await run.mqtt.stop()
    if run.gateway is not None:
        await run.gateway.stop(SHUTDOWN_GRACE_S)
    if run.store is not None:
        await run.store.close()


def refusals(settings: Settings) -> list[str]:
    """Why `gp8 serve` will not start with ``settings``, one line each (production mode, TLS
    files, the broker URL); [] to go ahead."""
    from gateway.errors import GatewayError
    from gp8.production import check_production

    try:
        return check_production(settings)
    except GatewayError as exc:  # TlsConfigError: a listener with a certificate but no key
        return [str(exc)]


async def run_serve(settings: Settings) -> int:
    from gateway.errors import GatewayError

    reasons = refusals(settings)
    for reason in reasons:
        print(f"gp8 serve: {reason}", file=sys.stderr)
    if reasons:
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        run = await start_services(settings)
    except GatewayError as exc:  # an unreadable certificate, a CA with an mqtt:// URL, ...
        print(f"gp8 serve: {exc}", file=sys.stderr)
        return 2
    from gateway.lifecycle import tune_gc

    # Here, in the process's entry point only: it sets the GC of the whole interpreter.
    tune_gc()
    if run.gateway is not None and run.gateway.teltonika_port is not None:
        log.info("teltonika boxes on tcp %s:%d", settings.tcp.host, run.gateway.teltonika_port)
    log.info(
        "gp8 serving (role %s): boxes on %s, API on %s://%s:%d (storage: %s)",
        settings.role,
        f"tcp {settings.tcp.host}:{run.tcp_port}" if run.gateway is not None else "no listener",
        "https" if run.api_server is not None and run.api_server.config.ssl else "http",
        settings.api.host,
        run.api_port,
        "mongodb" if settings.mongo_url else f"sqlite in {settings.data_dir}",
    )
    if run.api_server is not None:
        from gateway.server import describe_bind

        # Loopback by default (docs/security.md, "Listening addresses"): say what is exposed.
        host = settings.api.host
        log.info("API on %s:%d (%s)", host, run.api_port, describe_bind(host))
    try:
        await stop.wait()
    finally:
        log.info("shutting down: draining connections")
        await stop_services(run)
    return 0
