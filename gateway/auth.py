"""The LOGIN check: is this a provisioned, active box that holds its secret, right now?

Order of the checks: unknown IMEI, replayed proof, bad proof, disabled device. "Disabled" is only
told to a box that proved it holds the secret, so a stranger cannot probe which boxes are
disabled. The proof covers the connection's own nonce, so a LOGIN captured on one connection
fails the proof on any other; the cache of recently accepted proofs lets us name that case
(REPLAY) instead of calling it a bad secret, which is what an operator needs to know.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass

from gateway.metrics import GatewayMetrics
from gateway.ports import DeviceDirectory
from protocol.gp8 import Login, LoginStatus, verify_login_proof
from storage.errors import StorageError
from storage.models import Device, DeviceProtocol, DeviceStatus

log = logging.getLogger(__name__)

# Proofs are 32 random-looking bytes, ~150 bytes each with the dict's overhead: 65,536 of them
# is ~10 MiB and covers every login of a 20,000-box fleet reconnecting three times over.
REPLAY_CACHE_SIZE = 65_536
# The device lookup is one indexed read; past this the store is not answering.
LOOKUP_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class LoginOutcome:
    status: LoginStatus
    device: Device | None = None  # set when status is OK

    @property
    def ok(self) -> bool:
        return self.status is LoginStatus.OK


class LoginChecker:
    def __init__(
        self,
        devices: DeviceDirectory,
        *,
        metrics: GatewayMetrics | None = None,
        replay_cache_size: int = REPLAY_CACHE_SIZE,
        lookup_timeout_s: float = LOOKUP_TIMEOUT_S,
    ) -> None:
        self._devices = devices
        self.metrics = metrics if metrics is not None else GatewayMetrics()
        self._recent: OrderedDict[bytes, None] = OrderedDict()
        self._cache_size = replay_cache_size
        self._lookup_timeout_s = lookup_timeout_s

    async def check(self, login: Login, nonce: bytes, *, peer: str = "?") -> LoginOutcome:
        """Decide on ``login`` received on the connection whose CHALLENGE carried ``nonce``.

        Counts the outcome and logs refusals with IMEI and peer; never raises for bad input.
        """
        outcome = await self._decide(login, nonce)
        self.metrics.logins[outcome.status.name.lower()] += 1
        if outcome.ok:
            self._remember(login.proof)
            log.info("login ok: imei=%s peer=%s", login.imei, peer)
        else:
            log.warning(
                "login refused (%s): imei=%s peer=%s", outcome.status.name, login.imei, peer
            )
        return outcome

    async def _decide(self, login: Login, nonce: bytes) -> LoginOutcome:
        try:
            async with asyncio.timeout(self._lookup_timeout_s):
                device = await self._devices.get_by_imei(login.imei)
        except (StorageError, TimeoutError) as exc:
            log.warning("login: device lookup for %s failed: %r", login.imei, exc)
            return LoginOutcome(LoginStatus.SERVER_BUSY)
        if device is None or device.protocol is not DeviceProtocol.GP8:
            # A Teltonika box has no secret: a proof keyed on its empty one proves nothing.
            return LoginOutcome(LoginStatus.UNKNOWN_DEVICE)
        if login.proof in self._recent:
            return LoginOutcome(LoginStatus.REPLAY)
        if not verify_login_proof(device.secret, nonce, login.imei, login.model, login.proof):
            return LoginOutcome(LoginStatus.BAD_PROOF)
        if device.status != DeviceStatus.ACTIVE:
            return LoginOutcome(LoginStatus.DEVICE_DISABLED)
        if login.model.name != str(device.model):
            # The proof covers the model the box claims, so this is the box itself reporting a
            # different model than was provisioned: worth a look, not worth refusing data.
            log.warning(
                "login: imei=%s says %s, provisioned as %s",
                login.imei,
                login.model.name,
                device.model,
            )
        return LoginOutcome(LoginStatus.OK, device)

    def _remember(self, proof: bytes) -> None:
        self._recent[proof] = None
        if len(self._recent) > self._cache_size:
            self._recent.popitem(last=False)
