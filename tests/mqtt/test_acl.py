"""The broker files gp8 generates: Mosquitto's password format, and exactly the topics each user
may use. (That Mosquitto enforces them is tested in test_private_broker.py.)"""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from gateway.mqtt import acl as acl_module
from gateway.mqtt.acl import (
    generate_acl,
    hash_password,
    render_files,
    verify_password,
    write_files,
)
from protocol.gp8 import mqtt_password
from storage.models import Device, DeviceModel, DeviceStatus
from storage.sqlite import SqliteStore

A, B, OFF = "356938035643809", "000000000000042", "111111111111111"


def device(imei: str, secret: str, status: DeviceStatus = DeviceStatus.ACTIVE) -> Device:
    return Device(
        id=f"dev_{imei}",
        fleet_id="flt_1",
        imei=imei,
        model=DeviceModel.GP8000,
        secret=secret,
        created_ms=0,
        status=status,
    )


def parse_acl(text: str) -> dict[str, set[str]]:
    rules: dict[str, set[str]] = {}
    user = None
    for line in text.splitlines():
        if line.startswith("user "):
            user = line.split(" ", 1)[1]
            assert user not in rules, f"user {user} appears twice"
            rules[user] = set()
        elif line.startswith("topic "):
            assert user is not None, "a rule before any user applies to anonymous clients"
            rules[user].add(line)
        else:
            assert not line or line.startswith("#"), line
    return rules


def parse_passwd(text: str) -> dict[str, str]:
    return dict(line.split(":", 1) for line in text.splitlines())


def test_hash_format_is_mosquittos() -> None:
    salt = bytes(range(12))
    hashed = hash_password("s3cret", salt=salt)
    kind, iterations, salt_b64, digest_b64 = hashed.split("$")[1:]
    assert (kind, iterations, salt_b64) == ("7", "101", "AAECAwQFBgcICQoL")
    assert len(digest_b64) == 88  # 64 bytes in base64
    assert verify_password(hashed, "s3cret")
    assert not verify_password(hashed, "s3cret ")
    assert hash_password("s3cret") != hash_password("s3cret")  # a fresh salt each time


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd missing")
def test_we_verify_what_mosquitto_passwd_writes(tmp_path: Path) -> None:
    # The same algorithm both ways: a hash from Mosquitto's own tool checks out with ours.
    path = tmp_path / "pw"
    path.touch()
    subprocess.run(["mosquitto_passwd", "-b", str(path), "box", "pa$$:word"], check=True)
    user, hashed = path.read_text().strip().split(":", 1)
    assert user == "box"
    assert verify_password(hashed, "pa$$:word")
    assert not verify_password(hashed, "password")


@pytest.mark.parametrize("bad", ["", "$7$101$AAEC", "$6$101$AAECAwQFBgcICQoL$AA==", "$7$x$A$B"])
def test_verify_rejects_malformed_hashes(bad: str) -> None:
    assert not verify_password(bad, "anything")


def test_each_box_gets_its_own_topics_and_the_gateway_all() -> None:
    files = render_files(
        [device(A, "secret-a"), device(B, "secret-b"), device(OFF, "x", DeviceStatus.DISABLED)],
        gateway_user="gp8-gateway",
        gateway_password="gw-pw",
    )
    rules = parse_acl(files.acl)
    assert rules == {
        "gp8-gateway": {
            "topic read gp8/+/up",
            "topic read gp8/+/status",
            "topic write gp8/+/down",
            "topic write gp8/+/ack",
        },
        **{
            box: {
                f"topic write gp8/{box}/up",
                f"topic write gp8/{box}/status",
                f"topic read gp8/{box}/down",
                f"topic read gp8/{box}/ack",
            }
            for box in (A, B)
        },
    }
    passwords = parse_passwd(files.passwd)
    assert set(passwords) == {"gp8-gateway", A, B}  # the disabled box gets no credentials
    assert verify_password(passwords[A], mqtt_password("secret-a"))
    assert not verify_password(passwords[A], "secret-a")  # the secret is not the password
    assert not verify_password(passwords[A], mqtt_password("secret-b"))
    assert verify_password(passwords["gp8-gateway"], "gw-pw")
    assert (files.box_count, files.skipped) == (2, [OFF])


@pytest.mark.parametrize("user", ["", "356938035643809", "gp8 gateway", "gw:1", "x" * 65])
def test_gateway_user_names_that_could_clash_are_refused(user: str) -> None:
    with pytest.raises(ValueError, match="gateway user"):
        render_files([], gateway_user=user, gateway_password="pw")


def test_an_empty_gateway_password_is_refused() -> None:
    with pytest.raises(ValueError, match="password"):
        render_files([], gateway_user="gw", gateway_password="")


def test_files_are_written_atomically_with_private_passwords(tmp_path: Path) -> None:
    files = render_files([device(A, "s")], gateway_user="gw", gateway_password="pw")
    written = write_files(files, tmp_path / "out")
    passwd, acl, conf = written
    assert [p.name for p in written] == ["passwd", "acl", "gp8.conf"]
    assert stat.S_IMODE(passwd.stat().st_mode) == 0o600
    assert passwd.read_text() == files.passwd and acl.read_text() == files.acl
    assert f"password_file {passwd}" in conf.read_text()
    assert f"acl_file {acl}" in conf.read_text()
    assert "allow_anonymous false" in conf.read_text()
    assert not list((tmp_path / "out").glob(".*.tmp"))
    write_files(files, tmp_path / "out")  # again, over the old ones


async def test_generate_acl_pages_through_every_fleet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acl_module, "PAGE_SIZE", 2)  # force several pages of both
    store = SqliteStore(tmp_path / "gp8.sqlite3")
    await store.start()
    try:
        imeis = []
        for f in range(3):
            fleet = await store.fleets.create(f"fleet-{f}")
            for d in range(3):
                imei = f"35000000000{f}{d:03d}"
                await store.devices.create(
                    fleet.id, imei=imei, model=DeviceModel.GP8500, secret=f"s{f}{d}"
                )
                imeis.append(imei)
        paths = await generate_acl(
            store, tmp_path / "mosquitto", gateway_user="gw", gateway_password="pw"
        )
    finally:
        await store.close()
    users = set(parse_acl(paths[1].read_text()))
    assert users == {"gw", *imeis}
    assert set(parse_passwd(paths[0].read_text())) == users
