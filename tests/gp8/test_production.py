"""Production mode (gp8/production.py): one refusal per reason, through the check, through
`gp8 serve`'s entry point, and once through the real CLI in a subprocess."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gp8.cli import main
from gp8.production import check_production, is_placeholder_key
from gp8.serve import refusals
from gp8.settings import Settings
from storage.pseudonyms import DEVELOPMENT_KEY

GOOD_KEY = "gp8_k3Jq9xVb0TzR1mWc8LpA5sYe2NfH7uGd4oKiQwEr6tZ"
SECRETS_KEY = base64.b64encode(bytes(range(32))).decode()
DRIVER_KEY = base64.b64encode(bytes(range(32, 64))).decode()
PUBLIC = {"host": "0.0.0.0", "port": 5027}


def production(**overrides: Any) -> Settings:
    """Production settings that pass, with ``overrides`` on top."""
    values: dict[str, Any] = {
        "env": "production",
        "bootstrap_key": GOOD_KEY,
        "tcp": PUBLIC,
        "api": {"host": "0.0.0.0", "port": 8000},
        "tls": {"cert": "/etc/gp8/cert.pem", "key": "/etc/gp8/key.pem"},
        "secrets_key": SECRETS_KEY,
        "driver_key": DRIVER_KEY,
    }
    values.update(overrides)
    return Settings(**values)


def test_production_settings_with_tls_everywhere_pass() -> None:
    assert check_production(production()) == []
    assert check_production(production(teltonika={"port": 5028})) == []


def test_development_is_never_refused() -> None:
    assert check_production(Settings(env="development", bootstrap_key="demo", tls={})) == []


def test_refused_without_tls_on_the_box_port() -> None:
    [reason] = check_production(
        production(tls={"cert": "c.pem", "key": "k.pem", "tcp": {"enabled": False}})
    )
    assert reason.startswith("the box TCP listener on 0.0.0.0:5027 has no TLS")
    assert "GP8_TLS__CERT" in reason


def test_refused_without_tls_on_the_teltonika_port() -> None:
    settings = production(
        teltonika={"port": 5028},
        tls={"cert": "c.pem", "key": "k.pem", "teltonika": {"enabled": False}},
    )
    [reason] = check_production(settings)
    assert reason.startswith("the Teltonika listener on 0.0.0.0:5028 has no TLS")


def test_refused_without_tls_on_a_public_api() -> None:
    settings = production(tls={"cert": "c.pem", "key": "k.pem", "api": {"enabled": False}})
    [reason] = check_production(settings)
    assert reason.startswith("the API on 0.0.0.0:8000 has no TLS")


def test_a_loopback_listener_needs_no_tls_of_its_own() -> None:
    # Behind a TLS proxy on the same machine: not public.
    settings = production(
        api={"host": "127.0.0.1", "port": 8000},
        tls={"cert": "c.pem", "key": "k.pem", "api": {"enabled": False}},
    )
    assert check_production(settings) == []


def test_an_api_only_process_needs_no_box_port_tls() -> None:
    settings = production(
        role="api", tls={"cert": "c.pem", "key": "k.pem", "tcp": {"enabled": False}}
    )
    assert check_production(settings) == []


def test_refused_with_a_placeholder_bootstrap_key() -> None:
    [reason] = check_production(production(bootstrap_key="changeme"))
    assert reason.startswith("the bootstrap key is a placeholder")
    # No key at all is fine: operator keys then come from `gp8 admin create-key`.
    assert check_production(production(bootstrap_key=None)) == []


@pytest.mark.parametrize(
    "key",
    [
        "short-key",  # too short
        "a" * 40,  # long, but one character
        "gp8demo_" + "x7Yq2LmN9pR4sT6vW8zA1bC3dE5fG0hJ",  # gp8 demo's
        "CHANGE-ME-" + "k3Jq9xVb0TzR1mWc8LpA5sYe2NfH",  # an example value, any case
        "example-operator-key-0123456789abcdef",
    ],
)
def test_placeholder_keys(key: str) -> None:
    assert is_placeholder_key(key)


def test_a_random_key_is_no_placeholder() -> None:
    assert not is_placeholder_key(GOOD_KEY)


def test_refused_with_the_default_secrets_key() -> None:
    [reason] = check_production(production(secrets_key=None))
    assert reason.startswith("the secrets key is the public development default")
    assert check_production(production(secrets_key=None, secrets_key_file="/etc/gp8/keys")) == []


def test_refused_with_the_default_driver_key(tmp_path: Path) -> None:
    [reason] = check_production(production(driver_key=None))
    assert reason.startswith("the driver key is the public development default")
    # The development key itself, spelt out, is still the default.
    public = base64.b64encode(DEVELOPMENT_KEY).decode()
    assert len(check_production(production(driver_key=public))) == 1
    key_file = tmp_path / "driver.key"
    key_file.write_text(DRIVER_KEY + "\n")
    assert check_production(production(driver_key=None, driver_key_file=key_file)) == []


def test_every_reason_at_once_one_line_each() -> None:
    reasons = check_production(
        production(bootstrap_key="changeme", tls={}, secrets_key=None, driver_key=None)
    )
    assert len(reasons) == 5  # box port, API, bootstrap key, secrets key, driver key
    assert all("\n" not in reason for reason in reasons)


def test_a_certificate_without_its_key_is_a_refusal() -> None:
    [reason] = refusals(production(tls={"cert": "c.pem"}))
    assert reason == "TLS for the tcp listener: a key is missing"


def test_gp8_serve_refuses_in_production(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for name in [name for name in os.environ if name.startswith("GP8_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("GP8_ENV", "production")
    monkeypatch.setenv("GP8_BOOTSTRAP_KEY", "demo")
    code = main(["serve", "--data-dir", str(tmp_path), "--tcp-port", "0", "--api-port", "0"])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    refused = [line for line in lines if line.startswith("gp8 serve: ")]
    # The box port without TLS, the placeholder bootstrap key, the default secrets and
    # driver keys.
    assert len(refused) == 4, lines
    assert not any(tmp_path.iterdir())  # refused before anything was opened


def test_the_cli_exits_non_zero_with_one_line_per_reason(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GP8_")}
    env.update(GP8_ENV="production", GP8_BOOTSTRAP_KEY="changeme", GP8_DATA_DIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "gp8.cli", "serve", "--api-host", "0.0.0.0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    refused = [line for line in done.stderr.splitlines() if line.startswith("gp8 serve: ")]
    assert [line.split(" on ")[0] for line in refused[:2]] == [
        "gp8 serve: the box TCP listener",
        "gp8 serve: the API",
    ]
    assert refused[2].startswith("gp8 serve: the bootstrap key is a placeholder")
    assert refused[3].startswith("gp8 serve: the secrets key is the public development default")
    assert refused[4].startswith("gp8 serve: the driver key is the public development default")
    assert len(refused) == 5


def test_gp8_serve_stops_in_one_line_on_a_bad_driver_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for name in [name for name in os.environ if name.startswith("GP8_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("GP8_DRIVER_KEY", base64.b64encode(b"too short").decode())
    code = main(["serve", "--data-dir", str(tmp_path), "--tcp-port", "0", "--api-port", "0"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("gp8: the driver key must be the base64 of at least 32"), err
    assert not any(tmp_path.iterdir())  # stopped before the store was opened
