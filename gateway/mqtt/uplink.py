"""One uplink MQTT message in, the GP8 replies out: the MQTT link of the device-session core.

An uplink message (topic ``gp8/{imei}/up``) carries an IDENT frame followed by GP8 data frames
(docs/protocol.md §7). The broker authenticated the publisher and its ACL only lets a box write
its own uplink, so the topic names the box; the IDENT must name the same box, and a message
without one, naming another box, or naming a box gp8 does not know (or has disabled) is dropped
whole and counted. What follows the IDENT goes through the same device-session core as a TCP
read (gateway/core.py), with a session that starts authenticated (the broker did it) and the
box's context from the device cache.

The store policy differs from TCP's, and only it: storage unavailable is not answered with NACK
SERVER_BUSY, since the message itself is the box's resend buffer, held unacknowledged at the
broker; the handler retries with back-off until the records are stored (or the bridge stops,
and the broker resends the message to whichever gateway picks it up next).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from gateway.adapters.gp8 import Gp8Session, Numbering
from gateway.core import STORE_WAIT_S, AnswerHook, DeviceSession, Refusal
from gateway.errors import GatewayError, PipelineClosed
from gateway.mqtt.directory import DeviceCache, KnownDevice
from gateway.mqtt.metrics import MqttMetrics
from gateway.mqtt.presence import Presence
from gateway.pipeline import IngestPipeline
from protocol.gp8 import (
    Ack,
    FrameDecoder,
    FrameError,
    Ident,
    Message,
    Nack,
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


class UplinkHandler:
    def __init__(
        self,
        pipeline: IngestPipeline,
        devices: DeviceCache,
        presence: Presence,
        metrics: MqttMetrics,
        *,
        on_command_result: AnswerHook,
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
        # One numbering for every frame this gateway publishes (ACKs, NACKs, commands).
        self._numbering = Numbering()

    def next_seq(self) -> int:
        """Sequence number of the next frame gp8 publishes (ACKs, NACKs, commands)."""
        return self._numbering.next()

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
            protocol = Gp8Session(numbering=self._numbering)
            for item in uplink.items:
                seq = item.seq if isinstance(item, FrameError) else _data_seq(item)
                if seq is not None:
                    m.nacks[Refusal.IMEI_MISMATCH.value] += 1
                    result.replies.append(protocol.refuse(seq, Refusal.IMEI_MISMATCH))
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
        protocol = Gp8Session(numbering=self._numbering)
        core: DeviceSession[Message, Message] = DeviceSession(
            protocol,
            lambda positions, events: self._store(positions, events, known.context.imei),
            self._metrics,
            self._on_command_result,
            peer=f"mqtt:{known.context.imei}",
        )
        core.start_authenticated(known.context)
        step = await core.handle_frames(protocol.frames(_consume(uplink.items)), received_ms)
        if uplink.truncated:
            self._metrics.frame_errors["truncated"] += 1
        result.records = step.records
        result.replies = step.replies

    async def _store(
        self, positions: Sequence[StoredPosition], events: Sequence[StoredEvent], imei: str
    ) -> bool:
        """True once stored. False only for an unexpected store error (a bug or a poison
        record): the box is told SERVER_BUSY and keeps its records, as over TCP."""

        async def submit() -> None:
            await self._pipeline.submit(positions, events, wait_s=self._store_wait_s)

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


def _consume(items: list[T]) -> Iterator[T]:
    """``items`` in order, each let go of once handed over: a message's decoded frames (50
    records each, typically) are garbage once converted, not held while their positions are
    being stored. Fewer live objects, fewer garbage collections (a fifth of the bridge's event
    loop at 50,000 positions/s)."""
    items.reverse()
    pop = items.pop
    while items:
        yield pop()


def _data_seq(message: Message) -> int | None:
    """The seq of a frame that expects an answer (not of the box's own ACK/NACK)."""
    return None if isinstance(message, (Ack, Nack)) else message.seq
