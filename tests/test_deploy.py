"""docker-compose.yml and the Dockerfile, without a Docker engine: their structure is checked
against the repository and the Settings class, then every gp8 service's command runs here,
with the compose file's environment translated, against a Mosquitto started from
deploy/mosquitto/mosquitto.conf — until each is healthy by the image's own HEALTHCHECK.

What the translation changes, and only that: container paths become directories of the test
(the TLS files are made here with trustme), the ports are free ones, the compose names of the
broker become 127.0.0.1, and MongoDB — no server exists here — becomes the embedded SQLite
engine, one data directory per service.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import yaml

from gp8.cli import build_parser
from gp8.settings_doc import settings_rows

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
MOSQUITTO_CONF = ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
TIMEOUT = 30.0
# Values the operator's .env gives (docs/deploy.md, "First start").
DOT_ENV = {
    "GP8_SECRETS_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
    "GP8_DRIVER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
    "GP8_BOOTSTRAP_KEY": "gp8_" + secrets.token_urlsafe(32),
    # Starting with "-" on purpose: a generated password may, and the command must take it.
    "GP8_MQTT__PASSWORD": "-" + secrets.token_urlsafe(24),
}
_VAR = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m["name"], m["op"], m["arg"]
        if env.get(name):
            return env[name]
        if op == ":-":
            return str(arg)
        raise KeyError(f"{name}: {arg}" if op == ":?" else name)

    return _VAR.sub(one, value)


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def services() -> dict[str, dict[str, Any]]:
    return dict(compose()["services"])


def gp8_services() -> dict[str, dict[str, Any]]:
    """The services that run the gp8 image (built from this repository)."""
    return {name: s for name, s in services().items() if s.get("build") == "."}


def env_of(service: Mapping[str, Any]) -> dict[str, str]:
    return {k: interpolate(str(v), DOT_ENV) for k, v in service.get("environment", {}).items()}


def command_of(service: Mapping[str, Any]) -> list[str]:
    return [interpolate(str(arg), DOT_ENV) for arg in service["command"]]


def mounts(service: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        out.append((source, target))
    return out


# --- structure ---------------------------------------------------------------------------------


def test_the_services_are_the_documented_ones() -> None:
    assert set(services()) == {"mongo", "mqtt-acl", "mosquitto", "gateway", "api"}
    assert set(gp8_services()) == {"mqtt-acl", "gateway", "api"}


def test_long_running_services_restart_and_have_a_healthcheck() -> None:
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    for name, service in services().items():
        if name == "mqtt-acl":  # one-shot
            assert service["restart"] == "no"
            continue
        assert service["restart"] == "unless-stopped", name
        if service.get("build") == ".":
            # The image's HEALTHCHECK, not switched off here.
            assert "HEALTHCHECK" in dockerfile and "healthcheck" not in service, name
        else:
            assert service["healthcheck"]["test"], name


def test_mongo_is_a_one_node_replica_set_that_gp8_joins_as_such() -> None:
    mongo = services()["mongo"]
    assert mongo["command"][:3] == ["mongod", "--replSet", "rs0"]
    check = " ".join(mongo["healthcheck"]["test"])
    assert "rs.initiate" in check and "_id: 'rs0'" in check and "mongo:27017" in check
    for name, service in gp8_services().items():
        assert env_of(service)["GP8_MONGO_URL"].endswith("?replicaSet=rs0"), name
    # The script mongosh evaluates parses as JavaScript (node is here for the console's set-up).
    node = shutil.which("node")
    if node is not None:
        script = mongo["healthcheck"]["test"][-1]
        parsed = subprocess.run(
            [node, "--check", "-"], input=script, capture_output=True, text=True, timeout=TIMEOUT
        )
        assert parsed.returncode == 0, parsed.stderr
    # Services wait for a primary, not just a started mongod.
    for name, service in gp8_services().items():
        assert service["depends_on"]["mongo"] == {"condition": "service_healthy"}, name


def test_referenced_files_exist_and_named_volumes_are_declared() -> None:
    declared = set(compose()["volumes"])
    used = set()
    for name, service in services().items():
        for source, _ in mounts(service):
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source}"
            else:
                used.add(source)
    assert used == declared
    for service in gp8_services().values():
        assert (ROOT / service["build"] / "Dockerfile").is_file()


def test_every_value_the_operator_must_give_is_in_the_first_start_steps() -> None:
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE_FILE.read_text(encoding="utf-8")))
    assert required == set(DOT_ENV)
    guide = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    first_start = guide.split("## First start", 1)[1].split("\n## ", 1)[0]
    for name in required:
        assert f"{name}=" in first_start, name


def test_the_broker_reads_what_mqtt_acl_writes() -> None:
    all_services = services()
    acl, broker = all_services["mqtt-acl"], all_services["mosquitto"]
    command = command_of(acl)
    out_dir = command[command.index("--out-dir") + 1]
    assert ("mosquitto-auth", out_dir) in mounts(acl)
    assert ("mosquitto-auth", out_dir) in mounts(broker)
    conf = MOSQUITTO_CONF.read_text(encoding="utf-8")
    assert f"include_dir {out_dir}" in conf
    # The broker's config and TLS files are the ones mounted where the config names them.
    targets = dict((t, s) for s, t in mounts(broker))
    assert targets[broker["command"][-1]] == "./deploy/mosquitto/mosquitto.conf"
    for path in re.findall(r"^(?:certfile|keyfile) (\S+)$", conf, re.MULTILINE):
        assert any(path.startswith(t + "/") for t in targets), path
    # The gateway logs in to the broker as the user mqtt-acl created.
    gateway = env_of(all_services["gateway"])
    user = command[command.index("--gateway-user") + 1]
    assert gateway["GP8_MQTT__USERNAME"] == user
    (password,) = [
        a.removeprefix("--gateway-password=")
        for a in command
        if a.startswith("--gateway-password=")
    ]
    assert gateway["GP8_MQTT__PASSWORD"] == password


def test_environment_names_are_real_settings() -> None:
    known = {row.env for row in settings_rows()}
    for name, service in gp8_services().items():
        unknown = set(env_of(service)) - known
        assert unknown == set(), name


def test_published_ports_are_where_gp8_listens_and_production_mode_accepts_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gp8.production import check_production
    from gp8.settings import Settings
    from gp8.tls import is_loopback

    for name in ("gateway", "api"):
        service = gp8_services()[name]
        for key in [k for k in os.environ if k.startswith("GP8_")]:
            monkeypatch.delenv(key)
        for key, value in env_of(service).items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        listening = {settings.api.port: settings.api.host}
        if name == "gateway":
            listening[settings.tcp.port] = settings.tcp.host
        for mapping in service["ports"]:
            port = int(mapping.split(":")[-1])
            assert port in listening, (name, mapping)
            assert not is_loopback(listening[port]), (name, mapping)
        assert check_production(settings) == [], name


def test_every_gp8_command_is_one_the_cli_accepts() -> None:
    parser = build_parser()
    roles = {}
    for name, service in gp8_services().items():
        args = parser.parse_args(command_of(service))
        roles[name] = getattr(args, "serve_role", None)
    assert roles == {"mqtt-acl": None, "gateway": "gateway", "api": "api"}


def test_dockerfile_is_slim_non_root_and_copies_every_package() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    bases = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert bases and all(b.endswith("-slim") for b in bases)
    assert bases[-1].startswith("python:3.11")  # the runtime: pyproject's requires-python
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert "gp8.healthcheck" in text.split("HEALTHCHECK", 1)[1].splitlines()[1]
    copied = set()
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.MULTILINE):
        for path in source.split():
            assert (ROOT / path).exists(), path
            copied.add(path)
    # The console's own files and its npm library are in the image (api/routes/console.py).
    assert "console" in copied and "COPY --from=console /src/node_modules node_modules" in text
    ignored = set((ROOT / ".dockerignore").read_text(encoding="utf-8").split())
    assert copied & ignored == set()  # nothing copied is left out of the build context
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert packages <= copied, packages - copied


# --- every gp8 service, run here -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Translation:
    """Container paths and names → this machine's."""

    root: Path
    paths: dict[str, Path] = field(default_factory=dict)
    broker_port: int = field(default_factory=free_port)

    def path(self, value: str) -> str:
        for container, local in sorted(self.paths.items(), key=lambda kv: -len(kv[0])):
            if value == container or value.startswith(container + "/"):
                return str(local) + value[len(container) :]
        return value

    def value(self, value: str) -> str:
        value = value.replace("mosquitto:8883", f"127.0.0.1:{self.broker_port}")
        return self.path(value)

    def env(self, name: str, service: Mapping[str, Any]) -> dict[str, str]:
        for source, target in mounts(service):
            local = self.root / ("tls" if source == "./deploy/tls" else source.strip("./"))
            self.paths[target] = local
        env = {k: self.value(v) for k, v in env_of(service).items()}
        del env["GP8_MONGO_URL"]  # no MongoDB server here: the embedded engine instead
        env["GP8_DATA_DIR"] = str(self.root / f"data-{name}")
        env["GP8_TCP__PORT"] = str(free_port())
        env["GP8_API__PORT"] = str(free_port())
        return env


