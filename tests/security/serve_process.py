"""A real `gp8 serve` in a subprocess, a provisioned box, and a raw GP8 box client.

The attack tests (and bench/bench_api_isolation.py) run against the process an operator runs:
its own event loop, its own file-descriptor limit, uvicorn as configured in gp8/serve.py. Ports
are picked by the kernel (port 0) and read from the start-up log lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from protocol.gp8 import (
    Ack,
    Challenge,
    FrameDecoder,
    Login,
    LoginResult,
    LoginStatus,
    Message,
    Model,
    Position,
    PositionRecord,
    encode,
    login_proof,
)
from simulator.records import make_record

OPERATOR_KEY = "gp8_security-operator-key-0123456789abcdefghijkl"
START_TIMEOUT_S = 30.0
IO_TIMEOUT_S = 10.0
GP8 = Path(sys.executable).with_name("gp8")
_GP8_PORT = re.compile(r"GP8 boxes on [^ ]+:(\d+)")
_API_PORT = re.compile(r"API on [^ ]+:(\d+) \(")
_TELTONIKA_PORT = re.compile(r"teltonika boxes on [\d.]+:(\d+)")


@dataclass
class ServeProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    tcp_port: int
    api_port: int
    teltonika_port: int | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM (the graceful shutdown), then SIGKILL if it does not end within 30 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def _in_child(nofile: int | None, nice: int) -> Callable[[], None]:
    def apply() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        if nice:
            os.nice(nice)

    return apply


def spawn_serve(
    data_dir: Path,
    env: dict[str, str] | None = None,
    *,
    nofile: int | None = None,
    teltonika: bool = False,
    log_name: str = "serve.log",
    nice: int = 0,
) -> tuple[subprocess.Popen[bytes], Path]:
    """`gp8 serve` on loopback, SQLite in ``data_dir``, ``env`` (GP8_*) on top; ``nofile``
    lowers its file-descriptor limit; ``teltonika`` opens the Teltonika listener too; its log
    goes to ``data_dir/log_name``; ``nice`` lowers its CPU priority."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / log_name
    full_env = {
        **os.environ,
        "GP8_DATA_DIR": str(data_dir),
        "GP8_TCP__HOST": "127.0.0.1",
        "GP8_TCP__PORT": "0",
        "GP8_API__HOST": "127.0.0.1",
        "GP8_API__PORT": "0",
        "GP8_BOOTSTRAP_KEY": OPERATOR_KEY,
        "GP8_LOG_FORMAT": "text",
        "GP8_LOG_LEVEL": "info",
        "GP8_WEBHOOKS__ENABLED": "false",
        **({"GP8_TELTONIKA__PORT": "0"} if teltonika else {}),
        **(env or {}),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(GP8), "serve"],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_in_child(nofile, nice) if nofile is not None or nice else None,
        )
    return process, log_path


def _started(
    process: subprocess.Popen[bytes], log_path: Path, boxes: bool, teltonika: bool
) -> ServeProcess | None:
    text = log_path.read_text(errors="replace")
    tcp, api = _GP8_PORT.search(text), _API_PORT.search(text)
    tel = _TELTONIKA_PORT.search(text)
    if not (api and (tcp or not boxes) and (tel or not teltonika)):
        return None
    tcp_port = int(tcp.group(1)) if tcp else 0
    port = int(tel.group(1)) if tel else None
    return ServeProcess(process, log_path, tcp_port, int(api.group(1)), port)


async def start_serve(
    data_dir: Path,
    env: dict[str, str] | None = None,
    *,
    nofile: int | None = None,
    teltonika: bool = False,
    log_name: str = "serve.log",
    nice: int = 0,
) -> ServeProcess:
    """`spawn_serve`, then wait until it listens (its ports are in the log)."""
    process, log_path = spawn_serve(
        data_dir, env, nofile=nofile, teltonika=teltonika, log_name=log_name, nice=nice
    )
    boxes = (env or {}).get("GP8_ROLE") != "api"  # role api opens no box listener
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        started = _started(process, log_path, boxes, teltonika)
        if started is not None:
            return started
        if process.poll() is not None:
            break
        await asyncio.sleep(0.05)
    process.kill()
    process.wait(10)
    raise RuntimeError(f"gp8 serve did not start:\n{log_path.read_text(errors='replace')}")


