from __future__ import annotations

import asyncio
import socket
import struct

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gateway import TcpGateway
from gateway.metrics import MetricsCollector
from protocol.gp8 import (
    Ack,
    CommandFailure,
    CommandResult,
    CommandStatus,
    Event,
    EventCode,
    Heartbeat,
    LoginResult,
    LoginStatus,
    Message,
    Nack,
    NackReason,
    Position,
    encode,
)
from protocol.gp8.crc import crc16
from simulator.box import make_record
from storage.models import now_ms
from tests.gateway.conftest import TIMEOUT, GatewayFactory, RawClient, imei_for, new_box, track
from tests.gateway.fakes import FakeStore
from tests.polling import eventually


async def logged_in(store: FakeStore, gw: TcpGateway, n: int = 1) -> RawClient:
    store.devices.add(imei_for(n), f"secret-{n}")
    client = await RawClient.connect(gw.port)
    result = await client.login(imei_for(n), f"secret-{n}")
    assert result.status is LoginStatus.OK
    return client


def frame(type_: int, seq: int, payload: bytes, *, version: int = 1) -> bytes:
    body = struct.pack(">2sHBBI", b"G8", 8 + len(payload), version, type_, seq) + payload
    return body + crc16(body[2:]).to_bytes(2, "big")


async def test_positions_are_stored_with_their_vehicle_and_acked(
    store: FakeStore, gateway: TcpGateway
) -> None:
    box = new_box(store, gateway, batch_size=10)
    device = store.devices.by_imei[box.imei]
    records = track(25)
    store.devices.fit(device, "veh_1", from_ms=records[12].time_ms)
    await box.connect()
    await box.send_positions(records)
    assert box.acked == 25 and box.pending == 0
    stored = [store.telemetry.positions[(device.id, r.time_ms)] for r in records]
    assert [p.vehicle_id for p in stored] == [None] * 12 + ["veh_1"] * 13
    assert {p.fleet_id for p in stored} == {"flt_a"}
    assert gateway.metrics.records["stored"] == 25
    assert gateway.metrics.frames["position"] == 3
    await box.close()


async def test_events_are_stored_and_acked(store: FakeStore, gateway: TcpGateway) -> None:
    box = new_box(store, gateway)
    await box.connect()
    record = track(1)[0]
    box.enqueue_event(EventCode.SOS, record, detail=1)
    box.enqueue_event(EventCode.HARSH_BRAKING, record, detail=7)
    await box.flush()
    codes = sorted((e.code, e.detail) for e in store.telemetry.events.values())
    assert codes == [("harsh_braking", 7), ("sos", 1)]
    await box.close()


async def test_frames_of_one_read_are_stored_together_and_acked_in_order(
    store: FakeStore, gateway: TcpGateway
) -> None:
    client = await logged_in(store, gateway)
    records = track(12)
    data = b"".join(
        [encode(Position(10 + i, tuple(records[i * 3 : i * 3 + 3]))) for i in range(3)]
        + [encode(Heartbeat(13)), encode(Event(14, EventCode.TOWING, 0, records[9]))]
    )
    await client.send(data)
    replies = [await client.read() for _ in range(5)]
    assert [(type(r), getattr(r, "acked_seq", None)) for r in replies] == [
        (Ack, 10),
        (Ack, 11),
        (Ack, 12),
        (Ack, 13),
        (Ack, 14),
    ]
    assert len(store.telemetry.positions) == 9 and len(store.telemetry.events) == 1
    assert store.telemetry.calls == [(9, 1)]
    client.close()


async def test_heartbeat_is_acked(store: FakeStore, gateway: TcpGateway) -> None:
    box = new_box(store, gateway)
    await box.connect()
    await asyncio.wait_for(box.heartbeat(), TIMEOUT)
    assert gateway.metrics.frames["heartbeat"] == 1
    await box.close()


