"""Teltonika's GPRS command language, as far as gp8 speaks it (docs/teltonika.md, "Commands").

Codec 12 carries text: the same commands as Teltonika's SMS commands. gp8 sends only the few
below, built from typed values here; no text from outside reaches a box. `Wiring` says how a box
is wired (which digital output drives the immobiliser relay and which the central locking), as
the device profile of gateway/adapters/teltonika.py chooses it per model.

Answers are free text too. What gp8 reads in them: the states of the outputs ("DOUT1:1
DOUT2:IGNORED ..." after ``setdigout``) and whether the box refused (the phrases of
`REFUSALS`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# ``setdigout`` speed argument: "the maximum speed threshold allowing command execution. If speed
# is higher than this threshold, command will be queued and executed when speed drops below"
# (Teltonika's wiki). 5 km/h is a vehicle standing still, with GNSS speed noise.
ENGINE_START_SPEED_GATE_KMH = 5
# Data acquisition "Min Period" parameters, on moving: home, roaming and unknown network.
REPORT_PERIOD_PARAMETERS = (10050, 10150, 10250)
# The DOUTn of the IO element ids 179, 180 and 380 (Digital Output 1..3).
OUTPUT_IO_IDS = {1: 179, 2: 180, 3: 380}

# Words of an answer that say the box did not do it.
REFUSALS = ("disabled", "error", "invalid", "wrong", "not supported", "unknown", "failed")
_OUTPUT_STATE = re.compile(r"DOUT(\d):(\d)")


@dataclass(frozen=True, slots=True)
class Wiring:
    """What a box's digital outputs drive (1-based DOUT numbers; None: not wired)."""

    outputs: int = 2  # how many digital outputs the model has (FMB920: 1)
    immobiliser: int | None = 1  # high: engine start inhibited
    lock: int | None = 2  # high: doors locked (level, not pulses)
    speed_gate_kmh: int = ENGINE_START_SPEED_GATE_KMH


def setdigout(wiring: Wiring, output: int, state: int, *, speed_kmh: int | None = None) -> str:
    """``setdigout`` setting one output and leaving the others ("?"), optionally speed-gated.

    Format: ``setdigout <states> <timeout per output> <speed per output>``.
    """
    if not 1 <= output <= wiring.outputs:
        raise ValueError(f"DOUT{output} of a box with {wiring.outputs} outputs")
    states = "".join(str(state) if n == output else "?" for n in range(1, wiring.outputs + 1))
    if speed_kmh is None:
        return f"setdigout {states}"
    timeouts = " ".join("?" for _ in range(wiring.outputs))  # held until changed
    speeds = " ".join(str(speed_kmh) if n == output else "?" for n in range(1, wiring.outputs + 1))
    return f"setdigout {states} {timeouts} {speeds}"


def immobilise(wiring: Wiring, inhibit: bool) -> str | None:
    """Engage (always speed-gated) or release the engine-start inhibit; None: not wired."""
    if wiring.immobiliser is None:
        return None
    # Engaging is gated even when the relay only blocks the starter: a profile may wire it to
    # the fuel pump, and a moving vehicle must never lose it. Releasing is never gated.
    speed = wiring.speed_gate_kmh if inhibit else None
    return setdigout(wiring, wiring.immobiliser, int(inhibit), speed_kmh=speed)


def lock(wiring: Wiring, locked: bool) -> str | None:
    if wiring.lock is None:
        return None
    return setdigout(wiring, wiring.lock, int(locked))


def report_period(seconds: int) -> str:
    return "setparam " + ";".join(f"{p}:{seconds}" for p in REPORT_PERIOD_PARAMETERS)


LOCATE = "getrecord"  # a record now, sent at once
REBOOT = "cpureset"


def output_states(text: str) -> dict[int, int]:
    """DOUT number → state reported in an answer ("DOUT1:1 DOUT2:IGNORED" → {1: 1})."""
    return {int(n): int(v) for n, v in _OUTPUT_STATE.findall(text)}


def refused(text: str) -> bool:
    """Whether the answer says the box did not do it."""
    lowered = text.lower()
    return not text.strip() or any(word in lowered for word in REFUSALS)


@dataclass(frozen=True, slots=True)
class Answer:
    """A Codec 12 response matched to the command it answers (``command_seq``: gp8's number of
    that command; None when the box answered while nothing was outstanding)."""

    command_seq: int | None
    text: str
    ok: bool
    engine_start_inhibited: bool | None = None  # what the answer says of the outputs
    doors_locked: bool | None = None


# --- the box's side -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Order:
    """What a command text asks of a box, as a box reads it (the simulator's, and tests').

    ``name`` is the first word, lower-cased; ``outputs`` the DOUT number → state of a
    ``setdigout`` (outputs left as "?" absent), ``speed_gates`` its DOUT number → km/h above
    which the box waits to switch it, ``parameters`` the id → value of a ``setparam``.
    """

    name: str
    outputs: dict[int, int]
    speed_gates: dict[int, int]
    parameters: dict[int, str]


def parse(text: str) -> Order:
    """Read a command text; never raises (a box answers what it does not understand)."""
    words = text.split()
    name = words[0].lower() if words else ""
    outputs: dict[int, int] = {}
    gates: dict[int, int] = {}
    parameters: dict[int, str] = {}
    if name == "setdigout" and len(words) > 1:
        # setdigout <a state per output> <a timeout per output> <a speed per output>
        states = words[1]
        for n, state in enumerate(states, start=1):
            if state in "01":
                outputs[n] = int(state)
        speeds = words[2 + len(states) : 2 + 2 * len(states)]
        for n, speed in enumerate(speeds, start=1):
            if speed.isdigit():
                gates[n] = int(speed)
    elif name == "setparam" and len(words) > 1:
        for pair in " ".join(words[1:]).split(";"):
            key, _, value = pair.partition(":")
            if key.strip().isdigit():
                parameters[int(key)] = value.strip()
    return Order(name, outputs, gates, parameters)
