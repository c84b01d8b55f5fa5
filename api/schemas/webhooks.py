from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from api.schemas.common import Timestamp
from api.times import iso_ms
from api.webhooks.targets import MAX_URL_LENGTH
from storage.models import DeliveryStatus, StreamKind, WebhookDelivery, WebhookEndpoint

DEFAULT_KINDS = (StreamKind.ALERT, StreamKind.THEFT_CASE)


def _unique(kinds: list[StreamKind]) -> list[StreamKind]:
    return list(dict.fromkeys(kinds))


WebhookUrl = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        description="Where gp8 POSTs: https:// (or http://), a public host, no credentials",
        examples=["https://hooks.example.com/gp8"],
    ),
]
Kinds = Annotated[
    list[StreamKind],
    Field(
        min_length=1,
        max_length=len(StreamKind),
        description="What to send: the kinds of the live stream (alert, theft_case, command,"
        " event, position)",
    ),
    AfterValidator(_unique),
]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: WebhookUrl
    kinds: Kinds = Field(default_factory=lambda: list(DEFAULT_KINDS))


class WebhookUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: WebhookUrl | None = None
    kinds: Kinds | None = None
    enabled: bool | None = Field(
        default=None, description="false stops deliveries; true again sends what comes next"
    )


class DataGapPublic(BaseModel):
    after_cursor: int
    resumed_cursor: int
    detected_at: Timestamp


class WebhookStatus(BaseModel):
    state: Literal["active", "disabled"]
    cursor: int = Field(description="The fleet's last stream cursor queued for this webhook")
    disabled_reason: str | None = Field(description="Why gp8 disabled it (a 410 Gone answer)")
    data_gap: DataGapPublic | None = Field(
        description="The last loss of data: gp8's delivery service was stopped for longer than"
        " the stream keeps entries, so those after after_cursor up to resumed_cursor were"
        " never sent"
    )


class WebhookPublic(BaseModel):
    id: str
    url: str
    kinds: list[StreamKind]
    enabled: bool
    created_at: Timestamp
    updated_at: Timestamp
    status: WebhookStatus

    @classmethod
    def of(cls, endpoint: WebhookEndpoint) -> WebhookPublic:
        gap = endpoint.gap
        return cls(
            id=endpoint.id,
            url=endpoint.url,
            kinds=list(endpoint.kinds),
            enabled=endpoint.enabled,
            created_at=iso_ms(endpoint.created_ms),
            updated_at=iso_ms(endpoint.updated_ms),
            status=WebhookStatus(
                state="active" if endpoint.enabled else "disabled",
                cursor=endpoint.cursor,
                disabled_reason=endpoint.disabled_reason,
                data_gap=None
                if gap is None
                else DataGapPublic(
                    after_cursor=gap.after_cursor,
                    resumed_cursor=gap.resumed_cursor,
                    detected_at=iso_ms(gap.detected_ms),
                ),
            ),
        )


class WebhookCreated(WebhookPublic):
    secret: str = Field(
        description="The signing secret (whsec_...): shown in this response only; verify each"
        " delivery's webhook-signature with it"
    )


class WebhooksPublic(BaseModel):
    data: list[WebhookPublic]
    next_cursor: str | None


class WebhookDeliveryPublic(BaseModel):
    id: str = Field(
        description="The webhook-id header: the same on every attempt, to drop duplicates"
    )
    webhook_id: str
    kind: StreamKind
    cursor: int = Field(description="The stream cursor of what it carries")
    status: DeliveryStatus
    attempts: int
    next_attempt_at: Timestamp | None = Field(description="None once delivered or failed")
    last_attempt_at: Timestamp | None
    last_status_code: int | None = Field(description="The receiver's HTTP status, last attempt")
    last_error: str | None
    created_at: Timestamp
    updated_at: Timestamp
    delivered_at: Timestamp | None

    @classmethod
    def of(cls, d: WebhookDelivery) -> WebhookDeliveryPublic:
        def at(ms: int | None) -> str | None:
            return None if ms is None else iso_ms(ms)

        return cls(
            id=d.id,
            webhook_id=d.webhook_id,
            kind=d.kind,
            cursor=d.cursor,
            status=d.status,
            attempts=d.attempts,
            next_attempt_at=at(d.next_attempt_ms),
            last_attempt_at=at(d.last_attempt_ms),
            last_status_code=d.last_status_code,
            last_error=d.last_error,
            created_at=iso_ms(d.created_ms),
            updated_at=iso_ms(d.updated_ms),
            delivered_at=at(d.delivered_ms),
        )


class WebhookDeliveriesPublic(BaseModel):
    data: list[WebhookDeliveryPublic]
    next_cursor: str | None
