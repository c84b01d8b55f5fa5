"""Run every benchmark in turn and print their figures (`make bench`).

Each bench is its own script (run one alone for its options); this only runs them one after
another in fresh interpreters, so they don't share a warm process or compete for the 2 cores.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
BENCHES = [
    "bench_decode.py",
    "bench_ingest.py",
    "bench_mongo_round_trips.py",
    "bench_api.py",
    "bench_commands.py",
    "bench_mqtt.py",
    "bench_sim.py",
    "bench_geofences.py",
]


def main() -> int:
    failed = []
    for name in BENCHES:
        path = HERE / name
        if not path.exists():
            continue
        print(f"\n=== {name}", flush=True)
        if subprocess.run([sys.executable, str(path)], check=False).returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nbelow target or failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
