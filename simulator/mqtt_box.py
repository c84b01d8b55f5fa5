"""A virtual GP8 box over MQTT: the same interface as simulator.box.VirtualBox.

It logs in to the broker with its IMEI and the password derived from its secret
(protocol.mqtt_password), publishes IDENT + one data frame per message on ``gp8/{imei}/up``
(QoS 1), and keeps every record in its outbox until the GP8 ACK for its frame arrives on
``gp8/{imei}/ack``: a broker PUBACK only means the broker has the message, not that gp8 stored
it. Frames in flight when the link drops, or unanswered for ``ack_timeout_s``, go back to the
outbox and are resent in new frames; gp8's store counts the copies as duplicates. COMMANDs
arriving on ``gp8/{imei}/down`` are executed as VirtualBox does and answered with ACK and
COMMAND_RESULT on the uplink.

Its MQTT session is persistent (clean start off, ``session_expiry_s``), so ACKs and commands
published while it is offline are delivered when it reconnects. Every network await has a
timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.mqtt.aiomqtt_compat import PublishTracker, cut, forget_disconnect_error
from gateway.mqtt.config import BrokerConfig
from protocol.gp8 import (
    MAX_RECORDS_PER_FRAME,
    Ack,
    Command,
    CommandResult,
    Event,
    EventCode,
    FrameDecoder,
    FrameError,
    Heartbeat,
    Ident,
    LoginStatus,
    Message,
    Model,
    Nack,
    NackReason,
    Position,
    PositionRecord,
    encode,
    mqtt_password,
)
from protocol.gp8.topics import ack_topic, down_topic, imei_of_box_topic, up_topic
from simulator.box import (
    BUSY_BACKOFF_S,
    COMMAND_MEMORY,
    DEFAULT_BATCH_SIZE,
    DEFAULT_WINDOW,
    FIRMWARE,
    RETRYABLE_NACKS,
    AckHook,
    BoxDisconnected,
    BoxError,
    BoxState,
    CommandHook,
    CommandOutcome,
    LoginRefused,
    OutboxDelivery,
    execute,
    make_record,
)

log = logging.getLogger(__name__)

_MAX_SEQ = 0xFFFF_FFFF
# A frame without its GP8 ACK after this long is sent again: the broker may have dropped the
# message (a full queue), or gp8 may be retrying its storage; the store absorbs a copy.
ACK_TIMEOUT_S = 60.0
# How long the broker keeps the box's session (queued ACKs and commands) while it is away.
SESSION_EXPIRY_S = 24 * 3600
KEEPALIVE_S = 60
# CONNACK codes that mean the broker refused these credentials (3.1.1 codes 4 and 5, MQTT 5
# reason codes 0x86 bad user name or password, 0x87 not authorized, 0x8C bad authentication).
_AUTH_REFUSALS = frozenset({4, 5, 0x86, 0x87, 0x8C})


@dataclass(frozen=True, slots=True)
class _Item:
    """One outbox entry: a position record, or an event when ``code`` is set."""

    record: PositionRecord
    code: EventCode | None = None
    detail: int = 0


@dataclass(eq=False)
class _Link:
    """One broker connection; a box has at most one live link."""

    client: aiomqtt.Client
    publisher: PublishTracker
    reader_task: asyncio.Task[None] | None = None
    heartbeat_task: asyncio.Task[None] | None = None
    alive: bool = True
    # Set when the link drops: aiomqtt's publish() would otherwise wait out its whole timeout
    # for a PUBACK that can no longer come.
    lost: asyncio.Event = field(default_factory=asyncio.Event)


class MqttBox(OutboxDelivery):
    _LOG_NAME = "mqtt box"

    def __init__(
        self,
        imei: str,
        secret: str,
        model: Model = Model.GP8000,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        batch_size: int = DEFAULT_BATCH_SIZE,
        window: int = DEFAULT_WINDOW,
        connect_timeout_s: float = 10.0,
        io_timeout_s: float = 30.0,
        busy_backoff_s: float = BUSY_BACKOFF_S,
        heartbeat_interval_s: float | None = None,
        on_command: CommandHook | None = None,
        on_ack: AckHook | None = None,
        ack_timeout_s: float = ACK_TIMEOUT_S,
        session_expiry_s: int = SESSION_EXPIRY_S,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        tls: bool = False,
    ) -> None:
        if not 1 <= batch_size <= MAX_RECORDS_PER_FRAME:
            raise ValueError(f"batch_size must be 1..{MAX_RECORDS_PER_FRAME}")
        self.imei = imei
        self.secret = secret
        self.model = model
        self.host = host
        self.port = port
        self.batch_size = batch_size
        self.window = max(1, window)
        self.connect_timeout_s = connect_timeout_s
        self.io_timeout_s = io_timeout_s
        self.busy_backoff_s = busy_backoff_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.on_command = on_command
        self.on_ack = on_ack
        self.ack_timeout_s = ack_timeout_s
        self.session_expiry_s = session_expiry_s
        self.username = username if username is not None else imei
        self.password = password if password is not None else mqtt_password(secret)
        self.client_id = client_id if client_id is not None else imei
        self.tls = tls
        self.state = BoxState()
        # Counters, for tests and the CLI (the same as VirtualBox's).
        self.acked = 0
        self.dropped = 0
        self.nacks: Counter[NackReason] = Counter()
        self.frame_errors = 0
        self.logins = 0  # successful broker connections
        self.resent = 0  # records put back in the outbox (link lost, ACK timeout)
        self.unrouted = 0  # records the broker had no gp8 subscriber for (sent again later)
        self.commands: list[Command] = []
        self._seq = 0
        self._unsent: deque[_Item] = deque()
        self._inflight: OrderedDict[int, tuple[list[_Item], float]] = OrderedDict()
        self._heartbeats: dict[int, asyncio.Future[None]] = {}
        self._executed: OrderedDict[int, CommandOutcome] = OrderedDict()
        self._replies: set[asyncio.Task[None]] = set()
        self._retry_at = 0.0
        self._changed = asyncio.Event()
        self._link: _Link | None = None

    @classmethod
    def from_url(cls, url: str, imei: str, secret: str, **kwargs: Any) -> MqttBox:
        """A box for the broker at ``mqtt://host:port`` (user and password in the URL are
        ignored: a box logs in as itself)."""
        broker = BrokerConfig.from_url(url)
        return cls(imei, secret, host=broker.host, port=broker.port, tls=broker.tls, **kwargs)

    # --- state -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.alive

    @property
    def pending(self) -> int:
        """Records not yet ACKed (unsent or in flight)."""
        return len(self._unsent) + sum(len(items) for items, _ in self._inflight.values())

    def record(
        self, time_ms: int, lat: float, lon: float, *, flags: int = 0, **kwargs: Any
    ) -> PositionRecord:
        """`make_record` with the box's current relay state in the flags."""
        return make_record(time_ms, lat, lon, flags=flags | self.state.flags, **kwargs)

    # --- connecting --------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect to the broker and subscribe to the box's down and ack topics. Raises
        LoginRefused (bad credentials), BoxDisconnected, TimeoutError."""
        self._drop_link()
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.session_expiry_s
        client = aiomqtt.Client(
            self.host,
            self.port,
            username=self.username,
            password=self.password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=properties,
            keepalive=KEEPALIVE_S,
            timeout=self.io_timeout_s,
            tls_params=aiomqtt.TLSParameters() if self.tls else None,
        )
        client.pending_calls_threshold = 4 * self.window + 10
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await client.__aenter__()
        except MqttConnectError as exc:
            if _code(exc.rc) in _AUTH_REFUSALS:
                raise LoginRefused(LoginStatus.BAD_PROOF) from exc
            raise BoxDisconnected(f"broker refused the connection: {exc}") from exc
        except aiomqtt.MqttError as exc:
            raise BoxDisconnected(f"cannot connect: {exc}") from exc
        link = _Link(client, PublishTracker(client))
        try:
            topics = [(down_topic(self.imei), 1), (ack_topic(self.imei), 1)]
            granted = await client.subscribe(topics, timeout=self.io_timeout_s)
        except aiomqtt.MqttError as exc:
            await self._exit(client)
            raise BoxDisconnected(f"subscribe failed: {exc}") from exc
        if any(_code(code) >= 0x80 for code in granted):
            await self._exit(client)
            raise LoginRefused(LoginStatus.BAD_PROOF)  # the ACL denies its own topics
        self.logins += 1
        self._link = link
        link.reader_task = asyncio.create_task(self._read_loop(link), name=f"mqtt-box-{self.imei}")
        if self.heartbeat_interval_s:
            link.heartbeat_task = asyncio.create_task(self._heartbeat_loop(link))
        self._changed.set()

    async def close(self) -> None:
        """Disconnect politely; unacknowledged records stay in the outbox."""
        link = self._link
        if link is None:
            return
        self._drop_link()
        await self._exit(link.client)
        await self._reap(link)

    def cut(self) -> None:
        """Lose the connection abruptly: the socket goes without a DISCONNECT, as when a box
        loses coverage (the broker notices at the keepalive, or at once on a reset)."""
        link = self._link
        if link is None:
            return
        cut(link.client)
        self._drop_link()

    async def _exit(self, client: aiomqtt.Client) -> None:
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError, OSError):
            async with asyncio.timeout(self.io_timeout_s):
                await client.__aexit__(None, None, None)
        forget_disconnect_error(client)

    def _drop_link(self) -> None:
        """Forget the current link; everything it had in flight goes back to the outbox."""
        link = self._link
        if link is None:
            return
        self._link = None
        link.alive = False
        link.lost.set()
        for task in (link.reader_task, link.heartbeat_task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        self._requeue(list(self._inflight))
        for waiter in self._heartbeats.values():
            if not waiter.done():
                waiter.set_exception(BoxDisconnected("connection lost"))
        self._heartbeats.clear()
        self._changed.set()

    def _requeue(self, seqs: list[int]) -> None:
        """In-flight frames back to the front of the outbox, in their original order."""
        for seq in reversed(seqs):
            items, _ = self._inflight.pop(seq)
            self._unsent.extendleft(reversed(items))
            self.resent += len(items)

    async def _reap(self, link: _Link) -> None:
        tasks = [t for t in (link.reader_task, link.heartbeat_task) if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- sending -----------------------------------------------------------------------------

    def enqueue(self, records: Iterable[PositionRecord]) -> None:
        self._unsent.extend(_Item(r) for r in records)

    def enqueue_event(self, code: EventCode, record: PositionRecord, detail: int = 0) -> None:
        self._unsent.append(_Item(record, code, detail))

    async def send_frames(self, max_frames: int | None = None) -> int:
        """Publish up to ``max_frames`` frames from the outbox, each as IDENT + frame in one
        QoS 1 message, without waiting for their GP8 ACKs; returns how many."""
        link = self._require_link()
        now = asyncio.get_running_loop().time()
        seqs: list[int] = []
        payloads: list[bytes] = []
        while self._unsent and (max_frames is None or len(payloads) < max_frames):
            items = self._next_frame_items()
            ident = self._ident()
            seq = self._next_seq()
            self._inflight[seq] = (items, now)
            seqs.append(seq)
            payloads.append(ident + encode(self._frame_for(items, seq)))
        if payloads:
            codes = await self._publish(link, payloads)
            unrouted = [s for s, code in zip(seqs, codes, strict=True) if code]
            if unrouted:
                self._unrouted(unrouted, max(codes))
        return len(payloads)

    def _unrouted(self, seqs: list[int], code: int) -> None:
        """The broker took these frames but no gateway will see them: 0x10, no subscriber
        (gp8 is not subscribed, e.g. right after a broker restart), or a refusal such as 0x87
        (not authorised). Keep them and try again after the back-off."""
        log.info("mqtt box %s: %d frames not routed (0x%02x); retrying", self.imei, len(seqs), code)
        before = self.resent
        self._requeue([s for s in seqs if s in self._inflight])
        self.unrouted += self.resent - before
        self.resent = before
        self._retry_at = asyncio.get_running_loop().time() + self.busy_backoff_s
        self._changed.set()

    async def flush(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Send the whole outbox and wait until every record is ACKed or dropped.

        Raises BoxDisconnected if the link drops (the rest stays in the outbox) and
        TimeoutError after ``timeout`` seconds (default: io_timeout_s).
        """
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.io_timeout_s if timeout is None else timeout):
            while self._unsent or self._inflight:
                self._require_link()
                self._changed.clear()
                now = loop.time()
                self._expire(now)
                delay = self._retry_at - now
                room = self.window - len(self._inflight)
                if self._unsent and room > 0 and delay <= 0:
                    await self.send_frames(room)
                    continue
                wait = delay if delay > 0 and not self._inflight else None
                if self._inflight:
                    _, sent = next(iter(self._inflight.values()))
                    wait = max(0.0, sent + self.ack_timeout_s - now)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._changed.wait()

    async def _abandon_link(self) -> None:
        link = self._link
        self._drop_link()
        if link is not None:
            await self._exit(link.client)

    async def heartbeat(self) -> None:
        """Publish a HEARTBEAT and wait for its ACK."""
        link = self._require_link()
        ident = self._ident()
        seq = self._next_seq()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._heartbeats[seq] = waiter
        try:
            (code,) = await self._publish(link, [ident + encode(Heartbeat(seq))])
            if code:
                raise BoxError(f"heartbeat not routed to gp8 (0x{code:02x})")
            async with asyncio.timeout(self.io_timeout_s):
                await waiter
        finally:
            self._heartbeats.pop(seq, None)

    def _expire(self, now: float) -> None:
        late = [
            seq for seq, (_, sent) in self._inflight.items() if now - sent >= self.ack_timeout_s
        ]
        if late:
            log.info("mqtt box %s: %d frames unanswered; resending", self.imei, len(late))
            self._requeue(late)

    def _next_frame_items(self) -> list[_Item]:
        if self._unsent[0].code is not None:
            return [self._unsent.popleft()]
        items: list[_Item] = []
        while self._unsent and self._unsent[0].code is None and len(items) < self.batch_size:
            items.append(self._unsent.popleft())
        return items

    @staticmethod
    def _frame_for(items: list[_Item], seq: int) -> Position | Event:
        first = items[0]
        if first.code is not None:
            return Event(seq, first.code, first.detail, first.record)
        return Position(seq, tuple(i.record for i in items))

    def _ident(self) -> bytes:
        return encode(Ident(self._next_seq(), self.imei, self.model, FIRMWARE))

    async def _publish(self, link: _Link, payloads: list[bytes]) -> list[int]:
        """Publish on the uplink, QoS 1; the PUBACK reason code of each (0: delivered)."""
        topic = up_topic(self.imei)
        publications = [link.publisher.publish(topic, payload) for payload in payloads]
        done = asyncio.ensure_future(asyncio.gather(*publications, return_exceptions=True))
        lost = asyncio.ensure_future(link.lost.wait())
        try:
            async with asyncio.timeout(self.io_timeout_s):
                waiters: set[asyncio.Future[Any]] = {done, lost}
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            pass
        finally:
            lost.cancel()
            confirmed = done.done()
            if not confirmed:
                done.cancel()
                await asyncio.gather(done, return_exceptions=True)
        if not confirmed:
            if link is self._link:
                self._drop_link()
            raise BoxDisconnected("the broker did not confirm the publication")
        codes: list[int] = []
        for result in done.result():
            if isinstance(result, BaseException):
                if link is self._link:
                    self._drop_link()
                raise BoxDisconnected(f"publish failed: {result!r}")
            codes.append(result)
        return codes

    def _require_link(self) -> _Link:
        link = self._link
        if link is None or not link.alive:
            raise BoxDisconnected("not connected")
        return link

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & _MAX_SEQ
        return self._seq

    # --- receiving ---------------------------------------------------------------------------

    async def _read_loop(self, link: _Link) -> None:
        try:
            async for message in link.client.messages:
                parsed = imei_of_box_topic(message.topic.value)
                if parsed is None or parsed[0] != self.imei:
                    continue
                decoder = FrameDecoder()
                decoder.feed(bytes(message.payload))
                for item in decoder:
                    if isinstance(item, FrameError):
                        self.frame_errors += 1
                    else:
                        self._on_message(link, item)
        except aiomqtt.MqttError as exc:
            log.debug("mqtt box %s: link lost: %r", self.imei, exc)
        finally:
            if link is self._link:
                self._drop_link()

    def _on_message(self, link: _Link, message: Message) -> None:
        if isinstance(message, Ack):
            entry = self._inflight.pop(message.acked_seq, None)
            if entry is not None:
                items, sent_at = entry
                self.acked += len(items)
                self._changed.set()
                if self.on_ack is not None:
                    latency = asyncio.get_running_loop().time() - sent_at
                    self.on_ack(len(items), items[0].code is not None, latency)
            waiter = self._heartbeats.get(message.acked_seq)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif isinstance(message, Nack):
            self.nacks[message.reason] += 1
            entry = self._inflight.pop(message.nacked_seq, None)
            if entry is None:
                return
            items = entry[0]
            if message.reason in RETRYABLE_NACKS:
                self._unsent.extendleft(reversed(items))
                if message.reason is NackReason.SERVER_BUSY:
                    self._retry_at = asyncio.get_running_loop().time() + self.busy_backoff_s
            else:
                log.info("mqtt box %s: %d records refused (%s)", self.imei, len(items), message)
                self.dropped += len(items)
            self._changed.set()
        elif isinstance(message, Command):
            self._on_command(link, message)

    def _on_command(self, link: _Link, command: Command) -> None:
        self.commands.append(command)
        outcome = self._executed.get(command.seq)
        if outcome is None:
            outcome = execute(command, self.state, self.on_command)
            self._executed[command.seq] = outcome
            if len(self._executed) > COMMAND_MEMORY:
                self._executed.popitem(last=False)
        status, failure = outcome
        ack = Ack(self._next_seq(), command.seq)
        result = CommandResult(self._next_seq(), command.seq, status, failure, self.state.flags)
        payload = self._ident() + encode(ack) + encode(result)
        # Published from a task: the reader must not wait for a PUBACK of its own.
        task = asyncio.create_task(self._reply(link, payload))
        self._replies.add(task)
        task.add_done_callback(self._replies.discard)

    async def _reply(self, link: _Link, payload: bytes) -> None:
        with contextlib.suppress(BoxError):
            await self._publish(link, [payload])

    async def _heartbeat_loop(self, link: _Link) -> None:
        assert self.heartbeat_interval_s is not None
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            if link is not self._link:
                return
            try:
                await self.heartbeat()
            except (BoxError, TimeoutError) as exc:
                log.debug("mqtt box %s: heartbeat failed: %r", self.imei, exc)
                return


def _code(rc: object) -> int:
    value = getattr(rc, "value", rc)
    return value if isinstance(value, int) else -1
