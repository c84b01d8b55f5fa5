"""Throttling of failed authentication, shared by the API (API keys) and the gateway (box logins).

Sans-IO and clock-injected, so both layers use one definition and tests control time; it imports
nothing of gp8 (tests/test_layers.py). docs/security.md, "Failed authentication", says why the
counters are keyed as they are.
"""

from __future__ import annotations

from throttle.failures import AuthThrottle, FailureLimit, FailureThrottle

__all__ = ["AuthThrottle", "FailureLimit", "FailureThrottle"]
