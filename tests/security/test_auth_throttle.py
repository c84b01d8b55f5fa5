"""Brute force (issue 11): 2,000 wrong API keys from one source got 2,000 x 401, and 300 wrong
LOGIN proofs in a row were all answered. Now failures are counted per source (and per source and
IMEI for boxes), then locked out for a while, logged and counted; a lock-out never reaches the
genuine box or key used from another source. Loopback gives the tests many sources (127.0.0.x).
"""

from __future__ import annotations

import httpx

from protocol.gp8 import LoginStatus
from tests.security.serve_process import (
    IO_TIMEOUT_S,
    Provisioned,
    RawBox,
    ServeProcess,
    auth,
)

WRONG_KEY = "gp8_" + "x" * 43


def _client(serve: ServeProcess, source: str) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=source)
    return httpx.AsyncClient(base_url=serve.api, timeout=IO_TIMEOUT_S, transport=transport)


async def _metric(serve: ServeProcess, line_prefix: str) -> float:
    async with httpx.AsyncClient(base_url=serve.api, timeout=IO_TIMEOUT_S) as http:
        text = (await http.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(line_prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_invalid_api_keys_from_one_source_are_locked_out_not_the_key_elsewhere(
    world: tuple[ServeProcess, Provisioned],
) -> None:
    serve, fleet = world
    async with _client(serve, "127.0.0.2") as attacker, _client(serve, "127.0.0.3") as genuine:
        statuses = [
            (await attacker.get("/v1/vehicles", headers=auth(WRONG_KEY))).status_code
            for _ in range(8)
        ]
        assert statuses == [401] * 5 + [429] * 3
        refused = await attacker.get("/v1/vehicles", headers=auth(fleet.admin_key))
        assert refused.status_code == 429  # the source is locked out, whatever key it sends
        assert int(refused.headers["Retry-After"]) > 0
        assert refused.headers["content-type"].startswith("application/problem+json")
        ok = await genuine.get("/v1/vehicles", headers=auth(fleet.admin_key))
        assert ok.status_code == 200
    assert await _metric(serve, 'gp8_api_key_failures_total{reason="locked_out"}') == 1
    assert await _metric(serve, 'gp8_api_key_failures_total{reason="throttled"}') == 4
    assert "API key lock-out: source=127.0.0.2" in serve.log()


async def _login(serve: ServeProcess, source: str, imei: str, secret: str) -> LoginStatus:
    box = await RawBox.connect(serve.tcp_port, source)
    try:
        return await box.login(imei, secret)
    finally:
        await box.close()


async def test_wrong_proofs_lock_the_imei_out_from_that_source_only(
    world: tuple[ServeProcess, Provisioned],
) -> None:
    serve, box = world
    wrong = [await _login(serve, "127.0.0.4", box.imei, "not-the-secret") for _ in range(3)]
    assert wrong == [LoginStatus.BAD_PROOF] * 3
    # Locked out: even the right proof is not checked from there.
    assert await _login(serve, "127.0.0.4", box.imei, box.secret) is LoginStatus.SERVER_BUSY
    # The genuine box, from its own address, logs in.
    assert await _login(serve, "127.0.0.5", box.imei, box.secret) is LoginStatus.OK
    assert await _metric(serve, 'gp8_gateway_login_lockouts_total{scope="identity"}') == 1
    assert await _metric(serve, 'gp8_gateway_logins_total{status="throttled"}') >= 1
    assert "login lock-out (identity)" in serve.log()


async def test_a_source_trying_many_imeis_is_locked_out(
    world: tuple[ServeProcess, Provisioned],
) -> None:
    serve, box = world
    unknown = [f"35693803564{n:04d}" for n in range(6)]
    answers = [await _login(serve, "127.0.0.6", imei, "guess") for imei in unknown]
    # Unknown IMEIs, answered as bad proofs (hide_unknown_device), counted for what they are.
    assert answers == [LoginStatus.BAD_PROOF] * 6
    assert await _metric(serve, 'gp8_gateway_logins_total{status="unknown_device"}') == 6
    assert await _login(serve, "127.0.0.6", box.imei, box.secret) is LoginStatus.SERVER_BUSY
    assert await _login(serve, "127.0.0.7", box.imei, box.secret) is LoginStatus.OK
    assert await _metric(serve, 'gp8_gateway_login_lockouts_total{scope="source"}') == 1
