"""The SQLite writer in a process of its own (``GP8_SQLITE_WRITER=process``, `gp8 serve`'s default).

Why: one interpreter runs one thread of Python at a time. On the writer thread, the writes'
Python work (binding each row's values, the stream log, the last positions: ~7 µs a stored
position, ~0.7 ms a command) takes turns with the event loop's (decoding, HTTP), so a gp8
process used about one core of two (bench/bench_ingest.py, bench/bench_commands.py). Here the
writer thread of `storage.sqlite.db.Database` still forms each group commit but only hands it
over: the process runs it with `storage.sqlite.group.commit_group`, the code the thread runs
otherwise, on the one writer connection, and sends back each write's result or error.

What crosses: each write is its function (a module-level function of storage/sqlite, pickled by
name) and its arguments, pickled; positions as plain tuples (`rows.PositionList`), which pickle
several times faster than the NamedTuples. Results and errors come back pickled; a sqlite3
error is translated into its storage error here, where its result code is known, and an error
that would not unpickle becomes a `StorageError` naming it.

Lifetime: started by `Database.open` before the schema is checked on the parent's connection
(it imports its code meanwhile, most of its ~0.2 s start) and told to open the file once that
connection is closed; ended by `Database.close` (its queued writes done first). It ignores
SIGINT and SIGTERM: the parent decides when writing ends, so a Ctrl-C or a service stop
reaching the whole process group lets the parent finish its writes; and it ends by itself
when the parent's end of the socket closes (the parent was killed). A write sent when the
process has died, or one it does not answer in time (hung: it is killed), is answered
`StorageUnavailable` (it may or may not have committed, as when a connection to a database
server breaks: a box resends, an idempotency key replays), and the next group starts a new
process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Generic, TypeVar

import storage
from storage.errors import StorageError, StorageUnavailable
from storage.sqlite.errors import storage_error
from storage.sqlite.group import Call, Outcome, commit_group

# How long a new writer process may take to import gp8's storage code and open the file.
START_TIMEOUT_S = 30.0
# How long close() waits for the process to finish its last group and exit, then kills it.
STOP_TIMEOUT_S = 30.0
# How long a group may take beyond the busy timeout (its wait for the write lock) before the
# process is taken as hung and replaced: the largest writes (an import, a retention chunk) take
# seconds. Without a bound, a stuck process (a hung disk, a stopped process) would hold every
# write after it forever; with one, its groups fail unavailable and the next starts another.
HUNG_AFTER_S = 60.0
_PICKLE = pickle.HIGHEST_PROTOCOL
A = TypeVar("A")
B = TypeVar("B")
log = logging.getLogger("storage.sqlite")
# The child's command: its entry point by import (not ``-m``: the package already imports
# this module, which runpy would then warn about).
_ENTRY = "from storage.sqlite.writer_process import main; main()"


@dataclass
class _Split(Generic[A, B]):
    """A group's items each converted (pickled, unpickled), the ones that fail answered alone:
    both ends of the socket do this, and put the group's answers back in the items' order."""

    converted: list[B]  # the items that converted, in order
    indexes: list[int]  # their places in the group
    outcomes: list[Outcome | None]  # by place: the failures' already

    @classmethod
    def of(cls, items: Sequence[A], convert: Callable[[A], B], failure: str) -> _Split[A, B]:
        split: _Split[A, B] = cls([], [], [None] * len(items))
        for index, item in enumerate(items):
            try:
                split.converted.append(convert(item))
            except Exception as exc:  # a bug (a closure for a function): that write alone
                split.outcomes[index] = (None, StorageError(f"{failure}: {exc}"))
                continue
            split.indexes.append(index)
        return split

    def merged(self, answers: Sequence[Outcome]) -> list[Outcome]:
        """Every item's outcome, in order: the converted ones' from ``answers``."""
        if len(answers) != len(self.indexes):  # each caller answered, and by its own
            raise StorageError(f"{len(answers)} answers for {len(self.indexes)} writes")
        for index, answer in zip(self.indexes, answers, strict=True):
            self.outcomes[index] = answer
        return [outcome for outcome in self.outcomes if outcome is not None]


@dataclass
class Sent:
    """A group handed to the process: where it went, and what is known of its outcomes."""

    conn: Connection | None  # None: nothing of it went (no call pickled)
    calls: _Split[Call, bytes]


class WriterProcess:
    """The parent's handle on the writer process; used from the writer thread only."""

    def __init__(
        self, path: Path, *, busy_timeout_ms: int, answer_timeout_s: float | None = None
    ) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        # How long a group's answer may take: the lock wait, then HUNG_AFTER_S of work.
        self._answer_timeout_s = (
            busy_timeout_ms / 1000 + HUNG_AFTER_S if answer_timeout_s is None else answer_timeout_s
        )
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        # Times a process ended without being asked (killed, crashed, or hung and killed here):
        # each failed the groups it held. Read by /health and /metrics from other threads (an
        # int: no lock needed).
        self.unexpected_exits = 0

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def spawn(self) -> None:
        """Start the process without waiting: it imports its code, then waits for `start`
        (which a caller may call at once) to open the file."""
        if self._process is not None:
            return
        ours, theirs = socket.socketpair()
        # A hung process is found by the socket's kernel timeouts (it stays blocking, as
        # Connection needs): its answer waited for, and the next group's send too, which is
        # sent while the one before it runs and blocks once the buffer is full (a large group).
        seconds, fraction = divmod(self._answer_timeout_s, 1.0)
        timeval = struct.pack("@ll", int(seconds), int(fraction * 1_000_000))
        for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
            ours.setsockopt(socket.SOL_SOCKET, option, timeval)
        root = str(Path(storage.__file__).resolve().parent.parent)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH")))),
        }
        try:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _ENTRY,
                    str(theirs.fileno()),
                    str(self._path),
                    str(self._busy_timeout_ms),
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())

    def start(self) -> None:
        """Start the process (unless `spawn` did), have it open the file and wait until it
        has (or raise its error)."""
        self.spawn()
        assert self._conn is not None
        try:
            self._conn.send_bytes(pickle.dumps("open", _PICKLE))
        except OSError as exc:
            raise self._ended() from exc
        if not self._conn.poll(START_TIMEOUT_S):
            self.stop(0.0)
            raise StorageUnavailable("the SQLite writer process did not start in time")
        try:
            self._receive()  # "ready", or the error it met
        except BaseException:
            self.stop(0.0)
            raise

    def commit(self, calls: list[Call]) -> list[Outcome]:
        """``calls`` run as one group commit in the process: each one's (result, error); raises
        what failed the whole group."""
        return self.receive(self.send(calls))

    def send(self, calls: list[Call]) -> Sent:
        """Hand ``calls`` to the process as one group commit, not waiting for it (`receive`
        waits): a group can travel while the one before it runs. A call that does not pickle
        (a bug: a closure for a function) is answered its error alone; the others go."""
        sent = Sent(None, _Split.of(calls, _pickled, "a write that does not pickle"))
        payloads = sent.calls.converted
        if not payloads:
            return sent
        if self._process is not None and self._process.poll() is not None:
            self._ended()  # between two groups: said, and replaced now
        if self._conn is None:
            self.start()
        assert self._conn is not None
        try:
            self._conn.send_bytes(pickle.dumps(payloads, _PICKLE))
        except BlockingIOError as exc:  # the send timeout: not reading, hung
            raise self._ended(self._hung()) from exc
        except OSError as exc:
            raise self._ended() from exc
        sent.conn = self._conn
        return sent

    def receive(self, sent: Sent) -> list[Outcome]:
        """The outcomes of a group `send` handed over, in the order sent; raises what failed
        the whole group, or `StorageUnavailable` if the process it went to has ended."""
        if not sent.calls.converted:
            return sent.calls.merged([])
        if sent.conn is None or sent.conn is not self._conn:
            # Sent to a process that has ended since (another took its place).
            raise StorageUnavailable("the SQLite writer process has ended")
        answers: list[Outcome] = self._receive()
        return sent.calls.merged(answers)

    def _receive(self) -> Any:
        """The process's next answer; raises the error it sent instead, if it did."""
        assert self._conn is not None
        try:
            data = self._conn.recv_bytes()
        except BlockingIOError as exc:  # the receive timeout: hung
            raise self._ended(self._hung()) from exc
        except (EOFError, OSError) as exc:
            raise self._ended() from exc
        kind, payload = pickle.loads(data)
        if kind == "error":
            assert isinstance(payload, BaseException)
            raise payload
        return payload

    def _hung(self) -> str:
        return f"did not answer in {self._answer_timeout_s:g} s: killed"

    def _ended(self, why: str | None = None) -> StorageUnavailable:
        """The process is gone (or its socket is, or it is hung: ``why``): cleaned up, logged,
        and the error for the groups it held; the next group starts another."""
        process = self._process
        self.unexpected_exits += 1
        self.stop(0.0)  # reaps it (killed first if it was still there)
        status = None if process is None else process.returncode
        if why is None:
            why = f"exit status {status}"
        log.warning("the SQLite writer process has ended (%s)", why)
        return StorageUnavailable(f"the SQLite writer process has ended ({why})")

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Ask the process to finish and exit; killed after ``timeout_s``. Idempotent."""
        conn, process = self._conn, self._process
        self._conn = self._process = None
        if conn is not None:
            if timeout_s > 0:  # else it is killed at once: no asking (a hung one never reads)
                with contextlib.suppress(OSError):  # already gone
                    conn.send_bytes(pickle.dumps(None, _PICKLE))
            conn.close()
        if process is not None:
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- the child --------------------------------------------------------------------------------


def main() -> None:
    """The writer process: ``fd path busy_timeout_ms`` from the command line."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    fd, path, busy_timeout_ms = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    channel = Connection(fd)
    try:
        from storage.sqlite import schema

        # The parent says when the schema is ready (`WriterProcess.start`); it may also end
        # before (its own start failed), and then there is nothing to do.
        if pickle.loads(channel.recv_bytes()) != "open":
            return
    except (EOFError, OSError):
        return
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
        schema.configure(db, writer=True, busy_timeout_ms=busy_timeout_ms)
    except BaseException as exc:  # the parent raises it from start()
        channel.send_bytes(_dumps(("error", _portable(exc))))
        return
    channel.send_bytes(_dumps(("ready", None)))
    try:
        serve(channel, db)
    finally:
        db.close()
    # Every answer is sent and the file closed: nothing is left to flush, so the interpreter's
    # teardown (~30 ms of freeing modules) is skipped and `stop()` returns that much sooner.
    os._exit(0)


