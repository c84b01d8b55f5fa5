"""gp8's own enforcement of the retention rules and of offboarding (docs/gdpr.md)."""

from retention.purge import RetentionService

__all__ = ["RetentionService"]
