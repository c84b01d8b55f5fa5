"""Broker URLs and the topic layout."""

from __future__ import annotations

import pytest

from gateway.mqtt.config import BrokerConfig, InvalidBrokerUrl
from protocol.gp8.topics import (
    ack_topic,
    down_topic,
    imei_of_box_topic,
    imei_of_up_topic,
    shared_up_filter,
    up_topic,
)

IMEI = "356938035643809"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1", BrokerConfig("127.0.0.1", 1883)),
        ("mqtt://broker:2883/", BrokerConfig("broker", 2883)),
        ("mqtts://broker", BrokerConfig("broker", 8883, tls=True)),
        (
            "mqtt://gp8-gateway:p%40ss%3Aw@broker:1884",
            BrokerConfig("broker", 1884, "gp8-gateway", "p@ss:w"),
        ),
        ("mqtt://user@broker", BrokerConfig("broker", 1883, "user", None)),
    ],
)
def test_urls(url: str, expected: BrokerConfig) -> None:
    assert BrokerConfig.from_url(url) == expected


@pytest.mark.parametrize(
    "url", ["http://broker", "mqtt://", "mqtt://broker:99999", "mqtt://b/x", "mqtt://b?q=1", "b"]
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(InvalidBrokerUrl):
        BrokerConfig.from_url(url)


def test_the_password_stays_out_of_repr() -> None:
    config = BrokerConfig.from_url("mqtt://gw:hunter2@broker")
    assert "hunter2" not in repr(config)
    assert config.address == "mqtt://broker:1883"


def test_topics() -> None:
    assert (up_topic(IMEI), down_topic(IMEI), ack_topic(IMEI)) == (
        f"gp8/{IMEI}/up",
        f"gp8/{IMEI}/down",
        f"gp8/{IMEI}/ack",
    )
    assert shared_up_filter("gp8") == "$share/gp8/gp8/+/up"
    assert imei_of_up_topic(up_topic(IMEI)) == IMEI
    assert imei_of_box_topic(ack_topic(IMEI)) == (IMEI, "ack")
    assert imei_of_box_topic(down_topic(IMEI)) == (IMEI, "down")


@pytest.mark.parametrize(
    "topic",
    [
        f"gp8/{IMEI}/down",
        f"gp8/{IMEI}/up/x",
        f"gp9/{IMEI}/up",
        "gp8/12345/up",
        "gp8/35693803564380x/up",
        f"/gp8/{IMEI}/up",
        "gp8/+/up",
    ],
)
def test_not_an_uplink(topic: str) -> None:
    assert imei_of_up_topic(topic) is None


@pytest.mark.parametrize("group", ["", "a/b", "a+", "#"])
def test_bad_share_groups(group: str) -> None:
    with pytest.raises(ValueError, match="share group"):
        shared_up_filter(group)
