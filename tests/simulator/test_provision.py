"""Identifiers that pass validation anywhere, the provision file, and the API client's
retries and errors (over httpx's mock transport: the API itself is tested end to end)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.validation import imei_error, vin_check_digit, vin_error
from protocol.gp8 import Model
from simulator.provision import (
    ApiClient,
    ProvisionedBox,
    ProvisionError,
    load_provision_file,
    make_imei,
    make_plate,
    make_vin,
    provision_fleet,
    save_provision_file,
)


@given(st.integers(0, 2**64))
def test_vins_are_valid_with_their_check_digit(seed: int) -> None:
    vin = make_vin(random.Random(seed))
    assert vin_error(vin) is None
    assert len(vin) == 17 and not set(vin) & set("IOQ")
    # The check digit is right even where it is not mandatory (Europe, Asia).
    assert vin[8] == vin_check_digit(vin)


@given(st.integers(0, 2**64))
def test_imeis_are_valid(seed: int) -> None:
    imei = make_imei(random.Random(seed))
    assert imei_error(imei) is None


@given(st.integers(0, 2**64))
def test_plates_are_short_printable_text(seed: int) -> None:
    plate = make_plate(random.Random(seed))
    assert len(plate) == 9 and plate.isprintable() and plate.isupper()


def test_a_known_vin_check_digit() -> None:
    from simulator.provision import vin_check_digit as ours

    assert ours("1M8GDM9AXKP042788") == "X"  # the ISO 3779 textbook example


def test_provision_file_round_trip(tmp_path: Path) -> None:
    boxes = [
        ProvisionedBox("356000000000018", "s3cret", Model.GP8500, "veh_1", "dev_1", 1234, "a"),
        ProvisionedBox("356000000000026", "other"),
    ]
    path = tmp_path / "boxes.jsonl"
    save_provision_file(path, boxes)
    assert load_provision_file(path) == boxes
    path.write_text(
        '# a comment\n\n{"imei": "356000000000018", "secret": "x", "model": "gp8500"}\n'
    )
    assert load_provision_file(path)[0].model is Model.GP8500


@pytest.mark.parametrize(
    "line",
    [
        '{"imei": "12345", "secret": "x"}',
        '{"imei": "356000000000018"}',
        '{"imei": "356000000000018", "secret": ""}',
        '{"imei": "356000000000018", "secret": "x", "model": "GP9000"}',
        "not json",
    ],
)
def test_bad_provision_lines_name_the_line(tmp_path: Path, line: str) -> None:
    path = tmp_path / "boxes.jsonl"
    path.write_text('{"imei": "356000000000018", "secret": "x"}\n' + line + "\n")
    with pytest.raises(ProvisionError, match=":2:"):
        load_provision_file(path)


def test_missing_or_empty_provision_file(tmp_path: Path) -> None:
    with pytest.raises(ProvisionError):
        load_provision_file(tmp_path / "none.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ProvisionError, match="no boxes"):
        load_provision_file(tmp_path / "empty.jsonl")


class FakeApi:
    """Answers like the fleet API, with a 429 and a 409 on the way."""

    def __init__(self, *, backdating: bool = False) -> None:
        self.requests: list[tuple[str, str, object]] = []
        self.backdating = backdating
        self._throttled = False
        self._imeis: set[str] = set()

    def handler(self, request: httpx.Request) -> httpx.Response:
        body: dict[str, Any] = json.loads(request.content) if request.content else {}
        self.requests.append((request.method, request.url.path, body))
        assert request.headers["authorization"] == "Bearer k"
        if request.url.path == "/openapi.json":
            props: dict[str, Any] = {"imei": {}}
            if self.backdating:
                props["fitted_at"] = {}
            spec = {"components": {"schemas": {"FittingCreate": {"properties": props}}}}
            return httpx.Response(200, json=spec)
        if request.url.path == "/v1/vehicles":
            if not self._throttled:
                self._throttled = True
                return httpx.Response(429, headers={"Retry-After": "0"}, json={"detail": "slow"})
            return httpx.Response(201, json={"id": f"veh_{len(self.requests)}", **body})
        if request.url.path == "/v1/devices":
            if not self._imeis:  # the first IMEI is taken
                self._imeis.add(body["imei"])
                return httpx.Response(409, json={"detail": "IMEI taken"})
            self._imeis.add(body["imei"])
            return httpx.Response(
                201, json={"id": "dev_1", "imei": body["imei"], "secret": "sek", **body}
            )
        if request.url.path.endswith("/device"):
            fitted = body.get("fitted_at", "2026-01-01T00:00:00.000Z")
            return httpx.Response(200, json={"fitted_at": fitted})
        return httpx.Response(404, json={"detail": "nope"})


@pytest.mark.parametrize("backdating", [False, True])
async def test_provisioning_retries_throttling_and_taken_imeis(backdating: bool) -> None:
    api = FakeApi(backdating=backdating)
    transport = httpx.MockTransport(api.handler)
    async with ApiClient("http://api", "k", transport=transport) as client:
        boxes = await provision_fleet(client, 2, seed="t", fitted_at_ms=1_767_225_600_000)
    assert len(boxes) == 2 and len({b.imei for b in boxes}) == 2
    assert all(imei_error(b.imei) is None and b.secret == "sek" for b in boxes)
    fits = [body for method, _, body in api.requests if method == "PUT"]
    assert len(fits) == 2 and all(isinstance(body, dict) for body in fits)
    if backdating:
        assert [b["fitted_at"] for b in fits] == ["2026-01-01T00:00:00.000+00:00"] * 2  # type: ignore[index]
        assert boxes[0].fitted_ms == 1_767_225_600_000
    else:
        assert not any("fitted_at" in b for b in fits)  # type: ignore[operator]


async def test_api_errors_carry_the_problem_detail() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"title": "Forbidden", "detail": "needs admin"})

    async with ApiClient("http://api", "k", transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(ProvisionError, match="403 needs admin"):
            await client.create_vehicle("1M8GDM9AXKP042788", "", "")


async def test_unreachable_api_is_a_provision_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async def no_sleep(seconds: float) -> None:
        return None

    monkeypatch.setattr("simulator.provision.asyncio.sleep", no_sleep)
    async with ApiClient("http://api", "k", transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(ProvisionError, match="ConnectError"):
            await client.create_fleet("x")
