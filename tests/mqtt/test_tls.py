"""The MQTT bridge over TLS, to a private Mosquitto with a TLS listener and gp8's password file:
the broker's certificate is checked against the CA from settings, the gateway logs in with its
credentials; and GET /ready follows the broker link as the broker stops and comes back."""

from __future__ import annotations

import asyncio
import signal
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.mqtt import MqttBridge
from gateway.mqtt.acl import generate_acl
from gateway.mqtt.config import BrokerConfig, InvalidBrokerUrl
from gateway.tls import client_context
from gp8.serve import start_services, stop_services
from gp8.settings import Settings
from gp8.tls import broker_config
from tests.gateway.test_tls import Pki, make_pki
from tests.mqtt.conftest import GATEWAY_USER, SHORT_SESSION_S, TIMEOUT, Env, Mosquitto, unique

pytestmark = pytest.mark.mqtt

PASSWORD = "gw-tls-pw"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def tls_broker(env: Env, tmp_path: Path, pki: Pki) -> AsyncIterator[Mosquitto]:
    """A Mosquitto whose only listener is TLS, with gp8's generated password and ACL files."""
    auth = tmp_path / "auth"
    await generate_acl(env.store, auth, gateway_user=GATEWAY_USER, gateway_password=PASSWORD)
    broker = Mosquitto(tmp_path, auth, persistence=False)
    with broker.conf.open("a") as conf:  # these apply to the listener above them
        conf.write(
            f"cafile {pki.ca_file}\ncertfile {pki.cert}\nkeyfile {pki.key}\n"
            "require_certificate false\n"
        )
    broker.url = f"mqtts://127.0.0.1:{broker.port}"
    broker.start()
    yield broker
    broker.stop(signal.SIGKILL)


def bridge_for(env: Env, broker: BrokerConfig) -> MqttBridge:
    return MqttBridge(
        broker,
        env.pipeline,
        env.store,
        share_group=unique("grp"),
        client_id=unique("gw"),
        gateway_id="gw-tls",
        session_expiry_s=SHORT_SESSION_S,
        backoff_min_s=0.1,
        backoff_max_s=0.5,
        operation_timeout_s=5.0,
    )


async def test_the_bridge_connects_over_tls_with_the_ca_and_credentials(
    env: Env, tls_broker: Mosquitto, pki: Pki
) -> None:
    broker = BrokerConfig.from_url(
        tls_broker.url,
        username=GATEWAY_USER,
        password=PASSWORD,
        tls_context=client_context(pki.ca_file),
    )
    bridge = bridge_for(env, broker)
    await bridge.start()
    try:
        await bridge.wait_connected(TIMEOUT)  # TLS verified, logged in, subscribed
        assert bridge.health()["broker"] == f"mqtts://127.0.0.1:{tls_broker.port}"
    finally:
        await bridge.stop(grace_s=2.0)


@pytest.mark.parametrize("trust", ["system store", "wrong password"])
async def test_the_bridge_stays_out_without_trust_or_credentials(
    env: Env, tls_broker: Mosquitto, pki: Pki, trust: str
) -> None:
    broker = BrokerConfig.from_url(
        tls_broker.url,
        username=GATEWAY_USER,
        password="nope" if trust == "wrong password" else PASSWORD,
        # Without a CA: the system's trust store, which does not hold the test CA.
        tls_context=client_context(pki.ca_file) if trust == "wrong password" else None,
    )
    bridge = bridge_for(env, broker)
    await bridge.start()
    try:
        async with asyncio.timeout(TIMEOUT):
            while bridge.metrics.connect_failures < 2:  # noqa: ASYNC110 - a counter, bounded
                await asyncio.sleep(0.01)
        assert not bridge.connected
    finally:
        await bridge.stop(grace_s=2.0)


async def test_ready_flips_when_the_broker_stops_and_comes_back(
    env: Env, tls_broker: Mosquitto, pki: Pki, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path / "gp8",
        log_level="warning",
        tcp={"host": "127.0.0.1", "port": 0},
        api={"host": "127.0.0.1", "port": 0},
        webhooks={"enabled": False},
        mqtt={
            "url": tls_broker.url,
            "ca_file": pki.ca_file,
            "username": GATEWAY_USER,
            "password": PASSWORD,
            "client_id": unique("gw"),
            "share_group": unique("grp"),
            "session_expiry_s": SHORT_SESSION_S,
        },
    )
    run = await start_services(settings)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{run.api_port}", timeout=TIMEOUT
        ) as client:

            async def ready_until(status: int) -> httpx.Response:
                async with asyncio.timeout(TIMEOUT * 3):  # reconnecting backs off up to ~2 s
                    while (response := await client.get("/ready")).status_code != status:  # noqa: ASYNC110 - polling over HTTP, bounded
                        await asyncio.sleep(0.05)
                return response

            up = await ready_until(200)
            assert up.json()["components"]["mqtt"] == {"status": "ok"}

            tls_broker.stop()
            down = await ready_until(503)
            assert down.json()["detail"] == "not ready: mqtt"
            assert down.json()["components"]["mqtt"]["status"] == "failing"
            assert down.json()["components"]["storage"] == {"status": "ok"}
            # Unready is not dead: liveness still answers.
            assert (await client.get("/health")).status_code == 200

            tls_broker.start()
            await ready_until(200)
    finally:
        await stop_services(run)


def test_settings_credentials_win_over_the_url_and_a_ca_needs_mqtts(pki: Pki) -> None:
    config = BrokerConfig.from_url(
        "mqtts://old:secret@broker.example", username="gw", password="pw"
    )
    assert (config.host, config.port, config.username, config.password) == (
        "broker.example",
        8883,
        "gw",
        "pw",
    )
    assert config.tls_context is not None  # the system's trust store, built once
    assert config.tls_context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert "pw" not in repr(config)
    with pytest.raises(InvalidBrokerUrl, match="needs an mqtts:// URL"):
        BrokerConfig.from_url("mqtt://broker.example", tls_context=client_context(pki.ca_file))
    with pytest.raises(InvalidBrokerUrl, match="needs an mqtts:// URL"):
        broker_config(Settings(mqtt={"url": "mqtt://broker.example", "ca_file": pki.ca_file}))