@dataclass(frozen=True)
class Provisioned:
    fleet_id: str
    admin_key: str
    vehicle_id: str
    imei: str
    secret: str


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def provision(api: str, imei: str = "490154203237518") -> Provisioned:
    """A fleet, its admin key, a vehicle and a GP8 box fitted to it, through the API."""
    op = auth(OPERATOR_KEY)
    async with httpx.AsyncClient(base_url=api, timeout=IO_TIMEOUT_S) as http:
        r = await http.post("/v1/fleets", json={"name": "security"}, headers=op)
        assert r.status_code == 201, r.text
        fleet_id = r.json()["id"]
        r = await http.post(
            f"/v1/fleets/{fleet_id}/keys",
            json={"role": "admin", "name": "admin", "email": "admin@example.com"},
            headers=op,
        )
        assert r.status_code == 201, r.text
        admin = r.json()["key"]
        body = {"vin": "1M8GDM9AXKP042788", "plate": "SEC-1", "label": "van"}
        r = await http.post("/v1/vehicles", json=body, headers=auth(admin))
        assert r.status_code == 201, r.text
        vehicle_id = r.json()["id"]
        body = {"imei": imei, "model": "GP8000"}
        r = await http.post("/v1/devices", json=body, headers=auth(admin))
        assert r.status_code == 201, r.text
        secret = r.json()["secret"]
        r = await http.put(
            f"/v1/vehicles/{vehicle_id}/device", json={"imei": imei}, headers=auth(admin)
        )
        assert r.status_code == 200, r.text
    return Provisioned(fleet_id, admin, vehicle_id, imei, secret)


class RawBox:
    """A GP8 box reduced to what the tests need: LOGIN, one POSITION at a time, its ACK."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = FrameDecoder()
        self.seq = 0
        self.nonce = b""

    @classmethod
    async def connect(cls, port: int, source: str = "127.0.0.1") -> RawBox:
        """Connected from ``source`` (any 127.x address: loopback gives tests many sources)."""
        async with asyncio.timeout(IO_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(source, 0)
            )
            box = cls(reader, writer)
            challenge = await box.receive()
        assert isinstance(challenge, Challenge), challenge
        box.nonce = challenge.nonce
        return box

    async def receive(self) -> Message:
        """The next message from the server; EOFError if the server closed the link."""
        async with asyncio.timeout(IO_TIMEOUT_S):
            while True:
                for item in self.decoder:
                    if isinstance(item, Exception):
                        raise item
                    return item
                data = await self.reader.read(65536)
                if not data:
                    raise EOFError("the server closed the connection")
                self.decoder.feed(data)

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    async def login(self, imei: str, secret: str) -> LoginStatus:
        proof = login_proof(secret, self.nonce, imei, Model.GP8000)
        self.writer.write(encode(Login(self._next_seq(), imei, Model.GP8000, (1, 0, 0), proof)))
        reply = await self.receive()
        assert isinstance(reply, LoginResult), reply
        return reply.status

    async def position(self, time_ms: int) -> float:
        """Send one position; seconds until its ACK came back."""
        return await self.records((make_record(time_ms, 48.8566, 2.3522, speed_kmh=30.0),))

    def frame(self, records: tuple[PositionRecord, ...]) -> bytes:
        """A POSITION frame of ``records`` with the next sequence number."""
        return encode(Position(self._next_seq(), records))

    async def records(self, records: tuple[PositionRecord, ...]) -> float:
        """Send one POSITION frame of ``records``; seconds until its ACK came back."""
        frame = self.frame(records)
        seq = self.seq
        started = time.perf_counter()
        self.writer.write(frame)
        while True:
            reply = await self.receive()
            if isinstance(reply, Ack) and reply.acked_seq == seq:
                return time.perf_counter() - started

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
