"""bench/bench_commands.py's CPU accounting of another process (the boxes' child): it must
count that process's CPU, not this one's, or the "boxes ms" column says nothing."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.bench_commands import process_cpu_s


def test_process_cpu_counts_the_other_process_busy_and_not_idle() -> None:
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    busy = subprocess.Popen([sys.executable, "-c", burn + "input()"], stdin=subprocess.PIPE)
    idle = subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while process_cpu_s(busy.pid) < 0.3:  # polls: the child burns its 0.3 s, then waits
            assert time.monotonic() < deadline, "the busy child's CPU was never counted"
            time.sleep(0.05)
        # The idle child only started an interpreter (well under the busy one's 0.3 s).
        assert process_cpu_s(idle.pid) < process_cpu_s(busy.pid)
    finally:
        for child in (busy, idle):
            child.communicate(b"\n", timeout=30)
