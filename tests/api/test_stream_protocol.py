"""The live stream's protocol (api/stream/protocol.py): options from the URL and the first
message, refusals and their close codes, SSE frames. Pure functions, one table per concern."""

from __future__ import annotations

import json

import pytest

from api.stream.protocol import (
    CLOSINGS,
    MAX_REASON_BYTES,
    StreamError,
    StreamOptions,
    StreamRefused,
    parse_first_message,
    parse_query,
    ready_message,
    sse_error,
    sse_frame,
)
from storage.models import StreamKind

P, E = StreamKind.POSITION, StreamKind.EVENT

QUERIES: list[tuple[list[tuple[str, str]], StreamOptions]] = [
    ([], StreamOptions()),
    ([("after", "42")], StreamOptions(after=42)),
    ([("kinds", "position,event")], StreamOptions(kinds=frozenset({P, E}))),
    ([("kinds", "position"), ("kinds", "event")], StreamOptions(kinds=frozenset({P, E}))),
    ([("vehicle_id", "veh_1"), ("after", "0")], StreamOptions(after=0, vehicle_id="veh_1")),
]

BAD_QUERIES = [
    [("key", "gp8_x")],
    [("token", "gp8_x")],
    [("Access_Token", "gp8_x")],
    [("after", "1"), ("after", "2")],
    [("after", "-1")],
    [("after", "1.5")],
    [("after", str(2**63))],
    [("kinds", "")],
    [("kinds", "position,rumour")],
    [("vehicle_id", "")],
    [("vehicle_id", "v" * 65)],
    [("cursor", "3")],
]


@pytest.mark.parametrize(("items", "expected"), QUERIES)
def test_parse_query(items: list[tuple[str, str]], expected: StreamOptions) -> None:
    assert parse_query(items) == expected


@pytest.mark.parametrize("items", BAD_QUERIES)
def test_parse_query_refuses(items: list[tuple[str, str]]) -> None:
    with pytest.raises(StreamRefused) as refused:
        parse_query(items)
    assert refused.value.error is StreamError.BAD_REQUEST


def test_a_key_in_the_url_is_named_in_the_refusal() -> None:
    with pytest.raises(StreamRefused, match=r"never put a key in the URL \(token\)"):
        parse_query([("token", "gp8_x"), ("after", "1")])


FIRST: list[tuple[dict[str, object], str | None, StreamOptions]] = [
    ({}, None, StreamOptions()),
    ({"key": "gp8_k"}, "gp8_k", StreamOptions()),
    ({"key": "k", "after": 7, "kinds": ["event"]}, "k", StreamOptions(7, frozenset({E}))),
    (
        {"kinds": "position,event", "vehicle_id": "veh_1"},
        None,
        StreamOptions(kinds=frozenset({P, E}), vehicle_id="veh_1"),
    ),
]

BAD_FIRST = [
    "not json",
    "[1, 2]",
    json.dumps({"key": 3}),
    json.dumps({"after": "3"}),
    json.dumps({"after": True}),
    json.dumps({"after": -3}),
    json.dumps({"kinds": [1]}),
    json.dumps({"kinds": []}),
    json.dumps({"vehicle_id": 5}),
    json.dumps({"cursor": 5}),
    json.dumps({"key": "x" * 5000}),
]


@pytest.mark.parametrize(("body", "key", "expected"), FIRST)
def test_parse_first_message(
    body: dict[str, object], key: str | None, expected: StreamOptions
) -> None:
    assert parse_first_message(json.dumps(body)) == (key, expected)


@pytest.mark.parametrize("text", BAD_FIRST)
def test_parse_first_message_refuses(text: str) -> None:
    with pytest.raises(StreamRefused) as refused:
        parse_first_message(text)
    assert refused.value.error is StreamError.BAD_REQUEST


def test_options_come_from_one_place_each() -> None:
    url, first = StreamOptions(after=3), StreamOptions(kinds=frozenset({E}))
    assert url.combine(first) == StreamOptions(after=3, kinds=frozenset({E}))
    with pytest.raises(StreamRefused, match="after is given both"):
        url.combine(StreamOptions(after=4))


def test_every_error_has_a_close_code_and_an_http_status() -> None:
    assert set(CLOSINGS) == set(StreamError)
    for closing in CLOSINGS.values():
        assert closing.ws_code in (1001, 1011, 1013) or 4000 <= closing.ws_code < 5000
        assert 400 <= closing.http_status < 600
    # The application codes say the HTTP status they mirror.
    for error, closing in CLOSINGS.items():
        if closing.ws_code >= 4000:
            assert closing.ws_code - 4000 == closing.http_status, error


def test_a_resumable_refusal_says_where_to_resume() -> None:
    slow = StreamRefused(StreamError.SLOW_CONSUMER, "slow consumer").resume_at(65_538)
    assert slow.message() == {
        "kind": "error",
        "error": "slow_consumer",
        "detail": "slow consumer; resume with after=65538",
        "cursor": 65_538,
    }
    assert slow.closing.ws_code == 4429 and slow.reason == slow.detail
    expired = StreamRefused(StreamError.CURSOR_EXPIRED, "gone", horizon=9)
    assert expired.resume_at(3) is expired  # not resumable: starting again is the answer
    assert expired.message()["horizon"] == 9


def test_close_reasons_fit_a_close_frame() -> None:
    long = StreamRefused(StreamError.BAD_REQUEST, "é" * 200)
    assert len(long.reason.encode()) <= MAX_REASON_BYTES
    assert long.reason.endswith("...")


def test_messages_and_frames() -> None:
    assert ready_message(5, StreamOptions(kinds=frozenset({E, P}), vehicle_id="veh_1")) == {
        "kind": "ready",
        "cursor": 5,
        "vehicle_id": "veh_1",
        "data": {"kinds": ["event", "position"]},
    }
    assert ready_message(0, StreamOptions())["data"]["kinds"] == sorted(StreamKind)
    assert sse_frame(7, "position", '{"a":1}') == b'id: 7\nevent: position\ndata: {"a":1}\n\n'
    frame = sse_error(StreamRefused(StreamError.UNAUTHORIZED, "revoked"))
    assert frame.startswith(b"event: error\ndata: {") and b"id:" not in frame
