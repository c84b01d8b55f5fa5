"""Identifier checks: VIN (ISO 3779) and IMEI (3GPP TS 23.003). Pure functions.

VIN rule (docs/api.md §Validation): every VIN must be 17 characters of 0-9 and A-Z without I, O
and Q. The check digit in position 9 (ISO 3779 Annex / 49 CFR 565.15) is verified only for
VINs issued in North America — world manufacturer identifier starting with 1-5 (United States,
Canada, Mexico) — where it is mandatory. Elsewhere (Europe, Japan, ...) position 9 is free for
the manufacturer and many real VINs do not satisfy the formula, so checking it would reject
genuine vehicles.
"""

from __future__ import annotations

VIN_LENGTH = 17
VIN_ALPHABET = frozenset("0123456789ABCDEFGHJKLMNPRSTUVWXYZ")
# ISO 3779 transliteration of letters to values and the position weights of the check digit.
_VIN_VALUES = {
    **{str(d): d for d in range(10)},
    **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
    **dict(zip("JKLMN", range(1, 6), strict=True)),
    "P": 7,
    "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10), strict=True)),
}
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
# First character of the WMI for vehicles made for North America, where the check digit is law.
_CHECK_DIGIT_REGIONS = frozenset("12345")

IMEI_LENGTH = 15


def vin_check_digit(vin: str) -> str:
    """The ISO 3779 check digit ('0'-'9' or 'X') of a 17-character VIN of valid characters."""
    total = sum(_VIN_VALUES[c] * w for c, w in zip(vin, _VIN_WEIGHTS, strict=True))
    remainder = total % 11
    return "X" if remainder == 10 else str(remainder)


def vin_error(vin: str) -> str | None:
    """Why ``vin`` (already upper-cased) is not a valid VIN, or None."""
    if len(vin) != VIN_LENGTH:
        return f"a VIN has {VIN_LENGTH} characters, this one has {len(vin)}"
    for position, char in enumerate(vin, start=1):
        if char in "IOQ":
            return f"a VIN never contains I, O or Q (position {position} is {char!r})"
        if char not in VIN_ALPHABET:
            return f"a VIN has only digits and letters (position {position} is {char!r})"
    if vin[0] in _CHECK_DIGIT_REGIONS:
        expected = vin_check_digit(vin)
        if vin[8] != expected:
            return (
                f"check digit (position 9) is {vin[8]!r} but this North American VIN needs "
                f"{expected!r}"
            )
    return None


def luhn_check_digit(payload: str) -> int:
    """The Luhn digit that completes ``payload`` (digits only)."""
    total = 0
    for index, char in enumerate(reversed(payload)):
        digit = int(char)
        if index % 2 == 0:  # doubled: every second digit from the right of the full number
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return (10 - total % 10) % 10


def imei_error(imei: str) -> str | None:
    """Why ``imei`` is not a valid 15-digit IMEI with its Luhn check digit, or None."""
    if len(imei) != IMEI_LENGTH or not imei.isascii() or not imei.isdigit():
        return f"an IMEI is {IMEI_LENGTH} digits"
    expected = luhn_check_digit(imei[:-1])
    if int(imei[-1]) != expected:
        return f"IMEI check digit (Luhn) is {imei[-1]} but should be {expected}"
    return None


def text_error(value: str) -> str | None:
    """Why ``value`` cannot be a label-like text (control or format characters), or None."""
    for char in value:
        if not char.isprintable():
            return f"must contain printable characters only (found U+{ord(char):04X})"
    return None
