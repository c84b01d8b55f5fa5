"""TLS on the box listeners (gateway/tls.py): a real box handshake through the simulator's TLS
box, mutual TLS, the protocol floor, a handshake that never completes, the Teltonika port.
Certificates are made in the test (trustme)."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
import uvloop

from gateway import TcpGateway
from gateway.networks import SourceNetworks
from gateway.tls import MINIMUM_VERSION, TlsConfigError, server_context
from protocol.gp8 import Model
from protocol.teltonika import (
    AvlPacket,
    AvlRecord,
    Codec,
    DeviceDecoder,
    Imei,
    ImeiReply,
    RecordsAck,
)
from protocol.teltonika import encode as teltonika_encode
from simulator.box import BoxDisconnected
from simulator.tls import TlsBox, client_context
from storage.models import DeviceModel, DeviceProtocol
from tests.gateway.conftest import TIMEOUT, GatewayFactory, imei_for, track
from tests.gateway.fakes import FakeStore
from tests.polling import eventually

SECRET = "tls-box-secret"


@dataclass(frozen=True)
class Pki:
    """A CA, the gateway's certificate for 127.0.0.1, and a box's client certificate."""

    ca: trustme.CA
    ca_file: Path
    cert: Path
    key: Path
    box_cert: Path  # certificate and key in one PEM
    stranger_cert: Path  # a box certificate from another CA


def make_pki(root: Path) -> Pki:
    """Certificates in PEM files under ``root`` (the TLS tests of tests/mqtt and tests/gp8
    use it too)."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
    server.private_key_pem.write_to_path(str(root / "key.pem"))
    ca.issue_cert("box@gp8.test").private_key_and_cert_chain_pem.write_to_path(
        str(root / "box.pem")
    )
    trustme.CA().issue_cert("box@elsewhere.test").private_key_and_cert_chain_pem.write_to_path(
        str(root / "stranger.pem")
    )
    return Pki(
        ca,
        root / "ca.pem",
        root / "cert.pem",
        root / "key.pem",
        root / "box.pem",
        root / "stranger.pem",
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def box(port: int, pki: Pki, n: int = 1, *, cert: Path | None = None) -> TlsBox:
    return TlsBox(
        imei_for(n),
        SECRET,
        Model.GP8000,
        port=port,
        tls=client_context(pki.ca_file, cert=cert),
        io_timeout_s=TIMEOUT,
        connect_timeout_s=TIMEOUT,
    )


async def test_a_box_logs_in_and_is_acked_over_tls(
    store: FakeStore, make_gateway: GatewayFactory, pki: Pki
) -> None:
    store.devices.add(imei_for(1), SECRET)
    gw = await make_gateway(store, tls=server_context(pki.cert, pki.key))
    virtual = box(gw.port, pki)
    await virtual.connect()
    await virtual.send_positions(track(5), timeout=TIMEOUT)
    await virtual.close()

    assert virtual.acked == 5
    assert len(store.telemetry.positions) == 5
    assert gw.tls_metrics["gp8"].handshakes == {"ok": 1}
    assert gw.health()["tls"] == {"gp8": {"handshakes": {"ok": 1}}}


def test_the_same_on_uvloop_the_loop_gp8_serve_runs(pki: Pki) -> None:
    # uvloop reads a new socket at once: a TLS upgrade of an accepted stream would lose the
    # ClientHello there (gateway/tls.py, TlsListener).
    async def scenario() -> None:
        store = FakeStore()
        store.devices.add(imei_for(1), SECRET)
        gw = TcpGateway(
            store, host="127.0.0.1", max_delay_ms=5, tls=server_context(pki.cert, pki.key)
        )
        await gw.start()
        try:
            virtual = box(gw.port, pki)
            await virtual.connect()
            await virtual.send_positions(track(3), timeout=TIMEOUT)
            await virtual.close()
            assert virtual.acked == 3
        finally:
            await gw.stop(grace_s=2.0)

    uvloop.run(scenario())


async def test_a_box_that_does_not_trust_the_certificate_gets_nothing(
    store: FakeStore, make_gateway: GatewayFactory, pki: Pki
) -> None:
    gw = await make_gateway(store, tls=server_context(pki.cert, pki.key))
    stranger = TlsBox(
        imei_for(1), SECRET, Model.GP8000, port=gw.port, tls=client_context(None)
    )  # the system's trust store, which does not hold the test CA
    with pytest.raises(ssl.SSLCertVerificationError):
        await stranger.connect()
    await eventually(lambda: gw.tls_metrics["gp8"].handshakes["failed"] == 1)


async def test_mutual_tls_refuses_a_box_without_a_certificate_of_the_ca(
    store: FakeStore, make_gateway: GatewayFactory, pki: Pki
) -> None:
    store.devices.add(imei_for(1), SECRET)
    gw = await make_gateway(store, tls=server_context(pki.cert, pki.key, client_ca=pki.ca_file))

    for cert in (None, pki.stranger_cert):
        # TLS 1.3: the client finishes its side before the server checks its certificate, so
        # the refusal shows as the link closing (an alert or EOF) at the first read.
        with pytest.raises((ssl.SSLError, BoxDisconnected, ConnectionError)):
            await box(gw.port, pki, cert=cert).connect()
    await eventually(lambda: gw.tls_metrics["gp8"].handshakes["failed"] == 2)
    assert not store.telemetry.positions

    trusted = box(gw.port, pki, cert=pki.box_cert)
    await trusted.connect()
    await trusted.send_positions(track(2), timeout=TIMEOUT)
    await trusted.close()
    assert trusted.acked == 2
    assert gw.tls_metrics["gp8"].handshakes["ok"] == 1


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_tls_below_1_2_is_refused(
    store: FakeStore, make_gateway: GatewayFactory, pki: Pki
) -> None:
    gw = await make_gateway(store, tls=server_context(pki.cert, pki.key))
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(str(pki.ca_file))
    # Let this client offer TLS 1.0/1.1 at all (OpenSSL's security level forbids it otherwise).
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    # A protocol_version alert, or the reset of the socket the gateway aborted after it.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        async with asyncio.timeout(TIMEOUT):
            await asyncio.open_connection("127.0.0.1", gw.port, ssl=old)
    # The server refused it (the client's OpenSSL did offer it): counted there.
    await eventually(lambda: gw.tls_metrics["gp8"].handshakes["failed"] == 1)
    assert server_context(pki.cert, pki.key).minimum_version == MINIMUM_VERSION


async def test_a_handshake_never_finished_is_closed_and_holds_no_slot(
    store: FakeStore, make_gateway: GatewayFactory, pki: Pki
) -> None:
    gw = await make_gateway(
        store,
        tls=server_context(pki.cert, pki.key),
        tls_handshake_timeout_s=0.3,
        max_connections=1,
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)  # says nothing
    try:
        await eventually(lambda: gw._handshaking() == 1)
        # While it stalls it holds the one slot: a second connection is refused, not queued.
        _, second = await asyncio.open_connection("127.0.0.1", gw.port)
        await eventually(lambda: gw.metrics.connections_refused == 1)
        second.close()
        async with asyncio.timeout(TIMEOUT):
            assert await reader.read() == b""  # closed by the gateway
        assert gw.tls_metrics["gp8"].handshakes == {"timeout": 1}
        assert gw._handshaking() == 0
    finally:
        writer.close()
    # The slot is free again: a real box gets in.
    store.devices.add(imei_for(1), SECRET)
    virtual = box(gw.port, pki)
    await virtual.connect()
    await virtual.close()
    assert gw.tls_metrics["gp8"].handshakes["ok"] == 1


async def test_a_teltonika_box_over_tls(
    store: FakeStore, make_gateway: GatewayFactory, pki: Pki
) -> None:
    imei = "356307042441013"
    device = store.devices.add(imei, "", model=DeviceModel.FMC130)
    store.devices.by_imei[imei] = dataclasses.replace(device, protocol=DeviceProtocol.TELTONIKA)
    context = server_context(pki.cert, pki.key)
    gw = await make_gateway(store, teltonika_port=0, teltonika_tls=context, tls=context)
    assert gw.teltonika_port
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", gw.teltonika_port, ssl=client_context(pki.ca_file)
        )
    decoder = DeviceDecoder()

    async def answer() -> object:
        async with asyncio.timeout(TIMEOUT):
            while (frame := decoder.next_frame()) is None:
                decoder.feed(await reader.read(65536))
        return frame

    writer.write(teltonika_encode(Imei(imei)))
    reply = await answer()
    assert isinstance(reply, ImeiReply) and reply.accepted
    fixes = track(3)
    packet = AvlPacket(
        Codec.CODEC_8,
        tuple(AvlRecord(r.time_ms, 0, r.lon_e7, r.lat_e7, 40, 90, 8, 50, 0) for r in fixes),
    )
    decoder.expect_ack()
    writer.write(teltonika_encode(packet))
    ack = await answer()
    writer.close()
    assert isinstance(ack, RecordsAck) and ack.count == 3
    assert gw.tls_metrics["teltonika"].handshakes == {"ok": 1}
    await eventually(lambda: len(store.telemetry.positions) == 3)


def test_unusable_files_are_one_line_errors(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(TlsConfigError, match="no such file"):
        server_context(tmp_path / "missing.pem", pki.key)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(TlsConfigError, match="not a usable PEM"):
        server_context(garbage, garbage)


async def test_a_source_outside_the_allowed_networks_gets_no_handshake(
    store: FakeStore, make_gateway: GatewayFactory, pki: Pki
) -> None:
    gw = await make_gateway(
        store,
        tls=server_context(pki.cert, pki.key),
        allowed_networks=SourceNetworks(["10.0.0.0/8"]),
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        async with asyncio.timeout(TIMEOUT):
            assert await reader.read() == b""  # dropped at once, before any TLS
    finally:
        writer.close()
    assert gw.metrics.source_refusals["gp8"] == 1
    assert gw.tls_metrics["gp8"].handshakes == {}
