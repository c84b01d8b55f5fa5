from __future__ import annotations

import asyncio
import secrets

import pytest

from gateway import GatewayMetrics, LoginChecker, TcpGateway
from protocol.gp8 import Login, LoginResult, LoginStatus, Model, Position, encode, login_proof
from simulator.box import LoginRefused, VirtualBox
from storage.models import DeviceStatus
from tests.gateway.conftest import TIMEOUT, RawClient, imei_for, new_box, track
from tests.gateway.fakes import FakeDevices, FakeStore

IMEI = imei_for(1)


def login(nonce: bytes, secret: str = "s3cret", imei: str = IMEI) -> Login:
    return Login(1, imei, Model.GP8000, (1, 0, 0), login_proof(secret, nonce, imei, Model.GP8000))


@pytest.fixture
def devices() -> FakeDevices:
    devices = FakeDevices()
    devices.add(IMEI, "s3cret")
    return devices


async def test_a_box_with_the_right_secret_is_let_in(devices: FakeDevices) -> None:
    checker = LoginChecker(devices)
    nonce = secrets.token_bytes(16)
    outcome = await checker.check(login(nonce), nonce)
    assert outcome.ok and outcome.device is not None and outcome.device.imei == IMEI
    assert checker.metrics.logins == {"ok": 1}


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown", LoginStatus.UNKNOWN_DEVICE),
        ("bad_secret", LoginStatus.BAD_PROOF),
        ("other_nonce", LoginStatus.BAD_PROOF),
        ("disabled", LoginStatus.DEVICE_DISABLED),
        ("storage_down", LoginStatus.SERVER_BUSY),
    ],
)
async def test_refusals(devices: FakeDevices, case: str, expected: LoginStatus) -> None:
    metrics = GatewayMetrics()
    checker = LoginChecker(devices, metrics=metrics)
    nonce = secrets.token_bytes(16)
    attempt = login(nonce)
    if case == "unknown":
        attempt = login(nonce, imei=imei_for(999))
    elif case == "bad_secret":
        attempt = login(nonce, secret="guess")
    elif case == "other_nonce":
        attempt = login(secrets.token_bytes(16))
    elif case == "disabled":
        devices.add(IMEI, "s3cret", status=DeviceStatus.DISABLED)
    elif case == "storage_down":
        devices.unavailable = True
    outcome = await checker.check(attempt, nonce)
    assert outcome.status is expected and outcome.device is None
    assert metrics.logins == {expected.name.lower(): 1}


async def test_disabled_is_only_told_to_a_box_that_holds_the_secret(devices: FakeDevices) -> None:
    devices.add(IMEI, "s3cret", status=DeviceStatus.DISABLED)
    nonce = secrets.token_bytes(16)
    outcome = await LoginChecker(devices).check(login(nonce, secret="guess"), nonce)
    assert outcome.status is LoginStatus.BAD_PROOF


async def test_an_accepted_proof_is_refused_as_replay(devices: FakeDevices) -> None:
    checker = LoginChecker(devices)
    nonce = secrets.token_bytes(16)
    assert (await checker.check(login(nonce), nonce)).ok
    outcome = await checker.check(login(nonce), secrets.token_bytes(16))
    assert outcome.status is LoginStatus.REPLAY


async def test_the_replay_cache_is_bounded(devices: FakeDevices) -> None:
    checker = LoginChecker(devices, replay_cache_size=3)
    nonces = [secrets.token_bytes(16) for _ in range(4)]
    for nonce in nonces:
        assert (await checker.check(login(nonce), nonce)).ok
    # The oldest proof fell out of the cache; without it the proof is merely wrong.
    oldest = await checker.check(login(nonces[0]), secrets.token_bytes(16))
    newest = await checker.check(login(nonces[3]), secrets.token_bytes(16))
    assert (oldest.status, newest.status) == (LoginStatus.BAD_PROOF, LoginStatus.REPLAY)


# --- over real sockets ---------------------------------------------------------------------


async def refused_over_tcp(
    store: FakeStore, gw: TcpGateway, box: VirtualBox, expected: LoginStatus
) -> None:
    box.enqueue(track(3))
    with pytest.raises(LoginRefused) as refused:
        await box.connect()
    assert refused.value.status is expected
    assert not box.connected
    assert store.telemetry.positions == {}
    assert gw.metrics.logins[expected.name.lower()] == 1


@pytest.mark.parametrize("case", ["unknown", "bad_secret", "disabled"])
async def test_refused_boxes_are_answered_counted_and_disconnected(
    store: FakeStore, gateway: TcpGateway, case: str
) -> None:
    box = new_box(store, gateway)
    expected = {
        "unknown": LoginStatus.UNKNOWN_DEVICE,
        "bad_secret": LoginStatus.BAD_PROOF,
        "disabled": LoginStatus.DEVICE_DISABLED,
    }[case]
    if case == "unknown":
        del store.devices.by_imei[box.imei]
    elif case == "bad_secret":
        box.secret = "wrong"
    elif case == "disabled":
        store.devices.add(box.imei, box.secret, status=DeviceStatus.DISABLED)
    await refused_over_tcp(store, gateway, box, expected)
    assert not gateway.is_online(box.imei)
    assert store.devices.connection_log == []


async def test_refused_connection_is_closed_and_data_sent_with_it_is_not_stored(
    store: FakeStore, gateway: TcpGateway
) -> None:
    store.devices.add(IMEI, "s3cret")
    client = await RawClient.connect(gateway.port)
    # A wrong LOGIN pipelined with a POSITION: the POSITION must never be stored.
    await client.send(client.login_frame(IMEI, "wrong") + encode(Position(2, tuple(track(2)))))
    messages = await client.read_all_until_closed()
    assert len(messages) == 1 and isinstance(messages[0], LoginResult)
    assert messages[0].status is LoginStatus.BAD_PROOF
    assert store.telemetry.positions == {}


async def test_a_captured_login_replayed_on_another_connection_is_refused(
    store: FakeStore, gateway: TcpGateway
) -> None:
    store.devices.add(IMEI, "s3cret")
    victim = await RawClient.connect(gateway.port)
    captured = victim.login_frame(IMEI, "s3cret")
    await victim.send(captured)
    result = await victim.read()
    assert isinstance(result, LoginResult) and result.status is LoginStatus.OK

    attacker = await RawClient.connect(gateway.port)
    await attacker.send(captured)
    messages = await attacker.read_all_until_closed()
    assert [m.status for m in messages if isinstance(m, LoginResult)] == [LoginStatus.REPLAY]
    assert gateway.metrics.logins == {"ok": 1, "replay": 1}
    # The victim's session was not disturbed by the attempt.
    assert gateway.is_online(IMEI)
    victim.close()


async def test_login_timeout_closes_a_connection_that_never_logs_in(
    store: FakeStore, make_gateway: object
) -> None:
    assert callable(make_gateway)
    gw = await make_gateway(store, login_timeout_s=0.2)
    client = await RawClient.connect(gw.port)
    started = asyncio.get_running_loop().time()
    # Trickling garbage does not extend the login deadline.
    for _ in range(5):
        await client.send(b"\x00")
        await asyncio.sleep(0.03)
    assert await client.read(TIMEOUT) is None
    assert asyncio.get_running_loop().time() - started < 2.0
    assert gw.metrics.closes["login_timeout"] == 1