@pytest.fixture
def translation(tmp_path: Path) -> Translation:
    t = Translation(tmp_path)
    tls = tmp_path / "tls"
    tls.mkdir()
    ca = trustme.CA()
    ca.cert_pem.write_to_path(tls / "ca.crt")
    cert = ca.issue_cert("localhost", "127.0.0.1", "mosquitto")
    cert.cert_chain_pems[0].write_to_path(tls / "server.crt")
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(tls / "server.crt", append=True)
    cert.private_key_pem.write_to_path(tls / "server.key")
    return t


class Processes:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name}.log").open("ab")
        process = subprocess.Popen(argv, env={**_base_env(), **env}, stdout=log, stderr=log)
        self.running.append((name, process))
        return process

    def log(self, name: str, *, tail: int = 3000) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")[-tail:]

    def stop_all(self) -> dict[str, int]:
        codes = {}
        for name, process in reversed(self.running):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                codes[name] = process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait(TIMEOUT)
        self.running.clear()
        return codes


def _base_env() -> dict[str, str]:
    # Nothing of the developer's own GP8_* settings leaks into the services.
    return {k: v for k, v in os.environ.items() if not k.startswith("GP8_")}


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    p = Processes(tmp_path)
    yield p
    p.stop_all()


def _gp8(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "gp8.cli", *args]  # the image's ENTRYPOINT, `gp8`