def serve(channel: Connection, db: sqlite3.Connection) -> None:
    """Run each group received until None arrives or the parent's end closes."""
    while True:
        try:
            payloads: list[bytes] | None = pickle.loads(channel.recv_bytes())
        except (EOFError, OSError):
            return  # the parent is gone: nothing more can come, nothing is waiting
        if payloads is None:
            return
        answer: tuple[str, object]
        try:
            answer = ("ok", run_group(db, payloads))
        except BaseException as exc:
            answer = ("error", _portable(exc))
        try:
            channel.send_bytes(_dumps(answer))
        except OSError:
            return


def run_group(db: sqlite3.Connection, payloads: list[bytes]) -> list[Outcome]:
    """Each pickled call's outcome, the calls that unpickle run as one group commit."""
    calls: _Split[bytes, Call] = _Split.of(payloads, pickle.loads, "a write that does not unpickle")
    done = commit_group(db, calls.converted) if calls.converted else []
    return calls.merged([(result, _portable(error)) for result, error in done])


def _pickled(call: Call) -> bytes:
    return pickle.dumps(call, _PICKLE)


def _dumps(answer: tuple[str, object]) -> bytes:
    try:
        return pickle.dumps(answer, _PICKLE)
    except Exception as exc:  # a write's result that does not pickle: a bug, named
        return pickle.dumps(("error", StorageError(f"a result could not be returned: {exc}")))


def _portable(error: BaseException | None) -> BaseException | None:
    """``error`` as the parent should raise it: a sqlite3 error as its storage error; anything
    that would not survive pickling as a `StorageError` saying what it was."""
    if error is None:
        return None
    if isinstance(error, sqlite3.Error):
        error = storage_error(error)
    try:
        pickle.loads(pickle.dumps(error, _PICKLE))
    except Exception:
        return StorageError(f"{type(error).__name__}: {error}")
    return error
