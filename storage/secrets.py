"""Secrets at rest: the boxes' LOGIN secrets and the webhooks' signing secrets, sealed with
AES-GCM before they reach the database (docs/security.md, "Secrets at rest").

gp8 must hold these secrets in a form it can use (it checks a box's HMAC proof and signs each
webhook delivery), so they cannot be hashed like API keys; instead a database dump alone must
reveal none of them. The engines seal on write and open on read (`SecretBox` is injected into
them by the wiring), so nothing above `storage/` ever sees a sealed value and nothing in the
database is clear.

A sealed value is ``enc:v1:<key id>:<base64(nonce || ciphertext+tag)>``. The key id is derived
from the key (a truncated SHA-256, which reveals nothing usable about it), so several keys can
be configured at once: the current one seals, every configured one opens, and
`gp8 admin rotate-secrets-key` re-seals what an old key sealed. Each value is bound to its
record (AES-GCM associated data, e.g. ``device:<id>``), so a sealed secret copied onto another
row does not open there.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from storage.errors import StorageError

PREFIX = "enc:v1:"
KEY_BYTES = 32  # AES-256
# 96-bit random nonces, the size GCM is specified for. With random nonces a key should seal
# fewer than 2^32 values; gp8 seals one per box or webhook created (and per rotation).
NONCE_BYTES = 12
_KEY_ID_HEX = 16

# The development default, used when no key is configured: derived from a public constant, so
# it protects nothing. It keeps the embedded demo working out of the box; production mode
# refuses it (`SecretBox.is_default`).
DEVELOPMENT_KEY = hashlib.sha256(b"gp8 development secrets key: public, not secret").digest()


class SecretsError(StorageError):
    """Base class of the errors about sealed secrets."""


class InvalidSecretsKey(SecretsError, ValueError):
    """A configured key is not the base64 of 32 bytes (or the key configuration is ambiguous)."""


class UnknownSecretsKey(SecretsError):
    """A value is sealed under a key id that is not configured (an old key was dropped too
    early, or the database comes from another installation)."""

    def __init__(self, key_id: str, known: Iterable[str]) -> None:
        super().__init__(
            f"secret sealed under key id {key_id}, which is not configured (known: "
            f"{', '.join(sorted(known))}); add that key to GP8_SECRETS_OLD_KEYS"
        )
        self.key_id = key_id


class SecretDecryptionFailed(SecretsError):
    """A stored value is not a sealed secret, or does not open (tampered with, or moved to
    another record)."""


def key_id(key: bytes) -> str:
    """The public id of a key, stored beside every value it seals."""
    return hashlib.sha256(b"gp8 secrets key id\0" + key).hexdigest()[:_KEY_ID_HEX]


def decode_key(text: str) -> bytes:
    """A key as configured: standard or URL-safe base64 of 32 bytes."""
    cleaned = text.strip()
    try:
        raw = base64.b64decode(cleaned.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSecretsKey("a secrets key must be base64 (32 bytes)") from None
    if len(raw) != KEY_BYTES:
        raise InvalidSecretsKey(f"a secrets key must be {KEY_BYTES} bytes, not {len(raw)}")
    return raw


def generate_key() -> str:
    """A fresh key, as it is configured (base64)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


class SecretBox:
    """Seals with the current key, opens with any configured one."""

    def __init__(self, current: bytes, old: Sequence[bytes] = (), *, is_default: bool = False):
        for key in (current, *old):
            if len(key) != KEY_BYTES:
                raise InvalidSecretsKey(f"a secrets key must be {KEY_BYTES} bytes")
        self.current_key_id = key_id(current)
        # Whether the current key is the public development default (production refuses it).
        self.is_default = is_default
        self._ciphers = {key_id(k): AESGCM(k) for k in (*old, current)}
        self._current = self._ciphers[self.current_key_id]

    @classmethod
    def development(cls) -> SecretBox:
        return cls(DEVELOPMENT_KEY, is_default=True)

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._ciphers)

    def seal(self, plaintext: str, context: str) -> str:
        """``plaintext`` sealed with the current key, bound to ``context`` (the record)."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._current.encrypt(nonce, plaintext.encode(), context.encode())
        payload = base64.b64encode(nonce + sealed).decode("ascii")
        return f"{PREFIX}{self.current_key_id}:{payload}"

    def open(self, stored: str, context: str) -> str:
        """The plaintext of a sealed value; UnknownSecretsKey, SecretDecryptionFailed."""
        kid, payload = _split(stored)
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise UnknownSecretsKey(kid, self._ciphers)
        try:
            raw = base64.b64decode(payload, validate=True)
            plain = cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode())
        except (binascii.Error, ValueError, InvalidTag):
            # No detail: which check failed tells an attacker nothing they should learn.
            raise SecretDecryptionFailed(f"the secret of {context} does not open") from None
        return plain.decode()

    def reseal(self, stored: str, context: str) -> str | None:
        """The value sealed again with the current key, or None when it already is."""
        if _split(stored)[0] == self.current_key_id:
            return None
        return self.seal(self.open(stored, context), context)


def _split(stored: str) -> tuple[str, str]:
    if not stored.startswith(PREFIX):
        raise SecretDecryptionFailed("stored value is not a sealed secret (run gp8 migrate)")
    kid, sep, payload = stored[len(PREFIX) :].partition(":")
    if not sep or not kid:
        raise SecretDecryptionFailed("malformed sealed secret")
    return kid, payload


def device_context(device_id: str) -> str:
    return f"device:{device_id}"


def webhook_context(webhook_id: str) -> str:
    return f"webhook:{webhook_id}"


def load_secret_box(
    *, key: str | None, key_file: Path | None, old_keys: Sequence[str] = ()
) -> SecretBox:
    """The box for the configured keys (plain values: the entry point reads Settings).

    ``key``: the current key. ``key_file``: a file with one key per line (blank lines and
    ``#`` comments skipped), the first the current one, the others old ones that still open.
    Neither: the development default (`SecretBox.is_default`). ``old_keys`` open only.
    """
    if key is not None and key_file is not None:
        raise InvalidSecretsKey("set GP8_SECRETS_KEY or GP8_SECRETS_KEY_FILE, not both")
    old = [decode_key(k) for k in old_keys]
    if key_file is not None:
        try:
            lines = key_file.read_text().splitlines()
        except OSError as exc:
            raise InvalidSecretsKey(f"cannot read the secrets key file {key_file}: {exc}") from None
        keys = [decode_key(line) for line in lines if line.strip() and not line.startswith("#")]
        if not keys:
            raise InvalidSecretsKey(f"the secrets key file {key_file} holds no key")
        return SecretBox(keys[0], [*keys[1:], *old])
    if key is not None:
        return SecretBox(decode_key(key), old)
    return SecretBox(DEVELOPMENT_KEY, old, is_default=True)
