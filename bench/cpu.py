"""CPU seconds from /proc (Linux; 0 elsewhere): of a process, of this process's threads by
name, and of this process's SQLite writer process (storage/sqlite/writer_process.py), which
is gp8's CPU too though not counted by ``time.process_time()``."""

from __future__ import annotations

import os
import threading
from pathlib import Path

# What the writer process's command line holds (storage/sqlite/writer_process.py _ENTRY).
_WRITER_MARK = b"storage.sqlite.writer_process"


def stat_cpu_s(stat: Path) -> float:
    """User + system CPU seconds in a /proc ``stat`` file (a process's or one thread's)."""
    try:
        text = stat.read_text()
    except OSError:
        return 0.0  # ended meanwhile, or no /proc
    # utime and stime: fields 14 and 15, counted after the ")" that closes the name.
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    return stat_cpu_s(Path(f"/proc/{pid}/stat"))


def thread_cpu_s(prefix: str) -> float:
    """CPU seconds of this process's threads whose name starts with ``prefix``."""
    return sum(
        stat_cpu_s(Path(f"/proc/self/task/{thread.native_id}/stat"))
        for thread in threading.enumerate()
        if thread.name.startswith(prefix) and thread.native_id is not None
    )


def writer_process_cpu_s() -> float:
    """CPU seconds of this process's SQLite writer processes (its children running
    storage.sqlite.writer_process; 0 when the writes run on a thread)."""
    total = 0.0
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid != me or _WRITER_MARK not in (proc / "cmdline").read_bytes():
                continue
        except (OSError, IndexError, ValueError):
            continue
        total += stat_cpu_s(proc / "stat")
    return total
