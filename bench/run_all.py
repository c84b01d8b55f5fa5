"""Run every benchmark in turn and end with one table of their figures (`make bench`).

Each bench is its own script (run one alone for its options); this only runs them one after
another in fresh interpreters, so they don't share a warm process or compete for the 2 cores.
Their output goes through as it comes; the ``BENCH {json}`` lines they print (bench/summary.py)
are collected into the final table: figure, floor or peer, ratio, goal, met or not.

``--quick`` passes ``--quick`` to the benches that take it (a short run that checks they and
the table work, not a measurement); ``--only NAME...`` runs only those benches.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.summary import Figure, parse

HERE = Path(__file__).parent
BENCHES = [
    "bench_decode.py",
    "bench_ingest.py",
    "bench_mongo_round_trips.py",
    "bench_api.py",
    "bench_commands.py",
    "bench_import.py",
    "bench_mqtt.py",
    "bench_sim.py",
    "bench_geofences.py",
    "bench_storm.py",
    "bench_teltonika.py",
    "bench_api_isolation.py",
]
# Benches that take --quick.
QUICK = {"bench_api.py", "bench_commands.py", "bench_import.py", "bench_storm.py"}


def run(name: str, quick: bool) -> tuple[int, list[Figure]]:
    """Run one bench, echoing its output; its exit code and summary figures."""
    command = [sys.executable, str(HERE / name)]
    if quick and name in QUICK:
        command.append("--quick")
    figures: list[Figure] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, bufsize=1) as child:
        assert child.stdout is not None
        for line in child.stdout:
            print(line, end="", flush=True)
            figure = parse(line)
            if figure is not None:
                figures.append(figure)
    return child.returncode, figures


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


def table(figures: list[Figure], silent: list[str]) -> Table:
    out = Table(title="gp8 benchmarks")
    for column in ("bench", "figure", "value", "floor or peer", "ratio", "goal", "met"):
        out.add_column(column, justify="right" if column in ("value", "ratio") else "left")
    for f in figures:
        floor = "" if f.floor is None else f"{_number(f.floor)} {f.unit} ({f.floor_name})"
        ratio = "" if f.ratio is None else f"{f.ratio:.2f}"
        out.add_row(
            f.bench,
            f.name,
            f"{_number(f.value)} {f.unit}",
            floor,
            ratio,
            f"{f.op} {_number(f.goal)} {f.unit}",
            "[green]yes[/]" if f.met else "[red]NO[/]",
        )
    for name in silent:
        out.add_row(name, "(no BENCH summary line)", "", "", "", "", "")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs: check, not measure")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="e.g. bench_commands.py")
    args = parser.parse_args()
    names = [n for n in BENCHES if (HERE / n).exists() and (not args.only or n in args.only)]
    failed: list[str] = []
    silent: list[str] = []
    figures: list[Figure] = []
    for name in names:
        print(f"\n=== {name}", flush=True)
        code, found = run(name, args.quick)
        if code != 0:
            failed.append(name)
        if not found:
            silent.append(name)
        figures.extend(found)
    print()
    # Wide enough for one line per figure, also when the output goes to a file or a pipe.
    Console(width=max(150, shutil.get_terminal_size().columns)).print(table(figures, silent))
    missed = [f"{f.bench}: {f.name}" for f in figures if not f.met]
    if failed:
        print(f"failed: {', '.join(failed)}")
    if missed:
        print(f"below goal: {'; '.join(missed)}")
    return 1 if failed or missed else 0


if __name__ == "__main__":
    sys.exit(main())
