"""The console in a real headless Chromium (Debian's package, driven by Playwright) against a
real `gp8 serve` subprocess fed by the simulator: sign-in, the fleet on the map, a marker
moving on the next stored position, a lock sent from the page acknowledged by the simulated
box, a towed vehicle's suspected-theft alert opening the theft view that follows it, and a
viewer key that gets no command buttons.

One server, one fleet and one browser for the module; the tests run in file order and share
them (each signs in afresh). The tile server is an address where nothing listens: the map must
work offline. Screenshots of the main views go to test-artifacts/console/ (gitignored).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from simulator.fleet import Fleet, FleetOptions, make_clock
from simulator.geo import LatLon
from simulator.pacing import wall_ms
from simulator.provision import ApiClient, ProvisionedBox, provision_fleet
from simulator.scenario import load_scenario, parse_scenario
from simulator.trajectory import StreetGrid
from simulator.transport import TransportConfig

CHROMIUM = Path("/usr/bin/chromium")
GP8 = Path(sys.executable).with_name("gp8")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "console"
OPERATOR_KEY = "gp8-console-test-operator-key"
CENTER = LatLon(48.8566, 2.3522)
VEHICLES = 3
# Every wait in these tests gives up after this long (a loaded 2-core machine is slow).
WAIT_S = 30.0
WAIT_MS = WAIT_S * 1000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium; "
        ".ci/run installs it)",
    ),
]

playwright_api = pytest.importorskip("playwright.async_api")

# The theft scenario's story (simulator/scenarios/theft.toml) with the night cut short: parked
# long enough for the guard to arm (5 min), towed, hidden, driven away. 30 s between fixes at
# 4 records/s: the tow begins about 5 s into the run and the box would report for 20 s more
# (the test stops it once the theft view has followed it).
THEFT = """
name = "theft, short night"
[[phases]]
behaviour = "drive"
duration = "3min"
badge = true
[[phases]]
behaviour = "park"
duration = "8min"
lock = true
[[phases]]
behaviour = "tow"
duration = "10min"
[[phases]]
behaviour = "park"
duration = "5min"
lock = false
[[phases]]
behaviour = "drive"
duration = "30min"
badge = false
"""
THEFT_INTERVAL_S = 30.0
THEFT_RATE = 4.0


@dataclass
class Server:
    base_url: str
    tcp_port: int


@dataclass
class World:
    server: Server
    keys: dict[str, str]  # role → secret
    boxes: list[ProvisionedBox]
    fleet: Fleet
    http: httpx.AsyncClient  # as the fleet's admin


async def _read_ports(stream: asyncio.StreamReader, lines: list[str]) -> tuple[int, int]:
    """The ports `gp8 serve` chose (port 0), from its start-up log line (text or JSON)."""
    api_port = tcp_port = None
    while api_port is None or tcp_port is None:
        raw = await stream.readline()
        if not raw:
            raise RuntimeError("gp8 serve exited:\n" + "".join(lines))
        line = raw.decode(errors="replace")
        lines.append(line)
        api = re.search(r"API on https?://[^\s:]+:(\d+)", line)
        tcp = re.search(r"boxes on tcp [^\s:]+:(\d+)", line)
        if api and tcp:
            api_port, tcp_port = int(api[1]), int(tcp[1])
    return api_port, tcp_port


async def _drain(stream: asyncio.StreamReader, lines: list[str]) -> None:
    while raw := await stream.readline():
        lines.append(raw.decode(errors="replace"))
        del lines[:-200]  # what to show if it fails, not a log of the run


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    env = {
        **os.environ,
        "GP8_DATA_DIR": str(tmp_path_factory.mktemp("gp8-console")),
        "GP8_BOOTSTRAP_KEY": OPERATOR_KEY,
        "GP8_LOG_LEVEL": "info",
        "GP8_TCP__HOST": "127.0.0.1",
        "GP8_TCP__PORT": "0",
        "GP8_API__HOST": "127.0.0.1",
        "GP8_API__PORT": "0",
        "GP8_API__RATE_LIMIT_PER_MINUTE": "0",
        # Offline: nothing listens on the discard port, every tile fails.
        "GP8_CONSOLE__TILE_URL": "http://127.0.0.1:9/{z}/{x}/{y}.png",
    }
    process = await asyncio.create_subprocess_exec(
        str(GP8),
        "serve",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(WAIT_S):
            api_port, tcp_port = await _read_ports(process.stderr, lines)
        drain = asyncio.create_task(_drain(process.stderr, lines))
        yield Server(f"http://127.0.0.1:{api_port}", tcp_port)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(WAIT_S):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        with contextlib.suppress(NameError):
            drain.cancel()
    if process.returncode not in (0, -signal.SIGTERM):
        pytest.fail(f"gp8 serve ended with {process.returncode}:\n{''.join(lines)}")


def _fleet_of(server: Server, boxes: list[ProvisionedBox], scenario: Any, **kw: Any) -> Fleet:
    options = FleetOptions(
        transport=TransportConfig(host="127.0.0.1", port=server.tcp_port),
        seed=kw.pop("seed"),
        reconnect_delay_s=0.05,
        reconnect_max_s=1.0,
        **kw,
    )
    clock = make_clock(scenario, options, lon=CENTER.lon)
    clock.start_ms = max(clock.start_ms, max(b.fitted_ms or 0 for b in boxes) + 1)
    network = StreetGrid(CENTER, 2_000, seed=options.seed)
    return Fleet(boxes, scenario=scenario, network=network, clock=clock, options=options)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(server: Server) -> AsyncIterator[World]:
    """A fleet with admin, manager and viewer keys, and its vehicles driving live (a fix a
    second each, in real time) for the whole module."""
    async with ApiClient(server.base_url, OPERATOR_KEY) as operator:
        created = await operator.create_fleet("console")
        keys = {
            role: (await operator.create_key(created["id"], role, f"console {role}"))["key"]
            for role in ("admin", "manager", "viewer")
        }
    async with ApiClient(server.base_url, keys["admin"]) as admin:
        boxes = await provision_fleet(
            admin, VEHICLES, seed="console", fitted_at_ms=wall_ms() - 60_000
        )
    fleet = _fleet_of(server, boxes, load_scenario("demo"), interval_s=1.0, seed="console")
    stop = asyncio.Event()
    running = asyncio.create_task(fleet.run(stop))
    headers = {"Authorization": f"Bearer {keys['admin']}"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=WAIT_S) as http:
        try:
            yield World(server, keys, boxes, fleet, http)
        finally:
            stop.set()
            async with asyncio.timeout(WAIT_S):
                await running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as pw:
        # --no-sandbox: the tests may run as root (CI containers), where Chromium's sandbox
        # refuses to start.
        launched = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    print(f"\nconsole screenshots: {ARTIFACTS}")
    return ARTIFACTS


@dataclass
class Tab:
    page: Any
    errors: list[str]  # uncaught script errors and CSP violations: none expected


async def _signed_in(browser: Any, world: World, role: str, **context: Any) -> Tab:
    page = await (await browser.new_context(**context)).new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None
    )
    await page.goto(f"{world.server.base_url}/console")
    await page.fill("#signin-key", world.keys[role])
    await page.click("#signin-form button[type=submit]")
    await page.wait_for_selector("#app:not([hidden])")
    await page.wait_for_selector("#live.live-live")
    return Tab(page, errors)


async def _on_map(page: Any) -> int:
    """Vehicles on the map: markers of their own plus those counted in cluster badges."""
    counted: int = await page.evaluate(
        """() => document.querySelectorAll('#map .veh').length +
                 [...document.querySelectorAll('#map .marker-cluster span')]
                   .reduce((n, s) => n + Number(s.textContent), 0)"""
    )
    return counted


# A marker's fix time and where it is on the screen.
MARKER_AT = """m => { const r = m.getBoundingClientRect();
                      return [m.dataset.time, `${Math.round(r.x)},${Math.round(r.y)}`]; }"""
# How far (px) a vehicle's marker is from the middle of the map.
CENTRE_OFFSET = """(id) => {
  const map = document.querySelector('#map').getBoundingClientRect();
  const m = document.querySelector(`#map .veh[data-vehicle-id="${id}"]`).getBoundingClientRect();
  return Math.hypot(m.x + m.width / 2 - (map.x + map.width / 2),
                    m.y + m.height / 2 - (map.y + map.height / 2));
}"""
CASE_OPEN = """() =>
  document.querySelector('#theft-facts [data-fact="case"]').textContent.startsWith('open')"""
DOORS_LOCKED = """() =>
  document.querySelector('#veh-box [data-fact="doors_locked"]').textContent === 'yes'"""


async def _until(check: Any, what: str) -> None:
    try:
        async with asyncio.timeout(WAIT_S):
            while True:
                if await check():
                    return
                await asyncio.sleep(0.1)
    except TimeoutError:
        pytest.fail(f"not within {WAIT_S:g} s: {what}")


async def test_sign_in_shows_every_vehicle_on_the_map(
    browser: Any, world: World, artifacts: Path
) -> None:
    tab = await _signed_in(browser, world, "admin")
    page = tab.page
    # Functions, not expression strings: the page's CSP forbids eval, Playwright's included.
    await page.wait_for_function(
        "(n) => document.querySelectorAll('.vehicle-row').length === n", arg=VEHICLES
    )

    async def all_on_map() -> bool:
        return await _on_map(page) == VEHICLES

    await _until(all_on_map, "every vehicle on the map")
    listed = set(
        await page.eval_on_selector_all(
            ".vehicle-row", "rows => rows.map(r => r.dataset.vehicleId)"
        )
    )
    assert listed == {box.vehicle_id for box in world.boxes}
    assert "admin" in (await page.text_content("#who") or "")
    await page.screenshot(path=artifacts / "fleet.png")
    # Phone-sized: the same page stacked, the list under the map.
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.screenshot(path=artifacts / "fleet-phone.png", full_page=True)
    assert tab.errors == []


async def test_marker_moves_when_the_next_position_is_stored(
    browser: Any, world: World, artifacts: Path
) -> None:
    tab = await _signed_in(browser, world, "admin")
    page = tab.page
    # The fastest of the fleet now: a parked vehicle's marker rightly stays put.
    rows = (await world.http.get("/v1/fleet/positions")).json()["data"]
    vehicle = max(rows, key=lambda row: row["position"]["speed_kmh"])["vehicle_id"]
    await page.click(f'.vehicle-row[data-vehicle-id="{vehicle}"]')
    await page.wait_for_selector("#view-vehicle:not([hidden])")
    marker = f'#map .veh[data-vehicle-id="{vehicle}"]'
    await page.wait_for_selector(marker)
    before = await page.eval_on_selector(marker, MARKER_AT)
    stored = (await world.http.get(f"/v1/vehicles/{vehicle}/position")).json()["position"]["time"]

    async def moved() -> bool:
        now = await page.eval_on_selector(marker, MARKER_AT)
        return bool(now[0] > max(before[0], stored) and now[1] != before[1])

    # The page is not reloaded: the new fix comes from the live stream.
    await _until(moved, "the marker at the next position")
    latest = (await world.http.get(f"/v1/vehicles/{vehicle}/position")).json()["position"]
    shown = await page.eval_on_selector(marker, "m => m.dataset.time")
    assert shown <= latest["time"]
    await page.wait_for_selector('#veh-facts [data-fact="time"]')
    await page.screenshot(path=artifacts / "vehicle.png")


async def test_lock_from_the_page_is_acknowledged_by_the_box(
    browser: Any, world: World, artifacts: Path
) -> None:
    tab = await _signed_in(browser, world, "manager")
    page = tab.page
    vehicle = world.boxes[1].vehicle_id
    await page.click(f'.vehicle-row[data-vehicle-id="{vehicle}"]')
    await page.click('#veh-commands [data-command="lock"]')
    await page.wait_for_selector("#confirm[open]")
    assert "Lock the doors" in await page.text_content("#confirm-text")
    # A manager gets lock, unlock and locate; engine start is for admins.
    commands = await page.eval_on_selector_all(
        "#veh-commands button", "bs => bs.map(b => b.dataset.command)"
    )
    assert commands == ["lock", "unlock", "locate"]
    await page.click("#confirm-ok")
    await page.wait_for_selector('#veh-progress[data-status="acknowledged"]')
    assert await page.eval_on_selector_all(
        "#veh-progress .step.done", "s => s.map(x => x.dataset.step)"
    ) == [
        "queued",
        "sent",
        "acknowledged",
    ]
    command_id = await page.get_attribute("#veh-progress", "data-command-id")
    command = (await world.http.get(f"/v1/commands/{command_id}")).json()
    assert (command["type"], command["status"], command["vehicle_id"]) == (
        "lock",
        "acknowledged",
        vehicle,
    )
    assert command["delivered_at"] is not None and command["result"]["doors_locked"] is True
    # The box's next record says locked, and the page shows it.
    await page.wait_for_function(DOORS_LOCKED)
    await page.screenshot(path=artifacts / "command.png")


# The centre of the vehicle marker (or cluster) nearest the map's centre, with room on its right
# for the edge's click.
ON_A_MARKER = """() => {
  const map = document.querySelector("#map").getBoundingClientRect();
  const centre = [map.x + map.width / 2, map.y + map.height / 2];
  const spots = [...document.querySelectorAll("#map .veh-icon, #map .marker-cluster")]
    .map(m => m.getBoundingClientRect())
    .map(r => [r.x + r.width / 2, r.y + r.height / 2])
    .filter(([x, y]) => x > map.x + 20 && x < map.right - 80)
    .filter(([x, y]) => y > map.y + 20 && y < map.bottom - 20);
  const off = ([x, y]) => Math.hypot(x - centre[0], y - centre[1]);
  spots.sort((a, b) => off(a) - off(b));
  if (!spots.length) throw new Error("no vehicle marker on the map to draw on");
  return spots[0];
}"""


async def test_manager_draws_a_circle_geofence(browser: Any, world: World, artifacts: Path) -> None:
    tab = await _signed_in(browser, world, "manager")
    page = tab.page
    await page.click('.tab[data-view="fences"]')
    await page.click('#fence-tools button:has-text("New circle")')
    # The centre on a vehicle (or a cluster of them), as a depot's fence is drawn where its
    # vehicles stand: the click goes through the marker to the map, not to the vehicle.
    await page.wait_for_selector("#map .veh-icon, #map .marker-cluster")
    x, y = await page.evaluate(ON_A_MARKER)
    await page.mouse.click(x, y)
    await page.mouse.click(x + 60, y)
    await page.wait_for_selector("#confirm[open]")
    await page.fill("#confirm-note", "depot")
    await page.click("#confirm-ok")
    await page.wait_for_selector('#fence-list .item:has-text("depot")')
    await page.wait_for_selector("#map path.fence")
    fences = (await world.http.get("/v1/geofences")).json()["data"]
    (fence,) = [f for f in fences if f["name"] == "depot"]
    assert fence["geometry"]["type"] == "Point" and fence["radius_m"] > 0
    await page.screenshot(path=artifacts / "geofence.png")
    assert tab.errors == []


async def test_towing_opens_the_theft_view_which_follows_the_vehicle(
    browser: Any, world: World, artifacts: Path
) -> None:
    tab = await _signed_in(browser, world, "admin")
    page = tab.page
    await page.click('.tab[data-view="alerts"]')
    scenario = parse_scenario(THEFT)
    async with ApiClient(world.server.base_url, world.keys["admin"]) as admin:
        options = FleetOptions(transport=TransportConfig(), interval_s=THEFT_INTERVAL_S)
        start = make_clock(scenario, options, lon=CENTER.lon).start_ms
        boxes = await provision_fleet(admin, 1, seed="console-theft", fitted_at_ms=start - 60_000)
    vehicle = boxes[0].vehicle_id
    thief = _fleet_of(
        world.server, boxes, scenario, interval_s=THEFT_INTERVAL_S, rate=THEFT_RATE, seed="theft"
    )
    thief_run = asyncio.create_task(thief.run())
    try:
        # The alert arrives by the stream; its theft view is one click away.
        alert = '.alert[data-type="suspected_theft"]:has(button[data-action="theft"])'
        await page.wait_for_selector(alert)
        await page.screenshot(path=artifacts / "alerts.png")
        await page.click(f"{alert} button[data-action=theft]")
        await page.wait_for_selector("#view-theft:not([hidden])")
        plate = (await world.http.get(f"/v1/vehicles/{vehicle}")).json()["plate"]
        assert plate in (await page.text_content("#theft-title") or "")
        await page.wait_for_function(
            "() => Number(document.querySelector('#view-theft').dataset.points) > 0"
        )
        first = await page.text_content('#theft-facts [data-fact="time"]')
        points = int(await page.get_attribute("#view-theft", "data-points") or 0)

        async def followed() -> bool:
            now = int(await page.get_attribute("#view-theft", "data-points") or 0)
            return (
                now > points and await page.text_content('#theft-facts [data-fact="time"]') != first
            )

        await _until(followed, "the theft view following the vehicle")

        async def centred() -> bool:
            offset: float = await page.evaluate(CENTRE_OFFSET, vehicle)
            return offset < 40

        # Followed: the map is kept centred on the vehicle's marker (once a zoom animation,
        # a CSS transition, has settled).
        await _until(centred, "the map centred on the vehicle")
        for label in ("geojson", "gpx", "csv"):
            assert await page.is_visible(f'[data-export="{label}"]')
        assert await page.is_visible('#theft-actions [data-action="immobilise"]')
        async with page.expect_download() as download:
            await page.click('[data-export="gpx"]')
        saved = artifacts / "theft-track.gpx"
        await (await download.value).save_as(saved)
        assert b"<trkpt" in saved.read_bytes()
        # An admin opens the theft case from the view; the view then shows the case's track.
        await page.click('#theft-actions [data-action="open-case"]')
        await page.wait_for_selector("#confirm[open]")
        await page.fill("#confirm-note", "PD-2026-118")
        await page.click("#confirm-ok")
        await page.wait_for_function(CASE_OPEN)
        assert await page.locator('#theft-actions [data-action="open-case"]').count() == 0
        async with page.expect_download() as download:
            await page.click('[data-export="csv"]')
        saved = artifacts / "theft-case-track.csv"
        await (await download.value).save_as(saved)
        assert saved.read_text().startswith("time,lat,lon")
        await page.screenshot(path=artifacts / "theft.png")
        alerts = (
            await world.http.get(
                "/v1/alerts", params={"type": "suspected_theft", "vehicle_id": vehicle}
            )
        ).json()
        assert len(alerts["data"]) == 1
    finally:
        thief.stop()  # seen enough: the rest of the drive would only cost time
        async with asyncio.timeout(WAIT_S):
            await thief_run
    assert not thief.failures(), thief.failures()
    assert tab.errors == []


async def test_viewer_sees_no_command_buttons(browser: Any, world: World, artifacts: Path) -> None:
    tab = await _signed_in(browser, world, "viewer", viewport={"width": 390, "height": 844})
    page = tab.page
    vehicle = world.boxes[1].vehicle_id
    await page.click(f'.vehicle-row[data-vehicle-id="{vehicle}"]')
    await page.wait_for_selector('#veh-facts [data-fact="time"]')
    assert await page.locator("#veh-commands button").count() == 0
    await page.click('.tab[data-view="alerts"]')
    await page.wait_for_selector(".alert")
    assert await page.locator('.alert button[data-action="ack"]').count() == 0
    # The theft view is readable by a viewer, without its buttons.
    await page.click('.alert button[data-action="theft"]')
    await page.wait_for_selector("#view-theft:not([hidden])")
    assert await page.locator("#theft-actions button").count() == 0
    await page.click('.tab[data-view="fences"]')
    assert await page.locator("#fence-tools button").count() == 0
    await page.screenshot(path=artifacts / "viewer-phone.png", full_page=True)
    assert tab.errors == []
