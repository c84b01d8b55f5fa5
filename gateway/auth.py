"""The LOGIN check: is this a provisioned, active box that holds its secret, right now?

Order of the checks: unknown IMEI, replayed proof, bad proof, disabled device. "Disabled" is only
told to a box that proved it holds the secret, so a stranger cannot probe which boxes are
disabled. The proof covers the connection's own nonce, so a LOGIN captured on one connection
fails the proof on any other; the cache of recently accepted proofs lets us name that case
(REPLAY) instead of calling it a bad secret, which is what an operator needs to know.

Failed logins (unknown IMEI, replay, bad proof) are counted by (source address, IMEI) and by
source address (`throttle.AuthThrottle`); a locked-out pair or source is answered SERVER_BUSY
without a check, so guesses from it tell nothing, while the genuine box from its own address logs
in as usual. UNKNOWN_DEVICE tells a stranger which IMEIs are provisioned; ``hide_unknown_device``
answers it as BAD_PROOF instead (docs/security.md, "Failed authentication").
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
from throttle import AuthThrottle

log = logging.getLogger(__name__)

# Proofs are 32 random-looking bytes, ~150 bytes each with the dict's overhead: 65,536 of them
# is ~10 MiB and covers every login of a 20,000-box fleet reconnecting three times over.
REPLAY_CACHE_SIZE = 65_536
# The device lookup is one indexed read; past this the store is not answering.
LOOKUP_TIMEOUT_S = 10.0


# Outcomes that count as a failed attempt: the ones a guesser gets (GP8; Teltonika's IMEI-only
# login fails as unknown_device, wrong_protocol or device_disabled).
_FAILURE_LABELS = frozenset(
    {"unknown_device", "bad_proof", "replay", "wrong_protocol", "device_disabled"}
)


@dataclass(frozen=True, slots=True)
class LoginGuard:
    """Failed-login throttling for one listener's logins, counted and logged the same way
    whatever the protocol (GP8's LOGIN here, Teltonika's IMEI in gateway/adapters/)."""

    throttle: AuthThrottle | None
    metrics: GatewayMetrics

    def wait(self, source: str, imei: str) -> float | None:
        """Seconds this source must wait before trying this IMEI again; None: it may now."""
        return None if self.throttle is None else self.throttle.refused(source, imei)

    def settle(self, source: str, imei: str, label: str, *, ok: bool) -> None:
        """Count the outcome of a checked (not throttled) attempt against the throttle."""
        throttle = self.throttle
        if throttle is None:
            return
        if ok:
            throttle.succeeded(source, imei)
            return
        if label not in _FAILURE_LABELS:
            return  # server_busy: not the guesser's doing
        locked = throttle.failed(source, imei)
        if locked is not None:
            self.metrics.login_lockouts[locked] += 1
            log.warning(
                "login lock-out (%s) for %.0f s: imei=%s source=%s",
                locked,
                throttle.refused(source, imei) or 0.0,
                imei,
                source,
            )


@dataclass(frozen=True, slots=True)
class LoginOutcome:
    status: LoginStatus  # what the box is answered
    device: Device | None = None  # set when status is OK
    label: str = ""  # for metrics and logs when it differs from the answer: "throttled", ...

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
        throttle: AuthThrottle | None = None,
        hide_unknown_device: bool = False,
    ) -> None:
        self._devices = devices
        self._hide_unknown = hide_unknown_device
        self.metrics = metrics if metrics is not None else GatewayMetrics()
        self._guard = LoginGuard(throttle, self.metrics)
        self._recent: OrderedDict[bytes, None] = OrderedDict()
        self._cache_size = replay_cache_size
        self._lookup_timeout_s = lookup_timeout_s

    async def check(self, login: Login, nonce: bytes, *, peer: str = "?") -> LoginOutcome:
        """Decide on ``login`` received on the connection whose CHALLENGE carried ``nonce``.

        Counts the outcome and logs refusals with IMEI and peer; never raises for bad input.
        """
        source = source_address(peer)
        throttled = self._guard.wait(source, login.imei) is not None
        if throttled:
            outcome = LoginOutcome(LoginStatus.SERVER_BUSY, label="throttled")
        else:
            outcome = await self._decide(login, nonce)
        label = outcome.label or outcome.status.name.lower()
        self.metrics.logins[label] += 1
        if outcome.ok:
            self._remember(login.proof)
            log.info("login ok: imei=%s peer=%s", login.imei, peer)
        else:
            log.warning("login refused (%s): imei=%s peer=%s", label, login.imei, peer)
        if not throttled:
            self._guard.settle(source, login.imei, outcome.label, ok=outcome.ok)
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
            wire = LoginStatus.BAD_PROOF if self._hide_unknown else LoginStatus.UNKNOWN_DEVICE
            return LoginOutcome(wire, label="unknown_device")
        if login.proof in self._recent:
            return LoginOutcome(LoginStatus.REPLAY, label="replay")
        if not verify_login_proof(device.secret, nonce, login.imei, login.model, login.proof):
            return LoginOutcome(LoginStatus.BAD_PROOF, label="bad_proof")
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


def source_address(peer: str) -> str:
    """The address part of a ``host:port`` peer (IPv6 hosts keep their colons)."""
    host, sep, _ = peer.rpartition(":")
    return host if sep else peer
