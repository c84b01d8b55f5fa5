"""API keys: how they look, how they are stored, how a request proves it holds one.

A key is ``gp8_`` + 43 URL-safe characters (256 random bits). Only its SHA-256 is stored: a
salt or a slow hash buys nothing against 256 bits of entropy, and SHA-256 keeps the lookup a
single indexed equality query per request.
"""

from __future__ import annotations

import hashlib
import logging
import secrets

from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.problems import ApiProblem
from api.ratelimit import RateLimiter, retry_after_header
from storage.errors import Conflict
from storage.models import ApiKey, Role, new_id, now_ms
from storage.repository import KeyRepo, Store

logger = logging.getLogger(__name__)

KEY_PREFIX = "gp8_"
_KEY_RANDOM_BYTES = 32
# Characters of the key kept in clear so listings can tell keys apart: the "gp8_" tag plus 8
# random characters, far too few to help guess the rest.
SHOWN_PREFIX_LEN = 12
# Anything longer is not a key of ours; refuse before hashing attacker-sized input.
MAX_KEY_LEN = 256

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key: `Authorization: Bearer gp8_...`",
)


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(_KEY_RANDOM_BYTES)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key(
    *, fleet_id: str | None, role: Role, name: str, expires_ms: int | None = None
) -> tuple[str, ApiKey]:
    """A fresh key: the secret (to show once) and the record to store."""
    secret = generate_key()
    record = ApiKey(
        id=new_id("key"),
        fleet_id=fleet_id,
        role=role,
        name=name,
        key_hash=hash_key(secret),
        prefix=secret[:SHOWN_PREFIX_LEN],
        created_ms=now_ms(),
        expires_ms=expires_ms,
    )
    return secret, record


async def ensure_operator_key(keys: KeyRepo, key: str, *, name: str = "bootstrap") -> ApiKey:
    """Make sure an operator key with this secret exists (gp8 serve --bootstrap-key)."""
    if not key or len(key) > MAX_KEY_LEN:
        raise ValueError(f"a bootstrap key must be 1..{MAX_KEY_LEN} characters")
    key_hash = hash_key(key)
    existing = await keys.get_by_hash(key_hash)
    if existing is not None:
        if existing.role is not Role.OPERATOR or existing.revoked_ms is not None:
            logger.warning("bootstrap key %s exists but is not an active operator key", existing.id)
        return existing
    record = ApiKey(
        id=new_id("key"),
        fleet_id=None,
        role=Role.OPERATOR,
        name=name,
        key_hash=key_hash,
        prefix=key[: min(SHOWN_PREFIX_LEN, len(key) // 2)],
        created_ms=now_ms(),
    )
    try:
        return await keys.create(record)
    except Conflict:
        # Another process bootstrapped the same key at the same moment.
        found = await keys.get_by_hash(key_hash)
        if found is None:
            raise
        return found


def _unauthorized(detail: str, *, invalid: bool) -> ApiProblem:
    challenge = 'Bearer realm="gp8"'
    if invalid:
        challenge += ', error="invalid_token"'
    return ApiProblem(
        401,
        detail,
        type_="urn:gp8:problem:unauthorized",
        headers={"WWW-Authenticate": challenge},
    )


async def authenticate(
    store: Store, limiter: RateLimiter | None, credentials: HTTPAuthorizationCredentials | None
) -> ApiKey:
    """The key behind a Bearer credential; 401 problem when missing or not valid now."""
    if credentials is None:
        raise _unauthorized("missing Authorization: Bearer <key> header", invalid=False)
    secret = credentials.credentials
    if not secret or len(secret) > MAX_KEY_LEN:
        raise _unauthorized("invalid API key", invalid=True)
    key = await store.keys.get_by_hash(hash_key(secret))
    now = now_ms()
    # One message for unknown, revoked and expired keys alike: the response must not help
    # anyone probe which secrets once existed.
    if (
        key is None
        or key.revoked_ms is not None
        or (key.expires_ms is not None and key.expires_ms <= now)
    ):
        raise _unauthorized("invalid, revoked or expired API key", invalid=True)
    if limiter is not None:
        wait_s = limiter.acquire(key.id)
        if wait_s is not None:
            raise ApiProblem(
                429,
                "rate limit exceeded for this API key",
                type_="urn:gp8:problem:rate-limited",
                headers={"Retry-After": retry_after_header(wait_s)},
            )
    return key
