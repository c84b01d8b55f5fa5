"""One uplink MQTT message in, the GP8 replies out: the MQTT twin of a TCP connection's read.

An uplink message (topic ``gp8/{imei}/up``) carries an IDENT frame followed by GP8 data frames
(docs/protocol.md §7). The broker authenticated the publisher and its ACL only lets a box write
its own uplink, so the topic names the box; the IDENT must name the same box, and a message
without one, naming another box, or naming a box gp8 does not know (or has disabled) is dropped
whole and counted. The frames are then treated exactly as on a TCP connection
(gateway/connection.py): records are validated (protocol.check_record) and converted with the
box's fitting history (gateway/convert.py), submitted to the shared ingest pipeline, and ACKed
only once durably stored.

Storage unavailable is not answered with NACK SERVER_BUSY as on TCP: the message itself is the
box's resend buffer, held unacknowledged at the broker, so the handler retries with back-off
until the records are stored (or the bridge stops, and the broker resends the message to
whichever gateway picks it up next).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from gateway.connection import NACK_FOR_ERROR, STORE_WAIT_S, BoxReply, CommandResultHandler
from gateway.convert import to_event, to_position
from gateway.errors import GatewayError, PipelineClosed
from gateway.mqtt.directory import DeviceCache, KnownDevice
from gateway.mqtt.metrics import MqttMetrics
from gateway.mqtt.presence import Presence
from gateway.pipeline import IngestPipeline
from protocol.gp8 import (
    Ack,
    CommandResult,
    Event,
    FrameDecoder,
    FrameError,
    Heartbeat,
    Ident,
    Message,
    Nack,
    NackReason,
    Position,
    check_record,
)
from protocol.gp8.topics import imei_of_up_topic
from storage.errors import StorageUnavailable
from storage.models import DeviceStatus
from storage.models import Event as StoredEvent
from storage.models import Position as StoredPosition

log = logging.getLogger(__name__)

# An uplink message is an IDENT and a few frames; a full 255-record POSITION is 11,488 bytes,
# so 64 KiB is five of them. Bigger is a broken or hostile publisher; Mosquitto's
# message_size_limit can refuse it even earlier (docs/mqtt.md).
MAX_MESSAGE_SIZE = 64 * 1024
# Back-off between attempts to store a message while storage is unavailable.
RETRY_MIN_S = 0.5
RETRY_MAX_S = 30.0

_MAX_SEQ = 0xFFFF_FFFF
_FRAME_NAMES: dict[type[Message], str] = {
    Position: "position",
    Event: "event",
    Heartbeat: "heartbeat",
    CommandResult: "command_result",
    Ack: "ack",
    Nack: "nack",
}
T = TypeVar("T")


class NotStored(GatewayError):
    """The bridge is stopping before the message could be stored: it must not be
    acknowledged, and the broker will deliver it again."""


@dataclass(frozen=True, slots=True)
class Uplink:
    """An uplink payload split into its IDENT and what follows it."""

    ident: Ident | None
    items: list[Message | FrameError]
    truncated: int = 0  # bytes of an incomplete last frame


def split_uplink(payload: bytes) -> Uplink:
    """Decode ``payload``: an IDENT frame first, then data frames. Pure."""
    decoder = FrameDecoder()
    decoder.feed(payload)
    items = list(decoder)
    ident = None
    if items and isinstance(items[0], Ident):
        ident = items[0]
        items = items[1:]
    return Uplink(ident, items, decoder.buffered)


@dataclass(slots=True)
class UplinkResult:
    """What to do once a message is handled: publish ``replies`` on ``reply_to``'s ack topic
    (when there are any), then acknowledge the message to the broker."""

    reply_to: str | None = None
    replies: list[Message] = field(default_factory=list)
    dropped: str | None = None  # why the whole message was dropped
    records: int = 0  # records submitted for storage


@dataclass(slots=True)
class _DataFrame:
    """Placeholder in the reply list for a POSITION/EVENT frame awaiting storage."""

    seq: int


class UplinkHandler:
    def __init__(
        self,
        pipeline: IngestPipeline,
        devices: DeviceCache,
        presence: Presence,
        metrics: MqttMetrics,
        *,
        on_command_result: CommandResultHandler,
        stopping: asyncio.Event,
        store_wait_s: float = STORE_WAIT_S,
        retry_min_s: float = RETRY_MIN_S,
        retry_max_s: float = RETRY_MAX_S,
    ) -> None:
        self._pipeline = pipeline
        self._devices = devices
        self._presence = presence
        self._metrics = metrics
        self._on_command_result = on_command_result
        self._stopping = stopping
        self._store_wait_s = store_wait_s
        self._retry_min_s = retry_min_s
        self._retry_max_s = retry_max_s
        self._seq = -1

    def next_seq(self) -> int:
        """Sequence number of the next frame gp8 publishes (ACKs, NACKs, commands)."""
        self._seq = (self._seq + 1) & _MAX_SEQ
        return self._seq

    async def handle(self, topic: str, payload: bytes, received_ms: int) -> UplinkResult:
        """Process one uplink message. Raises NotStored when the bridge stops first."""
        m = self._metrics
        imei = imei_of_up_topic(topic)
        if imei is None:
            return self._drop("bad_topic", topic)
        if len(payload) > MAX_MESSAGE_SIZE:
            return self._drop("too_large", topic)
        uplink = split_uplink(payload)
        ident = uplink.ident
        if ident is None:
            return self._drop("no_ident", topic)
        if ident.imei != imei:
            # The topic is what the broker authenticated; the IDENT is only a claim. Tell the
            # topic's box (the real publisher, when the broker enforces its ACL) that nothing
            # of this message was stored.
            result = self._drop("imei_mismatch", topic, claimed=ident.imei)
            result.reply_to = imei
            for item in uplink.items:
                seq = item.seq if isinstance(item, FrameError) else _data_seq(item)
                if seq is not None:
                    result.replies.append(self._nack(seq, NackReason.IMEI_MISMATCH))
            return result
        known = await self._retry(lambda: self._devices.get(imei), "device lookup")
        if known is None:
            return self._drop("unknown_device", topic)
        if known.device.status != DeviceStatus.ACTIVE:
            return self._drop("device_disabled", topic)
        self._presence.seen(imei, known.device.id)
        result = UplinkResult(reply_to=imei)
        await self._frames(known, uplink, received_ms, result)
        m.accepted += 1
        return result

    def _drop(self, reason: str, topic: str, *, claimed: str | None = None) -> UplinkResult:
        self._metrics.dropped[reason] += 1
        extra = f" (IDENT says {claimed})" if claimed else ""
        log.warning("mqtt: dropped a message on %r: %s%s", topic, reason, extra)
        return UplinkResult(dropped=reason)

    async def _frames(
        self, known: KnownDevice, uplink: Uplink, received_ms: int, result: UplinkResult
    ) -> None:
        m = self._metrics
        ctx = known.context
        imei = ctx.imei
        pending: list[Message | _DataFrame] = []
        positions: list[StoredPosition] = []
        events: list[StoredEvent] = []
        for item in uplink.items:
            if isinstance(item, FrameError):
                m.frame_errors[item.reason] += 1
                reason = NACK_FOR_ERROR.get(item.reason)
                if reason is not None and item.seq is not None:
                    pending.append(self._nack(item.seq, reason))
                continue
            name = _FRAME_NAMES.get(type(item))
            if name is None:  # LOGIN, a second IDENT, or a server → box type
                m.frame_errors["unexpected_message"] += 1
                pending.append(self._nack(item.seq, NackReason.UNKNOWN_TYPE))
                continue
            m.frames[name] += 1
            if isinstance(item, Position):
                for record in item.records:
                    rejection = check_record(record, received_ms)
                    if rejection is None:
                        positions.append(to_position(record, ctx, received_ms))
                    else:
                        m.records_rejected[rejection.value] += 1
                pending.append(_DataFrame(item.seq))
            elif isinstance(item, Event):
                rejection = check_record(item.record, received_ms)
                if rejection is None:
                    events.append(to_event(item, ctx, received_ms))
                else:
                    m.records_rejected[rejection.value] += 1
                pending.append(_DataFrame(item.seq))
            elif isinstance(item, Heartbeat):
                pending.append(Ack(self.next_seq(), item.seq))
            elif isinstance(item, (CommandResult, Ack, Nack)):  # answers to a COMMAND
                await self._command_reply(imei, item)
                if isinstance(item, CommandResult):
                    pending.append(Ack(self.next_seq(), item.seq))
        if uplink.truncated:
            m.frame_errors["truncated"] += 1
        stored = True
        if positions or events:
            result.records = len(positions) + len(events)
            stored = await self._store(positions, events, imei)
        for reply in pending:
            if not isinstance(reply, _DataFrame):
                result.replies.append(reply)
            elif stored:
                result.replies.append(Ack(self.next_seq(), reply.seq))
            else:
                result.replies.append(self._nack(reply.seq, NackReason.SERVER_BUSY))

    async def _store(
        self, positions: list[StoredPosition], events: list[StoredEvent], imei: str
    ) -> bool:
        """True once stored. False only for an unexpected store error (a bug or a poison
        record): the box is told SERVER_BUSY and keeps its records, as over TCP."""

        async def submit() -> None:
            async with asyncio.timeout(self._store_wait_s):
                await self._pipeline.submit(positions, events)

        try:
            await self._retry(submit, "store")
        except NotStored:
            raise
        except Exception as exc:
            log.error("imei=%s: %d records refused by the store: %r", imei, len(positions), exc)
            return False
        return True

    async def _retry(self, attempt: Callable[[], Awaitable[T]], what: str) -> T:
        """Run ``attempt`` until it does not fail with StorageUnavailable or a timeout; exponential
        back-off with jitter in between. Raises NotStored once the bridge is stopping."""
        delay = self._retry_min_s
        while True:
            if self._stopping.is_set():
                raise NotStored("bridge stopping")
            try:
                return await attempt()
            except PipelineClosed as exc:
                raise NotStored(str(exc)) from exc
            except (StorageUnavailable, TimeoutError) as exc:
                self._metrics.store_retries += 1
                log.warning("mqtt: %s failed (%r); retrying in %.1f s", what, exc, delay)
            try:
                async with asyncio.timeout(delay * random.uniform(0.5, 1.0)):
                    await self._stopping.wait()
            except TimeoutError:
                pass
            delay = min(delay * 2, self._retry_max_s)

    async def _command_reply(self, imei: str, message: BoxReply) -> None:
        try:
            await self._on_command_result(imei, message)
        except Exception:
            log.exception("imei=%s: command result hook failed", imei)

    def _nack(self, seq: int, reason: NackReason) -> Nack:
        self._metrics.nacks[reason.name.lower()] += 1
        return Nack(self.next_seq(), seq, reason)


def _data_seq(message: Message) -> int | None:
    """The seq of a frame that expects an answer (not of the box's own ACK/NACK)."""
    return None if isinstance(message, (Ack, Nack)) else message.seq