async def test_impossible_records_are_dropped_alone_and_the_frame_acked(
    store: FakeStore, gateway: TcpGateway
) -> None:
    client = await logged_in(store, gateway)
    good = track(3)
    future = make_record(now_ms() + 3_600_000, 48.0, 2.0)
    bad_lat = good[0]._replace(time_ms=good[0].time_ms - 1, lat_e7=950_000_000)
    await client.send(Position(5, (good[0], future, good[1], bad_lat, good[2])))
    # A frame whose records are all impossible is still ACKed: resending cannot help.
    await client.send(Position(6, (future,)))
    assert [await client.read(), await client.read()] == [Ack(2, 5), Ack(3, 6)]
    assert len(store.telemetry.positions) == 3
    assert dict(gateway.metrics.records_rejected) == {
        "time_in_future": 2,
        "latitude_out_of_range": 1,
    }
    client.close()


async def test_frames_before_login_are_refused_and_the_connection_closed(
    store: FakeStore, gateway: TcpGateway
) -> None:
    store.devices.add(imei_for(1), "secret-1")
    client = await RawClient.connect(gateway.port)
    await client.send(Position(7, tuple(track(2))))
    messages = await client.read_all_until_closed()
    assert [(type(m), m.nacked_seq, m.reason) for m in messages if isinstance(m, Nack)] == [
        (Nack, 7, NackReason.NOT_AUTHENTICATED)
    ]
    assert store.telemetry.positions == {}
    assert gateway.metrics.frame_errors["not_authenticated"] == 1
    assert gateway.metrics.closes["not_authenticated"] == 1


async def test_bad_frames_are_nacked_and_the_connection_keeps_working(
    store: FakeStore, gateway: TcpGateway
) -> None:
    client = await logged_in(store, gateway)
    records = track(3)
    good = encode(Position(20, (records[0],)))
    corrupted = bytearray(encode(Position(21, (records[1],))))
    corrupted[30] ^= 0xFF
    oversize = struct.pack(">2sHBBI", b"G8", 20_000, 1, 2, 22)
    await client.send(
        b"noise!"
        + bytes(corrupted)
        + frame(0x02, 23, b"\x02" + bytes(10))  # count says 2 records, payload disagrees
        + frame(0x7E, 24, b"")  # unknown type
        + frame(0x04, 25, b"", version=9)  # unsupported version
        + oversize
        + good
    )
    replies: list[Message] = []
    while not (isinstance(last := replies[-1] if replies else None, Ack) and last.acked_seq == 20):
        message = await client.read()
        assert message is not None, "closed before the good frame was ACKed"
        replies.append(message)
    nacks = [(m.nacked_seq, m.reason) for m in replies if isinstance(m, Nack)]
    assert (21, NackReason.BAD_CRC) in nacks
    assert (23, NackReason.MALFORMED) in nacks
    assert (24, NackReason.UNKNOWN_TYPE) in nacks
    assert (25, NackReason.UNSUPPORTED_VERSION) in nacks
    assert (22, NackReason.TOO_LARGE) in nacks
    assert len(store.telemetry.positions) == 1
    errors = gateway.metrics.frame_errors
    for reason in ("garbage", "bad_crc", "malformed", "unknown_type", "unsupported_version"):
        assert errors[reason] >= 1, reason
    # Still open and serving.
    await client.send(Heartbeat(30))
    assert (await client.read()) == Ack(replies[-1].seq + 1, 30)
    client.close()


async def test_a_stream_of_errors_closes_the_connection(
    store: FakeStore, gateway: TcpGateway
) -> None:
    client = await logged_in(store, gateway)
    await client.send(b"".join(frame(0x7E, i, b"") for i in range(60)))
    messages = await client.read_all_until_closed()
    assert 1 <= len(messages) <= 50
    assert gateway.metrics.closes["too_many_errors"] == 1


async def test_an_unsupported_version_before_login_is_answered_and_closed(
    store: FakeStore, gateway: TcpGateway
) -> None:
    client = await RawClient.connect(gateway.port)
    await client.send(frame(0x01, 1, bytes(44), version=2))
    messages = await client.read_all_until_closed()
    assert [m.status for m in messages if isinstance(m, LoginResult)] == [
        LoginStatus.UNSUPPORTED_VERSION
    ]


