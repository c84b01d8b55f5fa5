"""The one machine-readable line each benchmark prints per figure, and its parsing.

A bench calls `report(...)` for each of its goals; it prints ``BENCH {json}`` on stdout, which
`bench/run_all.py` collects from every bench into the final table (figure, floor or peer
measured in the same run, ratio, goal, met or not). Run alone, the line is just one more line.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

PREFIX = "BENCH "
Op = Literal[">=", "<="]
_OPS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le}


@dataclass(frozen=True, slots=True)
class Figure:
    bench: str
    name: str
    value: float
    unit: str
    op: Op  # the goal: value op goal
    goal: float
    floor: float | None = None  # the floor or peer measured in the same run
    floor_name: str = ""

    @property
    def ratio(self) -> float | None:
        return None if not self.floor else self.value / self.floor

    @property
    def met(self) -> bool:
        return _OPS[self.op](self.value, self.goal)


def report(
    bench: str,
    name: str,
    value: float,
    unit: str,
    *,
    op: Op,
    goal: float,
    floor: float | None = None,
    floor_name: str = "",
) -> Figure:
    """Print one figure's summary line (and return it)."""
    figure = Figure(bench, name, value, unit, op, goal, floor, floor_name)
    print(PREFIX + json.dumps(asdict(figure)), flush=True)
    return figure


def parse(line: str) -> Figure | None:
    """The figure of a ``BENCH {json}`` line; None for any other line."""
    if not line.startswith(PREFIX):
        return None
    try:
        return Figure(**json.loads(line[len(PREFIX) :]))
    except (ValueError, TypeError):
        return None
