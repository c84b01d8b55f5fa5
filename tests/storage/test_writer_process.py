"""The SQLite writer in a process of its own (storage/sqlite/writer_process.py).

What every write does there is the contract suite's business (its ``sqlite-process`` engine);
these are the process's own cases: what crosses and how, what a death on either side does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from storage.errors import Conflict, CursorExpired, StorageError, StorageUnavailable
from storage.models import Position
from storage.sqlite import SqliteStore
from storage.sqlite.db import Database
from storage.sqlite.resources import _execute
from storage.sqlite.rows import PositionList
from storage.sqlite.writer_process import WriterProcess, _portable
from tests.storage.factories import position

SQL = "INSERT INTO fleets (id, name, created_ms) VALUES (?, ?, ?)"


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (ended, not yet reaped by its parent) is gone for our purpose.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def db_path(tmp_path: Path) -> Iterator[Path]:
    """A database with the current schema (made as a store makes it), nothing open on it."""
    path = tmp_path / "gp8.sqlite3"

    async def create() -> None:
        store = SqliteStore(path)
        await store.start()
        await store.close()

    asyncio.run(create())
    yield path


@pytest.fixture
def writer(db_path: Path) -> Iterator[WriterProcess]:
    process = WriterProcess(db_path, busy_timeout_ms=200)
    process.start()
    yield process
    process.stop()


@contextlib.contextmanager
def write_lock_held(path: Path) -> Iterator[None]:
    """Another connection holds the file's write lock meanwhile: a writer process waits in its
    busy timeout (a long one: hung, as far as its parent can tell, as on a stuck disk)."""
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def started(writer: WriterProcess) -> int:
    """``writer`` started; its process id."""
    writer.start()
    assert writer.pid is not None
    return writer.pid


def replaced_for_the_next_write(writer: WriterProcess, first: int) -> None:
    """The process ``first`` ended once, unasked: the next write (fleet "b") commits on
    another, which is no exit; ``writer`` stopped after."""
    assert writer.unexpected_exits == 1
    try:
        assert writer.commit([(_execute, (SQL, ("flt_b", "b", 2)), {})]) == [(None, None)]
        assert writer.pid not in (None, first)
        assert writer.unexpected_exits == 1
    finally:
        writer.stop()


def fleet_names(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT name FROM fleets ORDER BY name")]


def test_a_group_commits_in_the_process_and_each_write_gets_its_own_answer(
    writer: WriterProcess, db_path: Path
) -> None:
    outcomes = writer.commit(
        [
            (_execute, (SQL, ("flt_a", "a", 1)), {}),
            (_execute, (SQL, ("flt_a", "again", 2)), {}),  # the same id: this one alone fails
            (_execute, (SQL, ("flt_b", "b", 3)), {}),
        ]
    )
    assert [error is None for _, error in outcomes] == [True, False, True]
    conflict = outcomes[1][1]
    # Translated in the process, where sqlite3's result code is known, fields and all.
    assert isinstance(conflict, Conflict)
    assert conflict.fields == ("id",)
    assert fleet_names(db_path) == ["a", "b"]


def test_a_write_that_does_not_pickle_fails_alone(writer: WriterProcess, db_path: Path) -> None:
    outcomes = writer.commit(
        [
            (lambda conn: None, (), {}),  # a closure: cannot be sent
            (_execute, (SQL, ("flt_a", "a", 1)), {}),
        ]
    )
    assert isinstance(outcomes[0][1], StorageError)
    assert "pickle" in str(outcomes[0][1])
    assert outcomes[1] == (None, None)
    assert fleet_names(db_path) == ["a"]


@pytest.mark.parametrize(
    ("how", "message"), [("killed", "exit status -9"), ("hung", r"did not answer in 0\.5 s")]
)
def test_a_writer_process_gone_or_hung_fails_the_write_in_flight_and_the_next_starts_another(
    db_path: Path, how: str, message: str
) -> None:
    # Hung: waiting on a lock far longer than it may take to answer, so it is killed rather
    # than left holding every write after it. Killed meanwhile, or past its answer timeout, the
    # write in flight is answered unavailable at once.
    writer = WriterProcess(
        db_path, busy_timeout_ms=30_000, answer_timeout_s=0.5 if how == "hung" else None
    )
    first = started(writer)
    with write_lock_held(db_path):
        killer = None
        if how == "killed":
            killer = subprocess.Popen(
                [sys.executable, "-c", f"import os, time; time.sleep(0.2); os.kill({first}, 9)"]
            )
        began = time.monotonic()
        with pytest.raises(StorageUnavailable, match=message):
            writer.commit([(_execute, (SQL, ("flt_a", "a", 1)), {})])
        assert time.monotonic() - began < 10
        assert not alive(first)
        if killer is not None:
            killer.wait(10)
    replaced_for_the_next_write(writer, first)
    assert fleet_names(db_path) == ["b"]  # the write in flight never committed


def test_a_group_that_a_hung_writer_process_never_reads_fails_too(db_path: Path) -> None:
    # The next group is sent while one runs: to a hung process, a large one fills the socket's
    # buffer, and its send must give up too rather than block the writer thread for good.
    writer = WriterProcess(db_path, busy_timeout_ms=30_000, answer_timeout_s=0.5)
    first = started(writer)
    with write_lock_held(db_path):
        running = writer.send([(_execute, (SQL, ("flt_a", "a", 1)), {})])
        large = [(_execute, (SQL, (f"flt_{i}", "x" * 100_000, i)), {}) for i in range(100)]
        began = time.monotonic()
        with pytest.raises(StorageUnavailable, match=r"did not answer in 0\.5 s"):
            writer.send(large)
        assert time.monotonic() - began < 10
        with pytest.raises(StorageUnavailable, match="ended"):
            writer.receive(running)
        assert not alive(first)
    replaced_for_the_next_write(writer, first)
    assert fleet_names(db_path) == ["b"]


def test_sigterm_and_sigint_leave_the_writer_to_its_parent(
    writer: WriterProcess, db_path: Path
) -> None:
    pid = writer.pid
    assert pid is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        os.kill(pid, sig)
    assert writer.commit([(_execute, (SQL, ("flt_a", "a", 1)), {})]) == [(None, None)]
    assert writer.pid == pid


def test_the_writer_process_ends_when_its_parent_is_killed(db_path: Path) -> None:
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from storage.sqlite.writer_process import WriterProcess
                writer = WriterProcess({str(db_path)!r}, busy_timeout_ms=200)
                writer.start()
                print(writer.pid, flush=True)
                time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert alive(child)
    parent.kill()
    parent.wait(10)
    wait_for(lambda: not alive(child))


def test_a_writer_that_cannot_open_its_file_says_why(tmp_path: Path) -> None:
    process = WriterProcess(tmp_path / "missing" / "gp8.sqlite3", busy_timeout_ms=200)
    with pytest.raises(StorageUnavailable):
        process.start()
    assert process.pid is None


def test_a_process_spawned_and_never_told_to_open_ends_when_stopped(tmp_path: Path) -> None:
    # What `Database.open` does when its own schema check fails after the spawn.
    process = WriterProcess(tmp_path / "gp8.sqlite3", busy_timeout_ms=200)
    process.spawn()
    pid = process.pid
    assert pid is not None
    process.stop()
    assert not alive(pid)
    assert not (tmp_path / "gp8.sqlite3").exists()  # it never opened the file


async def test_a_failed_schema_check_leaves_no_writer_process(tmp_path: Path) -> None:
    def refuse(conn: sqlite3.Connection) -> None:
        raise sqlite3.DatabaseError("not a gp8 database")

    db = Database(
        tmp_path / "gp8.sqlite3", busy_timeout_ms=200, prepare=refuse, writer_process=True
    )
    with pytest.raises(StorageError, match="not a gp8 database"):
        await db.open()
    assert writer_pids() == []


def test_errors_cross_with_their_type_and_details() -> None:
    conflict = _portable(Conflict("taken", fields=("fleet_id", "vin")))
    assert isinstance(conflict, Conflict)
    assert conflict.fields == ("fleet_id", "vin")
    expired = pickle.loads(pickle.dumps(_portable(CursorExpired(3, 9))))
    assert isinstance(expired, CursorExpired)
    assert (expired.cursor, expired.horizon) == (3, 9)
    assert isinstance(_portable(sqlite3.IntegrityError("UNIQUE constraint failed: t.a")), Conflict)

    class Local(Exception):  # cannot be unpickled by the parent: named instead
        pass

    named = _portable(Local("boom"))
    assert type(named) is StorageError
    assert str(named) == "Local: boom"


def test_positions_cross_as_plain_tuples_and_arrive_as_positions() -> None:
    positions = [position("flt_a", "dev_a", None, t, io={"x": 1} if t else None) for t in range(3)]
    sent = pickle.dumps(PositionList(positions))
    assert b"Position" not in sent.replace(b"PositionList", b"").replace(b"_positions", b"")
    arrived = pickle.loads(sent)
    assert arrived == positions
    assert all(type(p) is Position for p in arrived)


async def test_a_burst_of_writes_travels_in_pipelined_groups_and_all_commit(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "gp8.sqlite3", writer_process=True)
    await store.start()
    try:
        created = await asyncio.gather(*(store.fleets.create(f"f{i:03d}") for i in range(300)))
        assert {f.name for f in created} == {f"f{i:03d}" for i in range(300)}
        health = await store.health()
        assert (health["writer"], health["writer_exits"]) == ("process", 0)
    finally:
        await store.close()
    assert fleet_names(tmp_path / "gp8.sqlite3") == sorted(f.name for f in created)


async def test_writes_in_flight_when_the_process_dies_fail_unavailable_and_later_ones_commit(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gp8.sqlite3"
    store = SqliteStore(path, writer_process=True)
    await store.start()
    try:
        await store.fleets.create("first")  # the process is up
        (pid,) = writer_pids()
        burst = [asyncio.ensure_future(store.fleets.create(f"b{i:03d}")) for i in range(300)]
        await asyncio.sleep(0)  # queued and handed over, some of them
        os.kill(pid, signal.SIGKILL)
        results = await asyncio.gather(*burst, return_exceptions=True)
        # Each is answered: stored, or unavailable (it may or may not have committed).
        errors = [r for r in results if isinstance(r, BaseException)]
        assert all(isinstance(e, StorageUnavailable) for e in errors)
        await store.fleets.create("after")
        assert writer_pids() != [pid]
        assert store.writer_exits == 1
        assert (await store.health())["writer_exits"] == 1
    finally:
        await store.close()
    names = fleet_names(path)
    assert {"first", "after"} <= set(names)
    stored = {r.name for r in results if not isinstance(r, BaseException)}
    assert stored <= set(names)  # every write answered as stored is stored
    assert writer_pids() == []  # close() ended the replacement too


def writer_pids() -> list[int]:
    """This process's writer processes (storage/sqlite/writer_process.py), from /proc."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if (
            ppid == os.getpid()
            and b"storage.sqlite.writer_process" in cmdline
            and alive(int(proc.name))
        ):
            pids.append(int(proc.name))
    return pids
