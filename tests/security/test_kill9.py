"""kill -9 (issue 11's earlier attacks): `gp8 serve` killed while a box streams. Every record
it acknowledged is stored after the restart, and the box's resends of the others are stored
once: no acknowledged record is lost, none is stored twice (ACK only once durable)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import httpx

from simulator.records import make_record
from tests.security.serve_process import IO_TIMEOUT_S, RawBox, auth, provision, start_serve


async def _times(api: str, key: str, vehicle_id: str) -> list[str]:
    async with httpx.AsyncClient(base_url=api, timeout=IO_TIMEOUT_S) as http:
        r = await http.get(f"/v1/vehicles/{vehicle_id}/positions", headers=auth(key))
    assert r.status_code == 200, r.text
    return [p["time"] for p in r.json()["data"]]


async def test_kill_9_loses_no_acknowledged_record_and_stores_none_twice(tmp_path: Path) -> None:
    serve = await start_serve(tmp_path)
    try:
        box = await provision(serve.api)
        link = await RawBox.connect(serve.tcp_port)
        await link.login(box.imei, box.secret)
        # After the fitting (a record is stamped with the vehicle fitted at its time), a few
        # milliseconds apart: none lies in the future by more than a second.
        base = int(time.time() * 1000)
        sent = [base + i * 5 for i in range(120)]
        acked = 0
        for t in sent[:60]:  # one at a time, each acknowledged
            await link.position(t)
            acked += 1
        # The rest in flight, without waiting for their ACKs, then the kill.
        for t in sent[60:]:
            link.writer.write(link.frame((make_record(t, 48.85, 2.35),)))
        serve.process.kill()
        serve.process.wait(10)
        with contextlib.suppress(Exception):
            await link.close()
    finally:
        serve.stop()

    again = await start_serve(tmp_path, log_name="again.log")
    try:
        after_kill = await _times(again.api, box.admin_key, box.vehicle_id)
        assert len(after_kill) >= acked
        assert len(set(after_kill)) == len(after_kill)
        # The box resends what it has no ACK for (here: everything after the first 60).
        link = await RawBox.connect(again.tcp_port)
        await link.login(box.imei, box.secret)
        for t in sent[60:]:
            await link.position(t)
        await link.close()
        stored = await _times(again.api, box.admin_key, box.vehicle_id)
        assert len(stored) == len(set(stored)) == len(sent)
    finally:
        again.stop()
