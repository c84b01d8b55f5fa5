"""The MQTT topic layout of GP8 (docs/protocol.md §7, docs/mqtt.md): part of the protocol, so a
box (the simulator) and the gateway share one definition.

One subtree per box, named by its IMEI, so that a broker ACL can give each box exactly its own
topics: it writes ``gp8/{imei}/up`` and ``gp8/{imei}/status`` and reads ``gp8/{imei}/down`` and
``gp8/{imei}/ack``. The status topic carries the box's broker presence (docs/protocol.md §7.6):
a retained birth message published on connect and the same topic as its last will.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

ROOT = "gp8"
UP = "up"  # box → gp8: IDENT + data frames
DOWN = "down"  # gp8 → box: COMMAND frames
ACK = "ack"  # gp8 → box: ACK/NACK frames answering the box's frames
STATUS = "status"  # box → gp8, retained: birth on connect, last will on an unclean end
# A status payload is a small JSON object; anything longer is not one.
MAX_STATUS_SIZE = 128

_IMEI = re.compile(r"[0-9]{15}")


def up_topic(imei: str) -> str:
    return f"{ROOT}/{imei}/{UP}"


def down_topic(imei: str) -> str:
    return f"{ROOT}/{imei}/{DOWN}"


def ack_topic(imei: str) -> str:
    return f"{ROOT}/{imei}/{ACK}"


def status_topic(imei: str) -> str:
    return f"{ROOT}/{imei}/{STATUS}"


def status_filter() -> str:
    """Every box's status: each gateway subscribes to it whole (not shared), so that every one
    knows which boxes the broker holds."""
    return f"{ROOT}/+/{STATUS}"


@dataclass(frozen=True, slots=True)
class BoxStatus:
    """What a box says of its broker connection (§7.6). ``session`` orders its connections:
    the box's clock (ms since the epoch) when it connected, greater for each connection; the
    will carries the session it ends."""

    online: bool
    session: int

    def encode(self) -> bytes:
        return json.dumps({"online": self.online, "session": self.session}).encode()

    @classmethod
    def decode(cls, payload: bytes) -> BoxStatus | None:
        """The status in ``payload``, or None when it is not one (the box's bytes: untrusted)."""
        if len(payload) > MAX_STATUS_SIZE:
            return None
        try:
            fields = json.loads(payload)
        except ValueError:
            return None
        if not isinstance(fields, dict):
            return None
        online, session = fields.get("online"), fields.get("session")
        # bool is an int in Python: refuse it as a session.
        if not isinstance(online, bool) or type(session) is not int or session < 0:
            return None
        return cls(online, session)


def imei_of_status_topic(topic: str) -> str | None:
    """The IMEI in ``gp8/{imei}/status``, or None."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != ROOT or parts[2] != STATUS:
        return None
    return parts[1] if _IMEI.fullmatch(parts[1]) else None


def up_filter() -> str:
    """Every box's uplink."""
    return f"{ROOT}/+/{UP}"


def shared_up_filter(group: str) -> str:
    """The uplink filter shared by the gateways of ``group``: the broker hands each message
    to exactly one of the group's subscribers (MQTT 5 §4.8.2, Mosquitto ≥ 1.6)."""
    if not group or any(c in group for c in "/+#"):
        raise ValueError(f"invalid share group name {group!r}")
    return f"$share/{group}/{up_filter()}"


def imei_of_up_topic(topic: str) -> str | None:
    """The IMEI in ``gp8/{imei}/up``, or None when the topic is not a box uplink."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != ROOT or parts[2] != UP:
        return None
    imei = parts[1]
    return imei if _IMEI.fullmatch(imei) else None


def imei_of_box_topic(topic: str) -> tuple[str, str] | None:
    """(imei, kind) for ``gp8/{imei}/down`` or ``gp8/{imei}/ack``, as a box sees them."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != ROOT or parts[2] not in (DOWN, ACK):
        return None
    return (parts[1], parts[2]) if _IMEI.fullmatch(parts[1]) else None
