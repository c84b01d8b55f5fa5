"""A virtual GP8 box over MQTT (docs/protocol.md §7): simulator.box's box on an MQTT link.

It logs in to the broker with its IMEI and the password derived from its secret, publishes
IDENT + one frame per message on ``gp8/{imei}/up`` and reads its answers and commands on
``gp8/{imei}/ack`` and ``gp8/{imei}/down`` (simulator.mqtt_link). Everything else — the
outbox, NACKs, ACK timeouts, commands, heartbeats — is the same box as over TCP.
"""

from __future__ import annotations

from typing import Any

from protocol.gp8 import mqtt_password
from simulator.box import Box
from simulator.links import Link
from simulator.mqtt_link import SESSION_EXPIRY_S, Broker, MqttLink, MqttLogin

__all__ = ["SESSION_EXPIRY_S", "MqttBox"]


class MqttBox(Box):
    DEFAULT_PORT = 1883
    tls = False
    # Who the box is to the broker; None: itself, with the password derived from its secret
    # (§7.2) and a day-long session.
    login: MqttLogin | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        imei: str,
        secret: str,
        *,
        session_expiry_s: int = SESSION_EXPIRY_S,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        publish_status: bool = True,
        **options: Any,
    ) -> MqttBox:
        """A box for the broker at ``mqtt://host:port`` or ``mqtts://`` (user and password in
        the URL are ignored: a box logs in as itself unless told otherwise). ``publish_status``:
        its birth message and last will (§7.6); False for a box of older firmware."""
        broker = Broker.from_url(url)
        box = cls(imei, secret, host=broker.host, port=broker.port, **options)
        box.tls = broker.tls
        box.login = MqttLogin(
            username=imei if username is None else username,
            password=mqtt_password(secret) if password is None else password,
            client_id=imei if client_id is None else client_id,
            session_expiry_s=session_expiry_s,
            publish_status=publish_status,
        )
        return box

    async def _open_link(self) -> Link:
        login = self.login or MqttLogin(self.imei, mqtt_password(self.secret), self.imei)
        broker = Broker(self.host, self.port, self.tls)
        return await MqttLink.open(broker, self.imei, login, io_timeout_s=self.io_timeout_s)
