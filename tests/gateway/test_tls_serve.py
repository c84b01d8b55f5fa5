"""`gp8 serve` with --tls-cert/--tls-key: the API over HTTPS, and `gp8 sim --tls --ca` boxes
through the real entry points (settings → gp8/tls.py → listeners)."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gp8.cli import _apply_overrides, build_parser, main
from gp8.serve import Running, start_services, stop_services
from gp8.settings import Settings
from simulator.cli import run_sim
from simulator.provision import ProvisionedBox, save_provision_file
from storage.models import DeviceModel
from tests.gateway.test_tls import Pki, make_pki

TIMEOUT = 10.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def served(tmp_path: Path, pki: Pki) -> AsyncIterator[Running]:
    argv = ["serve", "--tls-cert", str(pki.cert), "--tls-key", str(pki.key)]
    settings = _apply_overrides(
        Settings(
            data_dir=tmp_path,
            log_level="warning",
            tcp={"host": "127.0.0.1", "port": 0},
            api={"host": "127.0.0.1", "port": 0},
            webhooks={"enabled": False},
        ),
        build_parser().parse_args(argv),
    )
    run = await start_services(settings)
    try:
        yield run
    finally:
        await stop_services(run)


async def test_the_api_serves_https_verified_by_the_ca(served: Running, pki: Pki) -> None:
    verify = ssl.create_default_context(cafile=str(pki.ca_file))
    async with httpx.AsyncClient(
        base_url=f"https://127.0.0.1:{served.api_port}", verify=verify, timeout=TIMEOUT
    ) as client:
        health = await client.get("/health")
    assert health.status_code == 200
    assert health.json()["gateway"]["tls"] == {"gp8": {"handshakes": {}}}

    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{served.api_port}", timeout=TIMEOUT
    ) as plain:
        with pytest.raises(httpx.HTTPError):  # plain HTTP gets no answer from a TLS port
            await plain.get("/health")


async def test_gp8_sim_tls_ca_streams_to_the_tls_box_port(
    served: Running,
    pki: Pki,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fleet = await served.store.fleets.create("tls")
    device = await served.store.devices.create(
        fleet.id, imei="356000000000991", model=DeviceModel.GP8000, secret="tls-sim-secret"
    )
    provision = tmp_path / "boxes.jsonl"
    save_provision_file(provision, [ProvisionedBox(device.imei, device.secret)])
    gateway = f"127.0.0.1:{served.tcp_port}"
    common = ["sim", "--provision", str(provision), "--gateway", gateway, "--json"]
    args = build_parser().parse_args(
        [*common, "--tls", "--ca", str(pki.ca_file), "--count", "5", "--interval", "0"]
    )

    assert await run_sim(args) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["sent"] == report["acked"] == 5
    assert served.gateway.tls_metrics["gp8"].handshakes["ok"] >= 1

    misuse = build_parser().parse_args([*common, "--ca", str(pki.ca_file)])
    assert await run_sim(misuse) == 2
    assert "--ca, --client-cert and --client-key go with --tls" in capsys.readouterr().err


def test_gp8_serve_with_a_missing_key_file_exits_2_with_one_line(
    tmp_path: Path, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["serve", "--data-dir", str(tmp_path / "data"), "--tcp-port", "0", "--api-port", "0"]
    missing = tmp_path / "missing-key.pem"
    assert main([*argv, "--tls-cert", str(pki.cert), "--tls-key", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"gp8 serve: {missing}: no such file\n" in err
    assert not (tmp_path / "data").exists()  # stopped before storage was opened
