"""TLS for the box listeners and the broker link: contexts from files, and a bounded handshake.

Contexts are built once, by the entry point (gp8/tls.py maps Settings to them), and handed to
the transports, which never read a certificate file themselves. Every context here refuses
anything older than TLS 1.2 (docs/tls.md).

The box listeners accept connections themselves and run each handshake in a task of their own
(`TlsListener`), rather than letting asyncio's server do it out of sight: a handshake is
bounded by our timeout, counts against the gateway's connection cap while it lasts, and its
failures are counted (`TlsMetrics`). Someone opening connections and never finishing the
handshake costs one socket each for ``handshake_timeout_s`` at most, within the cap.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway.errors import GatewayError
from gateway.metrics import Field, snapshot_of

log = logging.getLogger(__name__)

# The oldest protocol version any gp8 endpoint speaks: TLS 1.0 and 1.1 are deprecated
# (RFC 8996) and every modem that does TLS at all does 1.2.
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
# A box on a slow cellular link completes a handshake in a few round trips of ~1 s at worst;
# a peer still handshaking after this is stalled or hostile.
HANDSHAKE_TIMEOUT_S = 10.0
# Closing a TLS link waits this long for the peer's close_notify, then drops it (asyncio's
# default is 30 s; gateway/connection.py gives a plain close 2 s).
SHUTDOWN_TIMEOUT_S = 5.0
# After a failed accept (out of file descriptors), the listener waits this long to try again.
ACCEPT_RETRY_S = 0.5

# What a listener calls with each connection's streams (asyncio.start_server's callback).
StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class TlsConfigError(GatewayError, ValueError):
    """A certificate, key or CA file cannot be used; the message names the file and why."""


class TlsMetrics:
    """One listener's TLS handshakes by result: ok, timeout, failed (a protocol version below
    the minimum, a client certificate missing or not signed by the CA, garbage, a reset)."""

    FIELDS = (Field("handshakes", "handshakes", "counter", "TLS handshakes by result.", "result"),)

    def __init__(self) -> None:
        self.handshakes: Counter[str] = Counter()

    def snapshot(self) -> dict[str, object]:
        return snapshot_of(self)


def server_context(cert: Path, key: Path, *, client_ca: Path | None = None) -> ssl.SSLContext:
    """A server context for ``cert``/``key`` (PEM; the cert file may hold the chain); with
    ``client_ca``, peers must present a certificate signed by it (mutual TLS)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    _load(context.load_cert_chain, cert, key)
    if client_ca is not None:
        _load(context.load_verify_locations, client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(
    ca: Path | None = None, *, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A client context that verifies the server against ``ca`` (else the system's trust
    store) and its host name; ``cert``/``key``: our own certificate, for a server that asks."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # checks the chain and the host name
    context.minimum_version = MINIMUM_VERSION
    if ca is not None:
        _load(context.load_verify_locations, ca)
    else:
        context.load_default_certs()
    if cert is not None:
        _load(context.load_cert_chain, cert, key)
    return context


def _load(loader: Callable[..., None], *files: Path | None) -> None:
    present = [f for f in files if f is not None]
    for path in present:
        # OpenSSL's error does not say which of the files is missing.
        if not path.is_file():
            raise TlsConfigError(f"{path}: no such file")
    try:
        loader(*map(str, present))
    except OSError as exc:  # ssl.SSLError is one: not PEM, a key that does not match
        names = ", ".join(map(str, present))
        raise TlsConfigError(f"{names}: not a usable PEM certificate/key ({exc})") from None


class TlsListener:
    """A listening socket whose connections reach ``on_connect`` once their TLS handshake is
    done: plain streams of plaintext, like `asyncio.start_server`'s.

    Why not asyncio's own servers: ``start_server(ssl=...)`` handshakes where we cannot see it
    (a failure is not reported, a connection in its handshake is not capped), and upgrading an
    accepted stream with ``StreamWriter.start_tls`` loses a ClientHello the stream already read
    (uvloop reads at once; MagicStack/uvloop#707, python/cpython#142352). Here each accepted
    socket is handed to the loop's TLS with ``connect_accepted_socket`` inside our own task:
    bounded by our timeout, counted, and admitted (``admit``: source networks, connection cap)
    before any handshake work is done.
    """

    def __init__(
        self,
        sockets: list[socket.socket],
        context: ssl.SSLContext,
        on_connect: StreamHandler,
        *,
        handshake_timeout_s: float,
        admit: Callable[[object], bool],
        metrics: TlsMetrics,
    ) -> None:
        self.sockets = tuple(sockets)
        self._context = context
        self._on_connect = on_connect
        self._timeout_s = handshake_timeout_s
        self._admit = admit
        self._metrics = metrics
        self._accepting: list[asyncio.Task[None]] = []
        self._handshakes: set[asyncio.Task[None]] = set()  # still handshaking
        # Every connection's task, through its handshake and after: the loop keeps only weak
        # references to tasks.
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(
        cls,
        on_connect: StreamHandler,
        host: str,
        port: int,
        context: ssl.SSLContext,
        *,
        backlog: int,
        handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
        admit: Callable[[object], bool] = lambda _peer: True,
        metrics: TlsMetrics | None = None,
    ) -> TlsListener:
        """Listen on every address ``host`` resolves to, like `asyncio.start_server`."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        sockets: list[socket.socket] = []
        try:
            for family, address in dict.fromkeys((info[0], info[4]) for info in infos):
                sock = socket.create_server(address, family=family, backlog=backlog)
                sockets.append(sock)
                sock.setblocking(False)
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        listener = cls(
            sockets,
            context,
            on_connect,
            handshake_timeout_s=handshake_timeout_s,
            admit=admit,
            metrics=metrics or TlsMetrics(),
        )
        listener._accepting = [asyncio.create_task(listener._accept(s)) for s in sockets]
        return listener

    @property
    def handshaking(self) -> int:
        """Connections accepted and not yet through their handshake."""
        return len(self._handshakes)

    def close(self) -> None:
        """Accept no more; connections still handshaking are dropped (not those past it)."""
        for task in [*self._accepting, *self._handshakes]:
            task.cancel()
        for sock in self.sockets:
            sock.close()

    async def wait_closed(self) -> None:
        await asyncio.gather(*self._accepting, *self._handshakes, return_exceptions=True)

    async def _accept(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, peer = await loop.sock_accept(listening)
            except OSError as exc:  # out of file descriptors, ...: the listener goes on
                log.warning("TLS listener: accept failed: %r", exc)
                await asyncio.sleep(ACCEPT_RETRY_S)
                continue
            if not self._admit(peer):
                sock.close()
                continue
            task = asyncio.create_task(self._connection(sock))
            self._handshakes.add(task)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _connection(self, sock: socket.socket) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            streams = await self._handshake(sock)
        finally:
            self._handshakes.discard(task)
        if streams is not None:
            await self._on_connect(*streams)

    async def _handshake(
        self, sock: socket.socket
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The connection's plaintext streams, or None (counted, the socket closed)."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(self._timeout_s):
                transport, _ = await loop.connect_accepted_socket(
                    lambda: protocol,
                    sock,
                    ssl=self._context,
                    # Ours fires first and is told apart; the loop's is the backstop.
                    ssl_handshake_timeout=self._timeout_s * 2,
                    # Closing waits for the peer's close_notify: a silent peer, not 30 s.
                    ssl_shutdown_timeout=SHUTDOWN_TIMEOUT_S,
                )
        except TimeoutError:
            self._failed("timeout", sock)
            return None
        except asyncio.CancelledError:  # close(): the gateway is stopping
            sock.close()
            return None
        except OSError as exc:
            # ssl.SSLError is one: a version below the minimum, no or a bad client certificate,
            # not TLS at all; or the peer reset the connection.
            self._failed("failed", sock, exc)
            return None
        self._metrics.handshakes["ok"] += 1
        # What asyncio.open_connection builds around a transport.
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    def _failed(self, reason: str, sock: socket.socket, exc: BaseException | None = None) -> None:
        self._metrics.handshakes[reason] += 1
        log.debug("TLS handshake %s: %r", reason, exc)
        sock.close()
