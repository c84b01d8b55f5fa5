"""The box status topic of docs/protocol.md §7.6 (protocol/gp8/topics.py)."""

from __future__ import annotations

import pytest

from protocol.gp8.topics import (
    MAX_STATUS_SIZE,
    BoxStatus,
    imei_of_status_topic,
    status_filter,
    status_topic,
)

IMEI = "356938035643809"


def test_status_round_trips() -> None:
    for status in (BoxStatus(True, 1_733_000_000_000), BoxStatus(False, 0)):
        assert BoxStatus.decode(status.encode()) == status


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"online",
        b"[]",
        b'{"online": "yes", "session": 1}',
        b'{"online": true, "session": true}',
        b'{"online": true, "session": -1}',
        b'{"online": true, "session": 1.5}',
        b'{"online": true}',
        b'{"online": true, "session": 1, "pad": "' + b"x" * MAX_STATUS_SIZE + b'"}',
    ],
)
def test_what_is_not_a_status_is_refused(payload: bytes) -> None:
    assert BoxStatus.decode(payload) is None


def test_status_topics() -> None:
    assert status_topic(IMEI) == f"gp8/{IMEI}/status"
    assert status_filter() == "gp8/+/status"
    assert imei_of_status_topic(status_topic(IMEI)) == IMEI
    for topic in (f"gp8/{IMEI}/up", "gp8/123/status", f"gp8/{IMEI}/status/x"):
        assert imei_of_status_topic(topic) is None
