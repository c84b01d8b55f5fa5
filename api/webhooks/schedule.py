"""When a failed webhook delivery is tried again (docs/alerts.md, "Webhooks").

Exponential back-off capped at 8 hours, with jitter so that many deliveries failing together
(a receiver's outage) do not all come back at the same instant. Twelve attempts over about
31.7 hours; even with every delay drawn at its shortest the last attempt comes more than 24
hours after the first, the window the Standard Webhooks specification asks for.
"""

from __future__ import annotations

import random
from datetime import UTC
from email.utils import parsedate_to_datetime

# Delay after the 1st, 2nd, ... failed attempt; after the last one the delivery has failed.
RETRY_DELAYS_S: tuple[int, ...] = (
    5,
    30,
    2 * 60,
    10 * 60,
    30 * 60,
    3600,
    2 * 3600,
    4 * 3600,
    8 * 3600,
    8 * 3600,
    8 * 3600,
)
MAX_ATTEMPTS = len(RETRY_DELAYS_S) + 1
# Each delay is drawn within ±JITTER of its nominal value.
JITTER = 0.1
# A receiver's Retry-After is honoured up to the longest delay of the schedule.
MAX_DELAY_S = max(RETRY_DELAYS_S)


def retry_delay_ms(
    failed_attempts: int, rng: random.Random, *, retry_after_s: float | None = None
) -> int | None:
    """How long to wait after ``failed_attempts`` failed attempts (1 after the first); None
    when the schedule is exhausted. A ``Retry-After`` asking for longer is honoured, capped."""
    if not 1 <= failed_attempts <= len(RETRY_DELAYS_S):
        return None
    delay_s = RETRY_DELAYS_S[failed_attempts - 1] * (1 + rng.uniform(-JITTER, JITTER))
    if retry_after_s is not None:
        delay_s = max(delay_s, min(retry_after_s, MAX_DELAY_S))
    return round(delay_s * 1000)


def parse_retry_after(value: str | None, now_ms: int) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date); None when
    absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now_ms / 1000)
