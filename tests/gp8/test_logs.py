"""Structured logs (gp8/logs.py) and the API's X-Request-ID (api/request_id.py): one JSON
object a line with the context fields, and never a secret or a whole API key."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.security import SHOWN_PREFIX_LEN, generate_key, new_api_key
from gateway import LoginChecker
from gp8 import logs
from gp8.logs import configure_logging, redact
from protocol.gp8 import Login, LoginStatus, Model, login_proof
from storage import open_store
from storage.models import Role
from storage.repository import Store
from tests.gateway.fakes import FakeDevices

IMEI = "356938035643809"
DEVICE_SECRET = "box-secret-" + secrets.token_hex(8)


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = configure_logging(level="info", fmt="json", stream=stream)
    yield stream
    logging.getLogger().removeHandler(handler)


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_is_one_json_object_with_the_fields(output: io.StringIO) -> None:
    logging.getLogger("gateway.auth").warning(
        "login refused (%s): imei=%s peer=%s", "X", IMEI, "1.2.3.4:5"
    )
    (line,) = _lines(output)
    assert line["level"] == "WARNING"
    assert line["logger"] == "gateway.auth"
    assert line["message"] == f"login refused (X): imei={IMEI} peer=1.2.3.4:5"
    assert line["ts"].endswith("+00:00")
    assert line["imei"] == IMEI and line["peer"] == "1.2.3.4:5"


def test_extra_fields_are_kept_and_exceptions_stay_on_one_line(output: io.StringIO) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("gp8.test").exception("failed", extra={"session_id": "s-1"})
    assert len(output.getvalue().splitlines()) == 1
    (line,) = _lines(output)
    assert line["session_id"] == "s-1"
    assert "ValueError: boom" in line["exc_info"]


def test_a_component_gets_its_own_level() -> None:
    stream = io.StringIO()
    handler = configure_logging(level="warning", levels={"gp8.chatty": "debug"}, stream=stream)
    try:
        logging.getLogger("gp8.chatty").debug("shown")
        logging.getLogger("gp8.quiet").info("hidden")
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger("gp8.chatty").setLevel(logging.NOTSET)
    assert [line["message"] for line in _lines(stream)] == ["shown"]


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging(level="loud", stream=io.StringIO())


def test_redaction_keeps_exactly_the_shown_prefix_of_a_key() -> None:
    # gp8/logs.py copies these facts from api/security.py (so the tools need not load FastAPI).
    assert logs.SHOWN_PREFIX_LEN == SHOWN_PREFIX_LEN
    key = generate_key()
    assert redact(f"key {key} used") == f"key {key[:SHOWN_PREFIX_LEN]}... used"


def test_a_key_or_a_secret_logged_by_mistake_is_cut(output: io.StringIO) -> None:
    key = generate_key()
    logging.getLogger("gp8.test").info("got %s", key, extra={"password": "hunter2", "k": key})
    text = output.getvalue()
    assert key not in text and "hunter2" not in text
    (line,) = _lines(output)
    assert line["password"] == logs.REDACTED and line["k"] == key[:SHOWN_PREFIX_LEN] + "..."


async def test_a_refused_box_login_logs_neither_the_secret_nor_the_proof(
    output: io.StringIO,
) -> None:
    devices = FakeDevices()
    devices.add(IMEI, DEVICE_SECRET)
    nonce = secrets.token_bytes(16)
    guess = "guess-" + secrets.token_hex(8)
    proof = login_proof(guess, nonce, IMEI, Model.GP8000)
    outcome = await LoginChecker(devices).check(
        Login(1, IMEI, Model.GP8000, (1, 0, 0), proof), nonce, peer="10.0.0.1:4000"
    )
    assert outcome.status is LoginStatus.BAD_PROOF
    text = output.getvalue()
    assert text, "the refusal is logged"
    for secret in (DEVICE_SECRET, guess, proof.hex(), nonce.hex()):
        assert secret not in text
    refused = [line for line in _lines(output) if "refused" in line["message"]]
    assert refused and refused[0]["imei"] == IMEI and refused[0]["peer"] == "10.0.0.1:4000"
    assert "session_id" not in refused[0]  # no box session is being served here


async def test_lines_of_a_box_connection_carry_its_session_id(output: io.StringIO) -> None:
    """Whatever module logs it, a line written while a TCP box session runs names that
    session (gateway/connection.py sets it for the connection's task)."""
    from gateway.connection import session_id_var

    async def one_session(session_id: str) -> None:
        session_id_var.set(session_id)
        logging.getLogger("gateway.core").warning("imei=%s peer=%s: something", IMEI, "p:1")

    await asyncio.gather(
        asyncio.create_task(one_session("aaaa11112222")),
        asyncio.create_task(one_session("bbbb33334444")),
    )
    lines = [line for line in _lines(output) if line["logger"] == "gateway.core"]
    assert sorted(line["session_id"] for line in lines) == ["aaaa11112222", "bbbb33334444"]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = open_store(mongo_url=None, mongo_db="gp8", data_dir=tmp_path)
    await s.start()
    yield s
    await s.close()


async def test_api_requests_carry_a_request_id_and_name_the_key_by_its_prefix(
    store: Store, output: io.StringIO
) -> None:
    secret, record = new_api_key(fleet_id=None, role=Role.OPERATOR, name="ops")
    await store.keys.create(record)
    app = create_app(store, rate_limit_per_minute=None)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        ok = await client.get(
            "/v1/fleets",
            headers={"Authorization": f"Bearer {secret}", "X-Request-ID": "trace-42"},
        )
        refused = await client.get(
            "/v1/fleets",
            headers={"Authorization": f"Bearer {secret[:-2]}xx", "X-Request-ID": "bad id\x7f"},
        )
        # Health checks poll: their successes are logged at debug only (not shown at info).
        assert (await client.get("/health")).status_code == 200
    assert ok.status_code == 200 and ok.headers["X-Request-ID"] == "trace-42"
    # An id we cannot trust (spaces, control characters) is replaced by a fresh one.
    assert refused.status_code == 401
    fresh = refused.headers["X-Request-ID"]
    assert fresh != "bad id\x7f" and len(fresh) == 32
    text = output.getvalue()
    assert secret not in text and secret[:-2] not in text
    requests = [line for line in _lines(output) if line["logger"] == "api.requests"]
    assert [(r["request_id"], r["status"]) for r in requests] == [("trace-42", 200), (fresh, 401)]
    assert requests[0]["key_prefix"] == secret[:SHOWN_PREFIX_LEN]
    # The key's id once it is known; a refused key has none (nothing to name).
    assert (requests[0]["key_id"], requests[1].get("key_id")) == (record.id, None)
    assert requests[0]["method"] == "GET" and requests[0]["path"] == "/v1/fleets"
