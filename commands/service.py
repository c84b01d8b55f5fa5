"""`CommandService`: the one object a process wires (docs/commands.md, "Transports and
processes"). It builds the parts and forwards to them; it decides nothing itself.

* the API calls the use cases (`Requests`: create, cancel, approve, policies, kill switch,
  alerts);
* the transports register as `Sender`s and call the box hooks: ``on_box_online(imei)`` once a
  login was answered, ``on_box_reply(imei, message)`` for each COMMAND_RESULT and ACK/NACK of
  a COMMAND (`Replies`), ``on_duplicate_login(...)`` (`Alerts`);
* `start` runs the sweeper (`Delivery`: expiry and polling for other processes' commands).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

from commands.alerts import Alerts
from commands.clock import SYSTEM_CLOCK, Clock
from commands.context import CommandContext
from commands.delivery import DELIVERY_WAIT_S, RESEND_AFTER_S, SWEEP_INTERVAL_S, Delivery
from commands.kill_switch import KillSwitchView
from commands.metrics import CommandMetrics
from commands.ports import CommandStore, Listener, Sender
from commands.replies import BoxReply, Replies
from commands.requests import BulkOutcome, BulkRequest, CommandRequest, Requester, Requests
from storage.models import Alert, CommandPolicy, CommandRecord, Device, KillSwitch

# Deliveries under way when the service stops get this long to finish.
STOP_GRACE_S = 2.0


class CommandService:
    def __init__(
        self,
        store: CommandStore,
        *,
        gateway_id: str = "api",
        clock: Clock = SYSTEM_CLOCK,
        sweep_interval_s: float = SWEEP_INTERVAL_S,
        resend_after_s: float = RESEND_AFTER_S,
        delivery_wait_s: float = DELIVERY_WAIT_S,
    ) -> None:
        self.store = store
        self.gateway_id = gateway_id
        self._ctx = CommandContext(store, clock, gateway_id)
        kill_switch = KillSwitchView(store.policies, clock)
        self.alerts = Alerts(self._ctx)
        self.delivery = Delivery(
            self._ctx,
            self.alerts,
            kill_switch,
            resend_after_s=resend_after_s,
            delivery_wait_s=delivery_wait_s,
        )
        self.replies = Replies(self._ctx, self.delivery, self.alerts)
        self.requests = Requests(self._ctx, self.delivery, self.alerts, kill_switch)
        self._sweep_interval_s = sweep_interval_s
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def metrics(self) -> CommandMetrics:
        """A prometheus-client collector of this service's counters."""
        return self._ctx.metrics

    @property
    def stats(self) -> Counter[str]:
        """The service's event counters (also in GET /health and ``metrics``)."""
        return self._ctx.stats

    # --- wiring and lifetime --------------------------------------------------------------

    def add_sender(self, sender: Sender) -> None:
        self.delivery.senders.append(sender)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(command)`` after each stored change (benchmarks, push feeds)."""
        self._ctx.listeners.append(listener)

    async def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(
                self.delivery.sweep_forever(self._sweep_interval_s), name="gp8-commands"
            )

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop the sweeper; deliveries under way get ``grace_s`` to finish (an interrupted
        one leaves its command sent, to go again at the box's next login)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                await self.settle()
        await self._ctx.cancel_all()

    async def settle(self) -> None:
        """Wait until the deliveries started in the background are done."""
        await self._ctx.settle()

    def health(self) -> dict[str, object]:
        senders = len(self.delivery.senders)
        return {"gateway_id": self.gateway_id, "senders": senders, **self._ctx.stats}

    # --- API side -------------------------------------------------------------------------

    async def create(
        self, requester: Requester, request: CommandRequest
    ) -> tuple[CommandRecord, bool]:
        return await self.requests.create(requester, request)

    async def create_bulk(self, requester: Requester, bulk: BulkRequest) -> list[BulkOutcome]:
        return await self.requests.create_bulk(requester, bulk)

    async def cancel(self, requester: Requester, command_id: str) -> CommandRecord:
        return await self.requests.cancel(requester, command_id)

    async def approve(self, requester: Requester, command_id: str) -> CommandRecord:
        return await self.requests.approve(requester, command_id)

    async def set_policy(
        self, key_id: str, fleet_id: str, *, four_eyes: bool, engine_start_cap_per_hour: int | None
    ) -> CommandPolicy:
        cap = engine_start_cap_per_hour
        return await self.requests.set_policy(
            key_id, fleet_id, four_eyes=four_eyes, engine_start_cap_per_hour=cap
        )

    async def kill_switch(self) -> KillSwitch:
        return await self.requests.kill_switch()

    async def set_kill_switch(self, key_id: str, *, engaged: bool, reason: str) -> KillSwitch:
        return await self.requests.set_kill_switch(key_id, engaged=engaged, reason=reason)

    async def clear_alert(self, requester: Requester, alert_id: str, reason: str = "") -> Alert:
        return await self.requests.clear_alert(requester, alert_id, reason)

    # --- box side: the transports' hooks --------------------------------------------------

    async def on_box_online(self, imei: str) -> None:
        """The box logged in and was answered: a new session, so everything pending goes."""
        self.delivery.new_session(imei)

    async def on_box_reply(self, imei: str, message: BoxReply) -> None:
        """A COMMAND_RESULT, or the ACK/NACK of a COMMAND; stored before the box is ACKed."""
        await self.replies.on_box_reply(imei, message)

    async def on_duplicate_login(
        self, imei: str, *, old_remote: str, new_remote: str, idle_s: float
    ) -> None:
        """A second login claimed ``imei`` while its session was live: alert and freeze."""
        await self.alerts.on_duplicate_login(
            imei, old_remote=old_remote, new_remote=new_remote, idle_s=idle_s
        )

    # --- periodic work (the sweeper runs these; tests call them directly) ------------------

    async def expire_due(self) -> int:
        return await self.delivery.expire_due()

    async def poll(self) -> int:
        return await self.delivery.poll()

    async def deliver(self, imei: str, device: Device | None = None) -> list[CommandRecord]:
        return await self.delivery.deliver(imei, device)
