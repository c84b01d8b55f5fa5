"""LOGIN proof: challenge-response with HMAC-SHA256 (docs/protocol.md §5.1).

The server sends a fresh 16-byte nonce in CHALLENGE; the box answers with
HMAC-SHA256(secret, "GP8v1-LOGIN" ‖ nonce ‖ IMEI as u64 big-endian ‖ model byte). The secret
never travels, and a captured LOGIN is useless on another connection because its nonce is gone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from protocol.gp8.frames import Model

NONCE_SIZE = 16
_DOMAIN = b"GP8v1-LOGIN"  # binds the MAC to this use, so it can't be confused with another
_MQTT_DOMAIN = b"GP8v1-MQTT"


def login_proof(secret: str, nonce: bytes, imei: str, model: Model) -> bytes:
    """The 32-byte proof a box with ``secret`` sends for ``nonce``."""
    message = _DOMAIN + nonce + int(imei).to_bytes(8, "big") + bytes((int(model),))
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


def verify_login_proof(secret: str, nonce: bytes, imei: str, model: Model, proof: bytes) -> bool:
    """Constant-time check of a LOGIN proof."""
    return hmac.compare_digest(login_proof(secret, nonce, imei, model), proof)


def mqtt_password(secret: str) -> str:
    """The box's MQTT broker password (docs/protocol.md §7), derived from its LOGIN secret.

    base64url, unpadded, of HMAC-SHA256(secret, "GP8v1-MQTT"): 43 characters. The broker's
    password file holds only a hash of it, and the secret itself never crosses MQTT; the
    domain string keeps it unrelated to any LOGIN proof.
    """
    digest = hmac.new(secret.encode(), _MQTT_DOMAIN, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
