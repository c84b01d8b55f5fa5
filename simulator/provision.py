"""Registering simulated vehicles and boxes through the fleet API, or reading boxes that are
already provisioned from a file.

Identifiers are valid everywhere, not just here: VINs of 17 characters without I, O or Q and
with the ISO 3779 check digit in position 9 (mandatory in North America, harmless elsewhere),
IMEIs of 15 digits with their Luhn digit. They are random (from the run's seed), so two runs
against one server rarely collide, and a collision (409) is retried with a new identifier.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from protocol.gp8 import Model

log = logging.getLogger(__name__)

# Every API request gives up after this long (connect, read, write and pool each).
REQUEST_TIMEOUT_S = 15.0
# Requests in flight at once while provisioning: enough to hide the round trip, few enough not
# to queue up behind the API's own workers.
PROVISION_CONCURRENCY = 16
# Attempts per request on 429/503/connection errors before giving up.
MAX_ATTEMPTS = 6
# A Retry-After longer than this is not worth waiting for in a simulator.
MAX_RETRY_AFTER_S = 60.0
# New identifiers tried when the server says one is taken (409).
MAX_CONFLICTS = 5
# What simulated Teltonika boxes are provisioned as: an FMC130 (LTE, two outputs: the default
# FMB wiring of docs/teltonika.md).
TELTONIKA_MODEL = "FMC130"

VIN_ALPHABET = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"
_VIN_VALUES = {
    **{str(d): d for d in range(10)},
    **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
    **dict(zip("JKLMN", range(1, 6), strict=True)),
    "P": 7,
    "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10), strict=True)),
}
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
# World manufacturer identifiers of real makers, so VINs look like VINs to a human too.
WMIS = ("1FT", "1G1", "2HG", "3VW", "4T1", "5YJ", "VF1", "VF3", "WVW", "WBA", "ZFA", "JHM", "YV1")
# Model-year codes (position 10): no I, O, Q, U, Z and no 0.
_YEAR_CODES = "ABCDEFGHJKLMNPRSTVWXY123456789"
# Type allocation codes of the fictitious modem maker the boxes use (35: a GSMA-issued range).
TAC_PREFIX = "35"
_PLATE_LETTERS = "ABCDEFGHJKLMNPQRSTVWXYZ"


class ProvisionError(Exception):
    """The API refused a request or could not be reached; the message says what and why."""


def vin_check_digit(vin: str) -> str:
    total = sum(_VIN_VALUES[c] * w for c, w in zip(vin, _VIN_WEIGHTS, strict=True))
    remainder = total % 11
    return "X" if remainder == 10 else str(remainder)


def make_vin(rng: random.Random) -> str:
    wmi = rng.choice(WMIS)
    vds = "".join(rng.choice(VIN_ALPHABET) for _ in range(5))
    rest = rng.choice(_YEAR_CODES) + rng.choice(VIN_ALPHABET) + f"{rng.randrange(10**6):06d}"
    draft = f"{wmi}{vds}0{rest}"
    return draft[:8] + vin_check_digit(draft) + draft[9:]


def luhn_digit(payload: str) -> str:
    total = 0
    for index, char in enumerate(reversed(payload)):
        digit = int(char)
        if index % 2 == 0:  # doubled: every second digit from the right of the full number
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return str((10 - total % 10) % 10)


def make_imei(rng: random.Random) -> str:
    body = TAC_PREFIX + f"{rng.randrange(10**12):012d}"
    return body + luhn_digit(body)


def make_plate(rng: random.Random) -> str:
    letters = _PLATE_LETTERS
    return (
        f"{rng.choice(letters)}{rng.choice(letters)}-{rng.randrange(1, 1000):03d}-"
        f"{rng.choice(letters)}{rng.choice(letters)}"
    )


@dataclass(frozen=True, slots=True)
class ProvisionedBox:
    """A box the simulator can log in as; ``fitted_ms`` is when its fitting to ``vehicle_id``
    starts (records before that belong to no vehicle)."""

    imei: str
    secret: str
    model: Model = Model.GP8000
    vehicle_id: str | None = None
    device_id: str | None = None
    fitted_ms: int | None = None
    label: str = ""
    # "gp8", or "teltonika": such a box has no secret and logs in by IMEI (docs/teltonika.md);
    # its model in the API is TELTONIKA_MODEL, and ``model`` is unused.
    protocol: str = "gp8"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"imei": self.imei, "secret": self.secret, "model": self.model.name}
        if self.protocol != "gp8":
            data["protocol"], data["model"] = self.protocol, TELTONIKA_MODEL
        for key in ("vehicle_id", "device_id", "fitted_ms", "label"):
            value = getattr(self, key)
            if value:
                data[key] = value
        return data


def parse_model(value: object) -> Model:
    if isinstance(value, int) and not isinstance(value, bool):
        return Model(value)
    if isinstance(value, str) and value.upper() in Model.__members__:
        return Model[value.upper()]
    raise ValueError(f"unknown model {value!r}: GP8000 or GP8500")


def load_provision_file(path: Path) -> list[ProvisionedBox]:
    """Boxes from JSON lines ``{"imei": ..., "secret": ..., "model": "GP8000"}``."""
    boxes: list[ProvisionedBox] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ProvisionError(f"{path}: {exc.strerror or exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            data = json.loads(line)
            imei = str(data["imei"])
            if len(imei) != 15 or not imei.isascii() or not imei.isdigit():
                raise ValueError(f"IMEI {imei!r} is not 15 digits")
            protocol = data.get("protocol", "gp8")
            if protocol not in ("gp8", "teltonika"):
                raise ValueError(f"protocol {protocol!r}: gp8 or teltonika")
            secret = data.get("secret", "") if protocol == "teltonika" else data["secret"]
            if not isinstance(secret, str) or (protocol == "gp8" and not secret):
                raise ValueError("secret must be a non-empty string")
            boxes.append(
                ProvisionedBox(
                    imei=imei,
                    secret=secret,
                    protocol=protocol,
                    model=Model.GP8000
                    if protocol == "teltonika"
                    else parse_model(data.get("model", "GP8000")),
                    vehicle_id=data.get("vehicle_id"),
                    device_id=data.get("device_id"),
                    fitted_ms=data.get("fitted_ms"),
                    label=str(data.get("label", "")),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ProvisionError(f"{path}:{number}: {exc!r}") from exc
    if not boxes:
        raise ProvisionError(f"{path}: no boxes")
    return boxes


def save_provision_file(path: Path, boxes: Sequence[ProvisionedBox]) -> None:
    text = "".join(json.dumps(box.to_json()) + "\n" for box in boxes)
    path.write_text(text, encoding="utf-8")


def _iso(time_ms: int) -> str:
    return datetime.fromtimestamp(time_ms / 1000, UTC).isoformat(timespec="milliseconds")


def _parse_iso_ms(value: object) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


class ApiClient:
    """The few fleet-API calls the simulator makes, with retries on 429/503 and typed errors.

    Third-party exceptions (httpx) become ProvisionError here and nowhere else.
    """

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        timeout_s: float = REQUEST_TIMEOUT_S,
        concurrency: int = PROVISION_CONCURRENCY,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            transport=transport,
        )
        self._backdating: bool | None = None

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """JSON of a 2xx answer; ProvisionError (with the problem's detail) otherwise."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                response = await self._client.request(method, path, json=body)
            except httpx.HTTPError as exc:
                if attempt == MAX_ATTEMPTS:
                    raise ProvisionError(f"{method} {path}: {exc!r}") from exc
                await asyncio.sleep(0.2 * 2**attempt)
                continue
            if response.status_code in (429, 503) and attempt < MAX_ATTEMPTS:
                await asyncio.sleep(_retry_after(response, attempt))
                continue
            if response.is_success:
                return response.json() if response.content else None
            raise ProvisionError(_describe(method, path, response))
        raise ProvisionError(f"{method} {path}: gave up")  # pragma: no cover

    async def supports_backdated_fitting(self) -> bool:
        """Whether PUT /v1/vehicles/{id}/device takes a ``fitted_at`` (read from the OpenAPI
        description, so no request is made that could fail half-way)."""
        if self._backdating is None:
            try:
                spec = await self.request("GET", "/openapi.json")
                schema = spec["components"]["schemas"]["FittingCreate"]
                self._backdating = "fitted_at" in schema.get("properties", {})
            except (ProvisionError, KeyError, TypeError):
                self._backdating = False
        return self._backdating

    async def create_fleet(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("POST", "/v1/fleets", {"name": name})
        return result

    async def create_key(
        self, fleet_id: str, role: str, name: str, email: str = "simulator@gp8.invalid"
    ) -> dict[str, Any]:
        # Every key belongs to a named person (docs/security.md): the simulator is one.
        body = {"role": role, "name": name, "email": email}
        result: dict[str, Any] = await self.request("POST", f"/v1/fleets/{fleet_id}/keys", body)
        return result

    async def create_vehicle(self, vin: str, plate: str, label: str) -> dict[str, Any]:
        body = {"vin": vin, "plate": plate, "label": label}
        result: dict[str, Any] = await self.request("POST", "/v1/vehicles", body)
        return result

    async def create_device(self, imei: str, model: Model, protocol: str = "gp8") -> dict[str, Any]:
        body = {"imei": imei, "model": model.name}
        if protocol == "teltonika":
            body = {"imei": imei, "model": TELTONIKA_MODEL, "protocol": protocol}
        result: dict[str, Any] = await self.request("POST", "/v1/devices", body)
        return result

    async def fit(self, vehicle_id: str, imei: str, fitted_at_ms: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"imei": imei}
        if fitted_at_ms is not None and await self.supports_backdated_fitting():
            body["fitted_at"] = _iso(fitted_at_ms)
        path = f"/v1/vehicles/{vehicle_id}/device"
        result: dict[str, Any] = await self.request("PUT", path, body)
        return result


def _retry_after(response: httpx.Response, attempt: int) -> float:
    try:
        wait = float(response.headers.get("retry-after", ""))
    except ValueError:
        wait = 0.5 * 2**attempt
    return min(MAX_RETRY_AFTER_S, max(0.1, wait))


def _describe(method: str, path: str, response: httpx.Response) -> str:
    detail = response.text[:300]
    try:
        problem = response.json()
        if isinstance(problem, dict):
            detail = str(problem.get("detail") or problem.get("title") or detail)
    except ValueError:
        pass
    return f"{method} {path}: {response.status_code} {detail}"


def _conflict(exc: ProvisionError) -> bool:
    return ": 409 " in str(exc)


async def provision_one(
    client: ApiClient,
    index: int,
    *,
    seed: object,
    fitted_at_ms: int | None = None,
    fit: bool = True,
    label_prefix: str = "sim",
    protocol: str = "gp8",
) -> ProvisionedBox:
    """A new vehicle and a new box through the API, the box fitted to the vehicle."""
    rng = random.Random(f"provision:{seed}:{index}")
    model = Model.GP8500 if rng.random() < 0.3 else Model.GP8000
    label = f"{label_prefix} {index + 1:05d}"
    vehicle: dict[str, Any] | None = None
    for attempt in range(MAX_CONFLICTS):
        try:
            vehicle = await client.create_vehicle(make_vin(rng), make_plate(rng), label)
            break
        except ProvisionError as exc:
            if not _conflict(exc) or attempt == MAX_CONFLICTS - 1:
                raise
    device: dict[str, Any] | None = None
    for attempt in range(MAX_CONFLICTS):
        try:
            device = await client.create_device(make_imei(rng), model, protocol)
            break
        except ProvisionError as exc:
            if not _conflict(exc) or attempt == MAX_CONFLICTS - 1:
                raise
    assert vehicle is not None and device is not None
    fitted_ms = None
    if fit:
        fitting = await client.fit(vehicle["id"], device["imei"], fitted_at_ms)
        fitted_ms = _parse_iso_ms(fitting.get("fitted_at")) if isinstance(fitting, dict) else None
    return ProvisionedBox(
        imei=device["imei"],
        secret=device.get("secret") or "",
        model=model,
        protocol=protocol,
        vehicle_id=vehicle["id"],
        device_id=device["id"],
        fitted_ms=fitted_ms,
        label=label,
    )


async def provision_fleet(
    client: ApiClient,
    count: int,
    *,
    seed: object,
    fitted_at_ms: int | None = None,
    fit: bool = True,
    concurrency: int = PROVISION_CONCURRENCY,
    on_progress: Callable[[int], None] | None = None,
    protocol: str = "gp8",
) -> list[ProvisionedBox]:
    """``count`` vehicles with a box each, in index order; stops at the first error."""
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(index: int) -> ProvisionedBox:
        nonlocal done
        async with gate:
            box = await provision_one(
                client, index, seed=seed, fitted_at_ms=fitted_at_ms, fit=fit, protocol=protocol
            )
        done += 1
        if on_progress is not None:
            on_progress(done)
        return box

    tasks = [asyncio.create_task(one(i)) for i in range(count)]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
