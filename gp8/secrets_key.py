"""The secrets-at-rest key (storage/secrets.py seals with it) and the driver key
(storage/pseudonyms.py) from Settings: an entry point's part, since only entry points read
Settings."""

from __future__ import annotations

from gp8.settings import Settings
from storage.pseudonyms import BadgePseudonyms, InvalidDriverKey, load_pseudonyms
from storage.secrets import SecretBox, load_secret_box


def secret_box(settings: Settings) -> SecretBox:
    """The configured keys; InvalidSecretsKey when one is not the base64 of 32 bytes."""
    return load_secret_box(
        key=None if settings.secrets_key is None else settings.secrets_key.get_secret_value(),
        key_file=settings.secrets_key_file,
        old_keys=[k.get_secret_value() for k in settings.secrets_old_keys],
    )


def is_default_secrets_key(settings: Settings) -> bool:
    """Whether secrets would be sealed with the public development key (no key configured):
    what production mode refuses."""
    return settings.secrets_key is None and settings.secrets_key_file is None


def driver_pseudonyms(settings: Settings) -> BadgePseudonyms:
    """The configured driver key's pseudonyms (storage/pseudonyms.py); InvalidDriverKey when
    the key is not the base64 of at least 32 bytes, or both forms are set."""
    key = settings.driver_key
    return load_pseudonyms(
        key=None if key is None else key.get_secret_value(), key_file=settings.driver_key_file
    )


def is_default_driver_key(settings: Settings) -> bool:
    """Whether badges would be pseudonymised with the public development key: no key
    configured, or the development key itself (what production mode refuses). A key that
    does not load is no default: `gp8 serve` then stops on it with its own message."""
    try:
        return driver_pseudonyms(settings).is_default
    except InvalidDriverKey:
        return False
