"""API keys: how they look, how they are stored, how a request proves it holds one.

A key is ``gp8_`` + 43 URL-safe characters (256 random bits). Only its SHA-256 is stored: a
salt or a slow hash buys nothing against 256 bits of entropy, and SHA-256 keeps the lookup a
single indexed equality query per request.

Wrong keys are counted per source address (`throttle.FailureThrottle`): past the limit the
address is answered 429 for a while before any lookup, logged and counted (`KeyThrottle.counts`).
A wrong key names no identity, so only the source is counted; a genuine key used from another
address is never affected (docs/security.md, "Failed authentication").

Key hygiene (docs/security.md, "Key owners and expiry"): a key belongs to a named person
(``name``, ``email``), expires (`DEFAULT_KEY_TTL_DAYS` unless the creator says otherwise),
answers with `EXPIRES_HEADER` in its last `EXPIRY_WARNING_MS`, and is looked up in storage on
every request, with no cache: a revocation is effective on every process at the next request.
Its last use is written at most once per `LAST_USE_EVERY_MS`, so a busy key costs one write a
minute. A key is never taken from the URL, where proxies and browser histories keep it.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections import Counter

from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from api.problems import ApiProblem
from api.ratelimit import RateLimiter, retry_after_header
from api.stream.protocol import URL_SECRET_PARAMS as _STREAM_URL_SECRET_PARAMS
from api.times import iso_ms
from storage.errors import Conflict
from storage.models import ApiKey, Role, new_id, now_ms
from storage.repository import KeyRepo, Store
from throttle import FailureThrottle

logger = logging.getLogger(__name__)

KEY_PREFIX = "gp8_"
_KEY_RANDOM_BYTES = 32
# Characters of the key kept in clear so listings can tell keys apart: the "gp8_" tag plus 8
# random characters, far too few to help guess the rest.
SHOWN_PREFIX_LEN = 12
# Anything longer is not a key of ours; refuse before hashing attacker-sized input.
MAX_KEY_LEN = 256
DAY_MS = 86_400_000
# A key's lifetime when its creator names none (GP8_API__KEY_TTL_DAYS).
DEFAULT_KEY_TTL_DAYS = 90
# Within this of its expiry, every answer to a key says when it expires.
EXPIRY_WARNING_MS = 14 * DAY_MS
EXPIRES_HEADER = "Gp8-Key-Expires"
# last_used_ms is kept to this precision: one conditional write per key per minute at most.
LAST_USE_EVERY_MS = 60_000
# Query parameters under which clients put a secret in the URL (the live stream's list).
URL_SECRET_PARAMS = _STREAM_URL_SECRET_PARAMS

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
    *,
    fleet_id: str | None,
    role: Role,
    name: str,
    email: str = "",
    expires_ms: int | None = None,
) -> tuple[str, ApiKey]:
    """A fresh key of the person ``name`` <``email``>: the secret (to show once) and the
    record to store."""
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
        email=email,
    )
    return secret, record


async def refuse_key_in_url(connection: HTTPConnection) -> None:
    """An app-wide dependency: a request with a key in its query is a 400 saying so, before
    anything else looks at it (the key is burnt anyway: it is in logs now). The live stream
    (routes left out of the OpenAPI document) refuses it itself, in its own protocol."""
    route = connection.scope.get("route")
    if connection.scope["type"] != "http" or not getattr(route, "include_in_schema", True):
        return
    found = sorted({n for n in connection.query_params if n.lower() in URL_SECRET_PARAMS})
    if found:
        raise ApiProblem(
            400,
            f"API keys are never accepted in the URL ({', '.join(found)}): send "
            "Authorization: Bearer <key>, and revoke a key that was sent in a URL",
            type_="urn:gp8:problem:key-in-url",
        )


def expiry_warning(key: ApiKey, now: int) -> str | None:
    """The `EXPIRES_HEADER` value for ``key`` when it expires within `EXPIRY_WARNING_MS`."""
    if key.expires_ms is None or key.expires_ms - now > EXPIRY_WARNING_MS:
        return None
    return iso_ms(key.expires_ms)


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


class KeyThrottle:
    """Failed API keys per source address, and what was done about them (for /metrics)."""

    def __init__(self, throttle: FailureThrottle) -> None:
        self._throttle = throttle
        # "failed": wrong keys; "locked_out": lock-outs started; "throttled": refused while
        # locked out (answered 429 without a lookup).
        self.counts: Counter[str] = Counter()

    def check(self, source: str) -> None:
        """429 problem while ``source`` is locked out."""
        wait_s = self._throttle.locked(source)
        if wait_s is None:
            return
        self.counts["throttled"] += 1
        raise ApiProblem(
            429,
            "too many invalid API keys from this address; try again later",
            type_="urn:gp8:problem:rate-limited",
            headers={"Retry-After": retry_after_header(wait_s)},
        )

    def failed(self, source: str) -> None:
        self.counts["failed"] += 1
        if self._throttle.failure(source):
            self.counts["locked_out"] += 1
            logger.warning("API key lock-out: source=%s after repeated invalid keys", source)


async def authenticate(
    store: Store,
    limiter: RateLimiter | None,
    credentials: HTTPAuthorizationCredentials | None,
    *,
    throttle: KeyThrottle | None = None,
    source: str | None = None,
) -> ApiKey:
    """The key behind a Bearer credential; 401 problem when missing or not valid now, 429 when
    ``source`` (the client's address) sent too many invalid keys lately."""
    if credentials is None:
        # HTTPBearer gives None for a missing header and for one of another scheme alike.
        raise _unauthorized(
            "send the API key as Authorization: Bearer <key> (the header is missing or not "
            "of the Bearer scheme)",
            invalid=False,
        )
    if throttle is None or source is None:
        return await _check_key(store, limiter, credentials.credentials)
    throttle.check(source)
    try:
        return await _check_key(store, limiter, credentials.credentials)
    except ApiProblem as exc:
        if exc.status_code == 401:
            throttle.failed(source)
        raise


async def _check_key(store: Store, limiter: RateLimiter | None, secret: str) -> ApiKey:
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
    if key.last_used_ms is None or now - key.last_used_ms >= LAST_USE_EVERY_MS:
        # Conditional in storage too: of several processes, one writes per minute.
        await store.keys.touch(key.id, now, every_ms=LAST_USE_EVERY_MS)
    if limiter is not None:
        wait_s = limiter.acquire(key.id)
        if wait_s is not None:
            raise ApiProblem(
                429,
                limiter.describe(),
                type_="urn:gp8:problem:rate-limited",
                headers={"Retry-After": retry_after_header(wait_s)},
            )
    return key