def _wait_healthy(processes: Processes, name: str, env: Mapping[str, str]) -> None:
    """Polls the image's HEALTHCHECK command until it passes."""
    deadline = time.monotonic() + TIMEOUT
    port = int(env["GP8_API__PORT"])
    while not port_open(port):
        process = dict(processes.running)[name]
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{name} did not start:\n{processes.log(name)}")
        time.sleep(0.05)
    check = subprocess.run(
        [sys.executable, "-m", "gp8.healthcheck"],
        env={**_base_env(), **env},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert check.returncode == 0, (check.stderr, processes.log(name))


def _broker_conf(t: Translation, auth_dir: str) -> Path:
    conf = MOSQUITTO_CONF.read_text(encoding="utf-8")
    conf = conf.replace("listener 8883", f"listener {t.broker_port} 127.0.0.1")
    conf = conf.replace("/mosquitto/data/", f"{t.root / 'mosquitto-data'}/")
    conf = conf.replace("/mosquitto/tls/", f"{t.root / 'tls'}/")
    conf = conf.replace("include_dir /mosquitto/gp8", f"include_dir {auth_dir}")
    if os.geteuid() == 0:
        conf += "user root\n"  # else it drops to "mosquitto", who cannot read tmp_path
    (t.root / "mosquitto-data").mkdir(exist_ok=True)
    path = t.root / "mosquitto.conf"
    path.write_text(conf)
    return path


@pytest.mark.slow
def test_every_gp8_service_runs_with_the_compose_settings(
    translation: Translation, processes: Processes
) -> None:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.skip("no mosquitto binary")
    gp8 = gp8_services()
    t = translation

    # 1. The one-shot mqtt-acl, then the broker on the files it wrote.
    acl_env = t.env("mqtt-acl", gp8["mqtt-acl"])
    acl_args = [t.value(arg) for arg in command_of(gp8["mqtt-acl"])]
    done = subprocess.run(
        _gp8(acl_args), env={**_base_env(), **acl_env}, capture_output=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stderr
    auth_dir = acl_args[acl_args.index("--out-dir") + 1]
    assert {"passwd", "acl", "gp8.conf"} <= set(os.listdir(auth_dir))
    broker = processes.start(
        "mosquitto",
        [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(_broker_conf(t, auth_dir))],
        {},
    )
    deadline = time.monotonic() + TIMEOUT
    while not port_open(t.broker_port):
        assert broker.poll() is None and time.monotonic() < deadline, processes.log("mosquitto")
        time.sleep(0.02)

    # 2. The gateway and the API, each until its HEALTHCHECK passes.
    envs = {}
    for name in ("gateway", "api"):
        envs[name] = t.env(name, gp8[name])
        processes.start(name, _gp8([t.value(a) for a in command_of(gp8[name])]), envs[name])
    for name in ("gateway", "api"):
        _wait_healthy(processes, name, envs[name])

    # 3. Each does its role: production mode, so both serve HTTPS with the compose files.
    ca = ssl.create_default_context(cafile=t.root / "tls" / "ca.crt")
    key = DOT_ENV["GP8_BOOTSTRAP_KEY"]
    with httpx.Client(verify=ca, timeout=TIMEOUT) as client:

        def get(name: str, path: str, **kw: Any) -> httpx.Response:
            return client.get(f"https://localhost:{envs[name]['GP8_API__PORT']}{path}", **kw)

        def health_when(name: str, ready: Any) -> dict[str, Any]:
            deadline = time.monotonic() + TIMEOUT
            while True:
                body: dict[str, Any] = get(name, "/health").json()
                if ready(body) or time.monotonic() > deadline:
                    return body
                time.sleep(0.05)

        gateway = health_when("gateway", lambda b: b.get("mqtt", {}).get("connected"))
        assert gateway["mqtt"]["connected"] is True, (gateway, processes.log("gateway"))
        assert "gateway" in gateway
        assert get("gateway", "/ready").status_code == 200  # served in the gateway role too
        assert (
            get("gateway", "/v1/fleets", headers={"Authorization": f"Bearer {key}"}).status_code
            == 404
        )
        assert port_open(int(envs["gateway"]["GP8_TCP__PORT"]))

        api = get("api", "/health").json()
        assert "gateway" not in api and "mqtt" not in api
        assert get("api", "/ready").status_code == 200
        fleets = get("api", "/v1/fleets", headers={"Authorization": f"Bearer {key}"})
        assert fleets.status_code == 200, fleets.text
        assert not port_open(int(envs["api"]["GP8_TCP__PORT"]))

    # 4. SIGTERM (docker stop) is a clean shutdown.
    codes = processes.stop_all()
    assert codes["gateway"] == 0 and codes["api"] == 0, codes
    # And the logs were JSON lines, naming no secret.
    for name in ("gateway", "api"):
        text = processes.log(name, tail=10**7)
        assert DOT_ENV["GP8_MQTT__PASSWORD"] not in text and key not in text
        lines = [json.loads(line) for line in text.splitlines()]
        assert any(line["logger"] == "gp8.serve" for line in lines), name
