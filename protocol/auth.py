"""LOGIN proof: challenge-response with HMAC-SHA256 (docs/protocol.md §5.1).

The server sends a fresh 16-byte nonce in CHALLENGE; the box answers with
HMAC-SHA256(secret, "GP8v1-LOGIN" ‖ nonce ‖ IMEI as u64 big-endian ‖ model byte). The secret
never travels, and a captured LOGIN is useless on another connection because its nonce is gone.
"""

from __future__ import annotations

import hashlib
import hmac

from protocol.frames import Model

NONCE_SIZE = 16
_DOMAIN = b"GP8v1-LOGIN"  # binds the MAC to this use, so it can't be confused with another


def login_proof(secret: str, nonce: bytes, imei: str, model: Model) -> bytes:
    """The 32-byte proof a box with ``secret`` sends for ``nonce``."""
    message = _DOMAIN + nonce + int(imei).to_bytes(8, "big") + bytes((int(model),))
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


def verify_login_proof(secret: str, nonce: bytes, imei: str, model: Model, proof: bytes) -> bool:
    """Constant-time check of a LOGIN proof."""
    return hmac.compare_digest(login_proof(secret, nonce, imei, model), proof)
