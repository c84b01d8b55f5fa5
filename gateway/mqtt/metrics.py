"""Counters of the MQTT bridge, beside the TCP gateway's (gateway/metrics.py).

Records stored and found duplicate are counted by the shared ingest pipeline in the gateway's
`GatewayMetrics`, for both transports together; these are what only the MQTT path knows.
"""

from __future__ import annotations

from collections import Counter

_PREFIX = "gp8_mqtt_"


class MqttMetrics:
    def __init__(self) -> None:
        self.connected = False
        self.connects = 0  # successful connections to the broker
        self.connect_failures = 0
        self.disconnects = 0  # connections lost (not counting our own stop)
        self.messages = 0  # uplink messages received (redeliveries included)
        self.accepted = 0  # uplink messages processed and acknowledged
        # Uplink messages dropped whole, by reason: imei_mismatch, unknown_device,
        # device_disabled, no_ident, too_large, bad_topic, lookup_failed.
        self.dropped: Counter[str] = Counter()
        self.frames: Counter[str] = Counter()  # good frames after the IDENT, by type
        self.frame_errors: Counter[str] = Counter()  # FrameError.reason, unexpected_message
        self.records_rejected: Counter[str] = Counter()  # by RecordRejection value
        self.nacks: Counter[str] = Counter()  # NACKs published, by reason
        self.store_retries = 0  # submissions retried while storage was unavailable
        self.publish_failures = 0  # ACK/command publications the broker did not confirm
        self.commands_sent = 0
        self.unacked_on_disconnect = 0  # messages the broker will resend after a reconnect

    def snapshot(self) -> dict[str, object]:
        """Plain JSON-ready values, for GET /health."""
        return {
            "connected": self.connected,
            "connects": self.connects,
            "connect_failures": self.connect_failures,
            "disconnects": self.disconnects,
            "messages": self.messages,
            "accepted": self.accepted,
            "dropped": dict(self.dropped),
            "frames": dict(self.frames),
            "frame_errors": dict(self.frame_errors),
            "records_rejected": dict(self.records_rejected),
            "nacks": dict(self.nacks),
            "store_retries": self.store_retries,
            "publish_failures": self.publish_failures,
            "commands_sent": self.commands_sent,
            "unacked_on_disconnect": self.unacked_on_disconnect,
        }

    def render_prometheus(self) -> str:
        """The counters in the Prometheus text exposition format (version 0.0.4)."""
        lines: list[str] = []

        def scalar(name: str, kind: str, help_: str, value: float) -> None:
            lines.extend((f"# HELP {_PREFIX}{name} {help_}", f"# TYPE {_PREFIX}{name} {kind}"))
            lines.append(f"{_PREFIX}{name} {value}")

        def labelled(name: str, label: str, help_: str, values: Counter[str]) -> None:
            lines.extend((f"# HELP {_PREFIX}{name} {help_}", f"# TYPE {_PREFIX}{name} counter"))
            for key, value in sorted(values.items()):
                lines.append(f'{_PREFIX}{name}{{{label}="{key}"}} {value}')

        scalar("connected", "gauge", "1 while connected to the broker.", int(self.connected))
        scalar("connects_total", "counter", "Connections to the broker.", self.connects)
        scalar(
            "connect_failures_total",
            "counter",
            "Failed connection attempts.",
            self.connect_failures,
        )
        scalar("disconnects_total", "counter", "Connections lost.", self.disconnects)
        scalar("messages_total", "counter", "Uplink messages received.", self.messages)
        scalar("accepted_total", "counter", "Uplink messages processed.", self.accepted)
        labelled("dropped_total", "reason", "Uplink messages dropped whole.", self.dropped)
        labelled("frames_total", "type", "Well-formed uplink frames by type.", self.frames)
        labelled("frame_errors_total", "reason", "Rejected uplink frames.", self.frame_errors)
        labelled(
            "records_rejected_total", "reason", "Impossible records dropped.", self.records_rejected
        )
        labelled("nacks_total", "reason", "NACKs published by reason.", self.nacks)
        scalar("store_retries_total", "counter", "Storage retries.", self.store_retries)
        scalar(
            "publish_failures_total", "counter", "Unconfirmed publications.", self.publish_failures
        )
        scalar("commands_sent_total", "counter", "COMMAND frames published.", self.commands_sent)
        return "\n".join(lines) + "\n"
