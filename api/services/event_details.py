"""What an event's ``detail`` number means, by event code (docs/protocol.md §4.3), so clients
read ``{"warnings": ["oil_pressure"]}`` instead of ``512``; the raw number stays beside it."""

from __future__ import annotations

from collections.abc import Callable

from api.services.formats import warning_names

Decoded = dict[str, int | float | list[str]]

# One row per code whose detail carries a value; the codes that send 0 are absent.
_DECODERS: dict[str, Callable[[int], Decoded]] = {
    "dashboard_warning": lambda d: {"warnings": warning_names(d)},
    "power_cut": lambda d: {"external_power_mv": d},
    "power_restored": lambda d: {"outage_s": d},
    "battery_low": lambda d: {"battery_mv": d},
    "crash": lambda d: {"peak_deceleration_mg": d},
    "harsh_braking": lambda d: {"peak_deceleration_mg": d},
    "harsh_acceleration": lambda d: {"peak_acceleration_mg": d},
    "harsh_cornering": lambda d: {"peak_lateral_acceleration_mg": d},
    "overspeed": lambda d: {"limit_kmh": d / 10},  # sent in 0.1 km/h
}


def decode_detail(code: str, detail: int) -> Decoded | None:
    """The named values of ``detail`` for an event of ``code``, or None when it carries none."""
    decoder = _DECODERS.get(code)
    return decoder(detail) if decoder is not None else None


def decoded_codes() -> frozenset[str]:
    return frozenset(_DECODERS)
