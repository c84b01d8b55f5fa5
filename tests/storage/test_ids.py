"""Ids: their random part is read from the kernel in blocks, and each digit is handed out once."""

from __future__ import annotations

import os
import re
import threading

from storage.models import new_id, random_hex


def test_new_id_is_time_then_random_and_never_repeats() -> None:
    ids = [new_id("veh") for _ in range(5_000)]  # several blocks of the random buffer
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"veh_[0-9a-f]{24}", i) for i in ids)


def test_random_hex_from_many_threads_never_hands_out_the_same_digits() -> None:
    taken: list[str] = []

    def take() -> None:
        taken.extend(random_hex(8) for _ in range(2_000))

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(taken)) == len(taken) == 8_000


def test_a_forked_child_does_not_reuse_the_parents_digits() -> None:
    random_hex(1)  # the parent holds a block that its child must not inherit
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next digits, then leave at once
        os.write(write, random_hex(16).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32
    assert child != random_hex(16)
