"""Injection strings (issue 11's earlier attacks) against a real `gp8 serve`: SQL, NoSQL
operators, markup and control characters, in bodies, paths and query strings. Stored values come
back byte for byte, hostile parameters are refused as problems, nothing answers 5xx, and no
string reaches another fleet's data (every query is parameterised and takes the fleet id)."""

from __future__ import annotations

from urllib.parse import quote

import httpx

from tests.security.serve_process import (
    IO_TIMEOUT_S,
    Provisioned,
    ServeProcess,
    auth,
)

HOSTILE = [
    "'; DROP TABLE positions; --",
    '" OR 1=1 --',
    '{"$ne": null}',
    "$where: sleep(1000)",
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "\u202e\u0000\u0007",
    "%00%27",
]


async def test_hostile_strings_are_data_never_code(
    world: tuple[ServeProcess, Provisioned],
) -> None:
    serve, fleet = world
    headers = auth(fleet.admin_key)
    statuses: list[int] = []
    stored = []
    async with httpx.AsyncClient(base_url=serve.api, timeout=IO_TIMEOUT_S) as http:
        for text in HOSTILE:
            r = await http.patch(
                f"/v1/vehicles/{fleet.vehicle_id}", json={"label": text}, headers=headers
            )
            statuses.append(r.status_code)
            if r.status_code == 200:
                got = await http.get(f"/v1/vehicles/{fleet.vehicle_id}", headers=headers)
                assert got.json()["label"] == text
                stored.append(text)
            segment = quote(text, safe="")
            for path in (f"/v1/vehicles/{segment}", f"/v1/vehicles/{fleet.vehicle_id}/positions"):
                r = await http.get(path, params={"from": text, "cursor": text}, headers=headers)
                statuses.append(r.status_code)
                if r.status_code >= 400:
                    assert r.headers["content-type"].startswith("application/problem+json")
        listing = await http.get("/v1/vehicles", headers=headers)
    assert all(code < 500 for code in statuses), statuses
    # Only the control characters may be refused (422): everything else is a valid label.
    assert set(HOSTILE) - set(stored) <= {"\u202e\u0000\u0007"}, stored
    assert [v["id"] for v in listing.json()["data"]] == [fleet.vehicle_id]
