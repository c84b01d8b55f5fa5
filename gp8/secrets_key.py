"""The secrets-at-rest key from Settings (storage/secrets.py seals with it): an entry point's
part, since only entry points read Settings."""

from __future__ import annotations

from gp8.settings import Settings
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
