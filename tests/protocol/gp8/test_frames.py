"""Message value objects: physical-unit views of the wire integers, equality, immutability."""

from __future__ import annotations

import dataclasses

import pytest

from protocol.gp8 import Heartbeat, Login, Model, RecordFlags
from tests.protocol.gp8.cases import PARIS, RIO


def test_units() -> None:
    assert RIO.latitude == pytest.approx(-22.9519)
    assert RIO.longitude == pytest.approx(-43.2105)
    assert PARIS.speed_kmh == pytest.approx(52.3)
    assert PARIS.heading_deg == pytest.approx(271.5)
    assert RIO.hdop == pytest.approx(3.5)


@pytest.mark.parametrize(
    ("flag", "prop"),
    [
        (RecordFlags.FIX_VALID, "fix_valid"),
        (RecordFlags.IGNITION, "ignition"),
        (RecordFlags.DOORS_LOCKED, "doors_locked"),
        (RecordFlags.ENGINE_START_INHIBITED, "engine_start_inhibited"),
    ],
)
def test_flag_properties_read_their_own_bit(flag: RecordFlags, prop: str) -> None:
    assert getattr(PARIS._replace(flags=flag), prop) is True
    assert getattr(PARIS._replace(flags=0xFFFF & ~flag), prop) is False


def test_driver_badge_zero_means_none() -> None:
    assert PARIS._replace(badge=0).driver_badge is None
    assert PARIS._replace(badge=42).driver_badge == 42


def test_firmware_version_string() -> None:
    login = Login(1, "356938035643809", Model.GP8000, (2, 10, 0), b"\x00" * 32)
    assert login.firmware_version == "2.10.0"


def test_messages_are_immutable_values() -> None:
    assert Heartbeat(1) == Heartbeat(1) != Heartbeat(2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Heartbeat(1).seq = 2  # type: ignore[misc]