async def test_idle_timeout_closes_a_silent_box(
    store: FakeStore, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(store, idle_timeout_s=0.2)
    client = await logged_in(store, gw)
    assert gw.is_online(imei_for(1))
    assert await client.read(TIMEOUT) is None  # closed by the gateway
    assert gw.metrics.closes["idle_timeout"] == 1
    device = store.devices.by_imei[imei_for(1)]
    await eventually(lambda: not gw.is_online(imei_for(1)))
    # Recorded by the coalescing state writer, a batch later (gateway/states.py).
    await eventually(lambda: store.devices.connections[device.id].online is False)


async def test_garbage_and_bad_boxes_do_not_cost_good_boxes_a_record(
    store: FakeStore, gateway: TcpGateway
) -> None:
    async def noisy(i: int) -> None:
        client = await RawClient.connect(gateway.port)
        if i % 3 == 0:
            await client.send(bytes(range(256)) * 20)  # garbage, never logs in
        elif i % 3 == 1:
            await client.send(Position(1, tuple(track(2))))  # data without login
        else:
            store.devices.add(imei_for(100 + i), "x")
            await client.login(imei_for(100 + i), "x")
            corrupted = bytearray(encode(Position(2, tuple(track(5)))))
            corrupted[-1] ^= 1
            await client.send(bytes(corrupted) + b"G8G8G8\xff\xff")
        await asyncio.sleep(0.05)
        client.close()

    boxes = [new_box(store, gateway, n, batch_size=7) for n in range(1, 6)]

    async def good(i: int) -> None:
        box = boxes[i]
        box.enqueue(track(30))
        await box.deliver(timeout=TIMEOUT)
        await box.close()

    await asyncio.gather(*(noisy(i) for i in range(9)), *(good(i) for i in range(5)))
    good_ids = {store.devices.by_imei[b.imei].id for b in boxes}
    stored = [k for k in store.telemetry.positions if k[0] in good_ids]
    assert len(stored) == 150
    assert len(store.telemetry.positions) == 150  # nothing from the bad ones


async def test_a_stalled_client_does_not_block_others(
    store: FakeStore, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(store, write_timeout_s=1.0)
    # Accepted sockets inherit the listener's send buffer: a small one (and no autotuning)
    # makes a client that does not read stall the gateway's writes after ~100 kB, not ~3 MB.
    assert gw._server is not None
    gw._server.sockets[0].setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    store.devices.add(imei_for(50), "x")
    # A client with a tiny receive buffer that never reads: the gateway's ACKs pile up.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gw.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    stalled = RawClient(reader, writer)
    challenge = await stalled.read()
    stalled.challenge = challenge  # type: ignore[assignment]
    await stalled.send(stalled.login_frame(imei_for(50), "x"))
    stalled.writer.write(encode(Heartbeat(2)) * 100_000)
    # And a half-open one: sent half a frame, then nothing.
    half_open = await logged_in(store, gw, 51)
    await half_open.send(encode(Position(2, tuple(track(50))))[:300])
    # Wait until the gateway's writes to the stalled client are stuck.
    seen = -1
    async with asyncio.timeout(TIMEOUT):
        while seen != gw.metrics.frames["heartbeat"]:
            seen = gw.metrics.frames["heartbeat"]
            await asyncio.sleep(0.05)
    assert 0 < seen < 100_000

    box = new_box(store, gw, 1)
    box.enqueue(track(100))
    await box.deliver(timeout=TIMEOUT)
    assert len(store.telemetry.positions) == 100
    assert gw.metrics.closes["write_timeout"] == 0  # delivered while the other was stuck
    await eventually(lambda: gw.metrics.closes["write_timeout"] >= 1)
    assert gw.is_online(imei_for(51))  # half-open: left to the idle timeout
    await box.close()
    stalled.close()
    half_open.close()


async def test_a_link_dying_mid_frame_is_counted_and_nothing_is_stored(
    store: FakeStore, gateway: TcpGateway
) -> None:
    client = await logged_in(store, gateway)
    data = encode(Position(2, tuple(track(4))))
    await client.send(data[: len(data) - 3])
    client.writer.close()
    await eventually(lambda: gateway.metrics.closes["eof"] >= 1)
    assert gateway.metrics.frame_errors["truncated"] == 1
    assert store.telemetry.positions == {}


async def test_a_second_login_supersedes_the_first_session(
    store: FakeStore, gateway: TcpGateway
) -> None:
    first = await logged_in(store, gateway)
    second = await RawClient.connect(gateway.port)
    assert (await second.login(imei_for(1), "secret-1")).status is LoginStatus.OK
    assert await first.read() is None  # the old connection is closed
    assert gateway.metrics.superseded == 1
    await second.send(Heartbeat(9))
    assert isinstance(await second.read(), Ack)
    device = store.devices.by_imei[imei_for(1)]
    await eventually(lambda: gateway.metrics.closes["superseded"] == 1)  # the old one is gone
    assert gateway.is_online(imei_for(1))
    assert store.devices.connections[device.id].online is True
    assert [c.online for c in store.devices.connection_log] == [True, True]
    second.close()


async def test_connections_beyond_the_limit_are_refused(
    store: FakeStore, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(store, max_connections=2)
    a = await RawClient.connect(gw.port)
    b = await RawClient.connect(gw.port)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    async with asyncio.timeout(TIMEOUT):
        assert await reader.read(100) == b""
    writer.close()
    assert gw.metrics.connections_refused == 1
    assert gw.metrics.connections_current == 2
    a.close()
    b.close()


async def test_storage_down_means_server_busy_and_a_later_resend_is_stored(
    store: FakeStore, gateway: TcpGateway
) -> None:
    box = new_box(store, gateway, batch_size=5, busy_backoff_s=0.05)
    await box.connect()
    store.telemetry.unavailable = True
    box.enqueue(track(10))
    flushing = asyncio.create_task(box.flush(timeout=TIMEOUT))
    await eventually(lambda: box.nacks[NackReason.SERVER_BUSY] >= 2)
    assert store.telemetry.positions == {} and box.acked == 0
    store.telemetry.unavailable = False
    await flushing
    assert len(store.telemetry.positions) == 10 and box.acked == 10
    assert gateway.metrics.nacks["server_busy"] >= 2
    await box.close()


async def test_a_frame_stored_but_not_acked_before_a_cut_is_stored_once(
    store: FakeStore, gateway: TcpGateway
) -> None:
    box = new_box(store, gateway, batch_size=5)
    await box.connect()
    box.enqueue(track(5))
    store.telemetry.gate = asyncio.Event()
    await box.send_frames(1)
    await asyncio.wait_for(store.telemetry.entered.wait(), TIMEOUT)
    box.cut()  # the link dies while the frame is being stored
    store.telemetry.gate.set()
    await box.deliver(timeout=TIMEOUT)  # reconnect and resend the unacknowledged frame
    assert box.acked == 5 and box.pending == 0
    assert len(store.telemetry.positions) == 5
    assert gateway.metrics.records == {"stored": 5, "duplicate": 5}
    await box.close()


async def test_command_results_go_to_the_hook_and_are_acked(
    store: FakeStore, make_gateway: GatewayFactory
) -> None:
    seen: list[tuple[str, object]] = []

    async def hook(imei: str, message: object) -> None:
        seen.append((imei, message))

    gw = await make_gateway(store, on_command_result=hook)
    client = await logged_in(store, gw)
    result = CommandResult(2, 77, CommandStatus.DONE, CommandFailure.NONE, 4)
    await client.send(result)
    assert await client.read() == Ack(2, 2)
    await client.send(Ack(3, 78))  # the box ACKing a command: passed on, not answered
    await client.send(Heartbeat(4))
    assert await client.read() == Ack(3, 4)
    assert seen == [(imei_for(1), result), (imei_for(1), Ack(3, 78))]
    client.close()


async def test_a_command_reaches_the_box_and_its_state_shows_in_its_records(
    store: FakeStore, make_gateway: GatewayFactory
) -> None:
    from protocol.gp8 import Command, CommandType

    results: asyncio.Queue[object] = asyncio.Queue()

    async def hook(imei: str, message: object) -> None:
        await results.put(message)

    gw = await make_gateway(store, on_command_result=hook)
    box = new_box(store, gw)
    await box.connect()
    assert await gw.send(box.imei, Command(1000, CommandType.LOCK, 0))
    receipt = await asyncio.wait_for(results.get(), TIMEOUT)
    assert isinstance(receipt, Ack) and receipt.acked_seq == 1000  # ACK on receipt first
    result = await asyncio.wait_for(results.get(), TIMEOUT)
    assert isinstance(result, CommandResult) and result.command_seq == 1000
    assert result.status is CommandStatus.DONE and result.state & 0b100
    await box.send_positions([box.record(now_ms() - 1000, 48.0, 2.0)])
    (stored,) = store.telemetry.positions.values()
    assert stored.doors_locked and not stored.engine_start_inhibited
    assert not await gw.send(imei_for(404), Command(1, CommandType.LOCK, 0))
    await box.close()


async def test_graceful_shutdown_stores_and_acks_what_was_received(
    store: FakeStore, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(store)
    boxes = [new_box(store, gw, n, batch_size=10, window=3) for n in range(1, 4)]
    for box in boxes:
        await box.connect()
        box.enqueue(track(30))
    store.telemetry.gate = asyncio.Event()  # storage is slow: the frames wait in flight
    for box in boxes:
        assert await box.send_frames() == 3
    # Everything was read and waits for storage.
    await eventually(lambda: gw.pipeline.pending == 90)
    stopping = asyncio.create_task(gw.stop(grace_s=5.0))
    await asyncio.sleep(0.05)
    assert [b.acked for b in boxes] == [0, 0, 0]  # nothing ACKed before it is stored
    store.telemetry.gate.set()
    await asyncio.wait_for(stopping, TIMEOUT)
    assert len(store.telemetry.positions) == 90
    await eventually(lambda: not any(b.connected for b in boxes))
    # Every record the gateway took was ACKed before it closed the connection.
    assert [b.acked for b in boxes] == [30, 30, 30]
    assert gw.metrics.closes["shutdown"] == 3
    assert all(not c.online for c in store.devices.connections.values())
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", gw.port)


async def test_metrics_render(store: FakeStore, gateway: TcpGateway) -> None:
    box = new_box(store, gateway)
    await box.connect()
    await box.send_positions(track(4))
    await box.close()
    registry = CollectorRegistry()
    registry.register(MetricsCollector(gateway.metrics, "gp8_gateway_"))
    text = generate_latest(registry).decode()
    assert 'gp8_gateway_records_total{result="stored"} 4' in text
    assert 'gp8_gateway_logins_total{status="ok"} 1' in text
    assert 'gp8_gateway_ack_latency_seconds_bucket{le="+Inf"} 1' in text
    snapshot = gateway.health()
    assert snapshot["records"] == {"stored": 4, "duplicate": 0}
    assert snapshot["connections"]["total"] == 1  # type: ignore[index]


async def test_heartbeats_keep_a_quiet_box_connected(
    store: FakeStore, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(store, idle_timeout_s=0.3)
    box = new_box(store, gw, heartbeat_interval_s=0.05)
    await box.connect()
    await asyncio.sleep(0.8)  # well past the idle timeout
    assert box.connected and gw.is_online(box.imei)
    assert gw.metrics.frames["heartbeat"] >= 5
    assert gw.metrics.closes["idle_timeout"] == 0
    await box.close()
