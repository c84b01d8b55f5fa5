"""Counters of the MQTT bridge, beside the TCP gateway's (gateway/metrics.py).

What the device-session core counts (frames, frame errors, rejected records, NACKs) comes from
`SessionMetrics`, as on TCP; records stored and found duplicate are counted by the shared ingest
pipeline in the gateway's `GatewayMetrics`, for both transports together. The rest is what only
the MQTT link knows.
"""

from __future__ import annotations

from collections import Counter

from gateway.metrics import Field, SessionMetrics, snapshot_of


class MqttMetrics(SessionMetrics):
    FIELDS = (
        Field("connected", "connected", "gauge", "1 while connected to the broker."),
        Field("connects", "connects_total", "counter", "Connections to the broker."),
        Field(
            "connect_failures", "connect_failures_total", "counter", "Failed connection attempts."
        ),
        Field("disconnects", "disconnects_total", "counter", "Connections lost."),
        Field("messages", "messages_total", "counter", "Uplink messages received."),
        Field("accepted", "accepted_total", "counter", "Uplink messages processed."),
        Field("dropped", "dropped", "counter", "Uplink messages dropped whole.", "reason"),
        *SessionMetrics.FIELDS,
        Field("store_retries", "store_retries_total", "counter", "Storage retries."),
        Field("publish_failures", "publish_failures_total", "counter", "Unconfirmed publications."),
        Field("commands_sent", "commands_sent_total", "counter", "COMMAND frames published."),
        Field(
            "statuses",
            "statuses",
            "counter",
            "Box status messages (birth, will) by what they said.",
            "state",
        ),
        Field(
            "unacked_on_disconnect",
            "unacked_on_disconnect_total",
            "counter",
            "Messages left for the broker to resend when a connection dropped.",
        ),
    )

    def __init__(self) -> None:
        super().__init__()
        self.connected = False
        self.connects = 0  # successful connections to the broker
        self.connect_failures = 0
        self.disconnects = 0  # connections lost (not counting our own stop)
        self.messages = 0  # uplink messages received (redeliveries included)
        self.accepted = 0  # uplink messages processed and acknowledged
        # Uplink messages dropped whole, by reason: imei_mismatch, unknown_device,
        # device_disabled, no_ident, too_large, bad_topic, internal_error.
        self.dropped: Counter[str] = Counter()
        self.store_retries = 0  # submissions retried while storage was unavailable
        self.publish_failures = 0  # ACK/command publications the broker did not confirm
        self.commands_sent = 0
        # Box status messages (docs/protocol.md §7.6) by state: online, offline (its will),
        # left (cleared as it disconnected cleanly); and those ignored: invalid,
        # unknown_device.
        self.statuses: Counter[str] = Counter()
        self.unacked_on_disconnect = 0  # messages the broker will resend after a reconnect

    def snapshot(self) -> dict[str, object]:
        return snapshot_of(self)
