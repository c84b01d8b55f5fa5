"""Source-network allowlists per device listener (gateway/networks.py): a box from elsewhere is
closed before a byte is read, and counted; the other listener is unaffected."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway import TcpGateway
from gateway.networks import SourceNetworks
from protocol.teltonika import DeviceDecoder, Imei, ImeiReply, encode
from storage.models import DeviceModel, DeviceProtocol
from storage.sqlite import SqliteStore
from tests.gateway.conftest import TIMEOUT
from tests.polling import eventually

IMEI = "356307042441013"


def test_an_empty_list_allows_every_source() -> None:
    assert SourceNetworks().allows(("203.0.113.9", 4000))


@pytest.mark.parametrize(
    ("peer", "allowed"),
    [
        (("10.64.1.2", 4000), True),
        (("::ffff:10.64.1.2", 4000, 0, 0), True),  # a dual-stack socket's view of IPv4
        (("10.128.0.1", 4000), False),
        (("2001:db8::1", 4000, 0, 0), True),
        (("2001:db9::1", 4000, 0, 0), False),
        (("not an address", 1), False),
        (None, False),
    ],
)
def test_membership(peer: object, allowed: bool) -> None:
    networks = SourceNetworks(["10.64.0.0/10", "2001:db8::/32"])
    assert networks.allows(peer) is allowed


async def _imei_answer(port: int) -> bool | None:
    """The IMEI reply of the Teltonika listener; None: closed without a word."""
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(encode(Imei(IMEI)))
            data = await reader.read(1)
        except ConnectionResetError:
            data = b""
        finally:
            writer.close()
    if not data:
        return None
    decoder = DeviceDecoder()
    decoder.feed(data)
    reply = decoder.next_frame()
    assert isinstance(reply, ImeiReply)
    return reply.accepted


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "gp8.sqlite3")
    await store.start()
    fleet = await store.fleets.create("apn")
    await store.devices.create(
        fleet.id, imei=IMEI, model=DeviceModel.FMC130, secret="", protocol=DeviceProtocol.TELTONIKA
    )
    try:
        yield store
    finally:
        await store.close()


@pytest.mark.parametrize(("networks", "answer"), [(["10.0.0.0/8"], None), (["127.0.0.0/8"], True)])
async def test_the_teltonika_listener_takes_boxes_from_its_networks_only(
    store: SqliteStore, networks: list[str], answer: bool | None
) -> None:
    gateway = TcpGateway(
        store, port=0, teltonika_port=0, teltonika_allowed_networks=SourceNetworks(networks)
    )
    await gateway.start()
    try:
        assert await _imei_answer(gateway.teltonika_port or 0) is answer
        refused = 0 if answer else 1
        await eventually(lambda: gateway.metrics.source_refusals["teltonika"] == refused)
        # The GP8 listener has no list: it still takes anyone.
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
            assert await reader.read(1)  # its CHALLENGE
            writer.close()
        assert gateway.metrics.source_refusals["gp8"] == 0
        text = "\n".join(
            f"{m.name} {s.labels} {s.value}"
            for m in gateway.collector().collect()
            for s in m.samples
            if "source_network" in m.name
        )
        assert ("teltonika" in text) is (refused == 1)
    finally:
        await gateway.stop(grace_s=1)
