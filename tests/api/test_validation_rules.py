"""VIN and IMEI rules as pure functions, with real-world identifiers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.times import MAX_MS, MIN_MS, age_s, iso_ms, parse_time
from api.validation import imei_error, luhn_check_digit, text_error, vin_check_digit, vin_error

# Real VINs: North American ones carry a valid ISO 3779 check digit; the European VW one has a
# 'Z' filler in position 9 and the Japanese-market one is not checked.
NORTH_AMERICAN_VINS = ["1M8GDM9AXKP042788", "1HGCM82633A004352", "11111111111111111"]


@pytest.mark.parametrize("vin", NORTH_AMERICAN_VINS)
def test_vin_error_north_american_valid(vin: str) -> None:
    assert vin_error(vin) is None


def test_vin_check_digit_known_value() -> None:
    assert vin_check_digit("1M8GDM9AXKP042788") == "X"
    assert vin_check_digit("1HGCM82633A004352") == "3"


def test_vin_error_north_american_wrong_check_digit() -> None:
    assert vin_error("1M8GDM9A1KP042788") == (
        "check digit (position 9) is '1' but this North American VIN needs 'X'"
    )


@pytest.mark.parametrize("vin", ["WVWZZZ1JZXW000001", "JH4KA7561PC008269", "VF1RFB00X67123456"])
def test_vin_error_outside_north_america_check_digit_not_required(vin: str) -> None:
    assert vin_error(vin) is None


@pytest.mark.parametrize(
    ("vin", "message"),
    [
        ("1M8GDM9AXKP04278", "a VIN has 17 characters, this one has 16"),
        ("1M8GDM9AXKP0427888", "a VIN has 17 characters, this one has 18"),
        ("1M8GDM9AXKO042788", "a VIN never contains I, O or Q (position 11 is 'O')"),
        ("IM8GDM9AXKP042788", "a VIN never contains I, O or Q (position 1 is 'I')"),
        ("1M8GDM9AXKP04278Q", "a VIN never contains I, O or Q (position 17 is 'Q')"),
        ("1M8GDM9AXKP04278-", "a VIN has only digits and letters (position 17 is '-')"),
    ],
)
def test_vin_error_invalid(vin: str, message: str) -> None:
    assert vin_error(vin) == message


@given(st.text(alphabet="0123456789ABCDEFGHJKLMNPRSTUVWXYZ", min_size=16, max_size=16))
def test_vin_check_digit_inserted_makes_north_american_vin_valid(body: str) -> None:
    candidate = "1" + body[1:8] + "0" + body[8:]
    vin = candidate[:8] + vin_check_digit(candidate) + candidate[9:]
    assert vin_error(vin) is None
    wrong = "0" if vin[8] != "0" else "1"
    assert vin_error(vin[:8] + wrong + vin[9:]) is not None


@pytest.mark.parametrize("imei", ["490154203237518", "356938035643809", "352099001761481"])
def test_imei_error_valid(imei: str) -> None:
    assert imei_error(imei) is None


@pytest.mark.parametrize(
    ("imei", "message"),
    [
        ("490154203237519", "IMEI check digit (Luhn) is 9 but should be 8"),
        ("49015420323751", "an IMEI is 15 digits"),
        ("4901542032375180", "an IMEI is 15 digits"),
        ("49015420323751a", "an IMEI is 15 digits"),
        ("\uff14" + "490154203237518"[1:], "an IMEI is 15 digits"),  # a full-width digit
    ],
)
def test_imei_error_invalid(imei: str, message: str) -> None:
    assert imei_error(imei) == message


@given(st.text(alphabet="0123456789", min_size=14, max_size=14), st.integers(0, 9))
def test_luhn_single_digit_change_detected(body: str, delta: int) -> None:
    imei = body + str(luhn_check_digit(body))
    assert imei_error(imei) is None
    if delta:
        i = len(body) // 2
        changed = body[:i] + str((int(body[i]) + delta) % 10) + body[i + 1 :]
        assert imei_error(changed + imei[-1]) is not None


def test_text_error_control_character() -> None:
    assert text_error("van\x07") == "must contain printable characters only (found U+0007)"
    assert text_error("Camión 12") is None


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1_714_564_800_250, "2024-05-01T12:00:00.250Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (-58_979_880_000_000, "0101-01-01T12:00:00.000Z"),  # zero-padded year
    ],
)
def test_iso_ms_format(ms: int, text: str) -> None:
    assert iso_ms(ms) == text
    assert parse_time(text) == ms


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1714564800250", 1_714_564_800_250),
        ("2024-05-01T14:00:00+02:00", 1_714_564_800_000),
        ("2024-05-01T12:00:00", 1_714_564_800_000),  # no zone: UTC
        ("2024-05-01", 1_714_521_600_000),
    ],
)
def test_parse_time_forms(text: str, ms: int) -> None:
    assert parse_time(text) == ms


@pytest.mark.parametrize("text", ["", "soon", "2024-02-30T00:00:00Z", "99999999999999999999"])
def test_parse_time_invalid(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)


@given(st.integers(MIN_MS, MAX_MS))
def test_iso_ms_round_trips(ms: int) -> None:
    assert parse_time(iso_ms(ms)) == ms


@given(st.integers(MIN_MS, MAX_MS), st.integers(MIN_MS, MAX_MS))
def test_age_s_is_the_difference_to_the_millisecond(time_ms: int, now_ms: int) -> None:
    age = age_s(time_ms, now_ms)
    # What the API serves: the decimal with three places, exactly as round() would give it.
    assert age == round((now_ms - time_ms) / 1000, 3)
    assert round(age * 1000) == now_ms - time_ms
