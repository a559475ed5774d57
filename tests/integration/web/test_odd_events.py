"""One event of a batch that a parser cannot read, through POST /webhook against real PostgreSQL.

An integer of more digits than int() converts (4,300) and nesting deeper than the parsers go
(orjson's 1,024 levels) are problems of one event's content: the other events of the batch are
stored, that one is quarantined with its reason (or stored, when it can be), and the batch is
answered 200. The same batch sent again stores nothing twice and counts the quarantine row again.
"""

import json

import pytest

from support import event, post

DIGITS_4301 = "9" * 4300 + "7"


def events_by_key(query) -> dict:
    return dict(query("SELECT event_key, payload::text FROM events"))


def quarantined(query) -> list[tuple]:
    rows = query("SELECT kind, reason, content, times_received FROM quarantine ORDER BY id")
    return [(kind, reason, bytes(content), times) for kind, reason, content, times in rows]


def batch_with(odd: bytes, position: int = 3) -> bytes:
    """Three valid events (ids v1..v3) and `odd` (raw JSON) at `position`, Campaign's style."""
    items = [json.dumps(event(id=f"v{n}"), separators=(",", ":")).encode() for n in (1, 2, 3)]
    items.insert(position, odd)
    return b"[" + b",".join(items) + b"]"


def with_field(raw_field: bytes, **fields) -> bytes:
    """A valid event as raw JSON with `raw_field` (e.g. b'"big":123') spliced in."""
    return (
        json.dumps(event(**fields), separators=(",", ":")).encode()[:-1] + b"," + raw_field + b"}"
    )


def test_an_integer_of_4301_digits_is_stored_with_every_digit(client, query):
    odd = with_field(b'"big":' + DIGITS_4301.encode(), id="big")
    response = post(client, batch_with(odd))
    assert response.status_code == 200
    assert response.json == {"received": 4, "stored": 4, "duplicates": 0, "quarantined": 0}
    assert sorted(events_by_key(query)) == ["big", "v1", "v2", "v3"]
    [(text, kind)] = query(
        "SELECT payload->>'big', jsonb_typeof(payload->'big') FROM events WHERE event_key = 'big'"
    )
    assert (text, kind) == (DIGITS_4301, "number")
    assert quarantined(query) == []


def test_an_event_without_id_with_a_4301_digit_integer_is_stored_once(client, query):
    odd = with_field(b'"big":-' + DIGITS_4301.encode())  # no id: keyed by its content
    for attempt in range(2):
        response = post(client, batch_with(odd, position=0))
        assert response.status_code == 200
        assert response.json["stored"] == (4 if attempt == 0 else 0)
        assert response.json["duplicates"] == (0 if attempt == 0 else 4)
    [(key, text)] = query(
        "SELECT event_key, payload->>'big' FROM events WHERE event_key LIKE 'sha%'"
    )
    assert key.startswith("sha256:") and text == "-" + DIGITS_4301


def test_a_4301_digit_client_id_quarantines_that_event_only(client, query):
    odd = b'{"type":"open","id":"odd","created":1564590054000,"clientId":' + b"1" * 4301 + b"}"
    response = post(client, batch_with(odd, position=1))
    assert response.status_code == 200
    assert response.json == {"received": 4, "stored": 3, "duplicates": 0, "quarantined": 1}
    [(kind, reason, content, _)] = quarantined(query)
    assert kind == "event" and "clientId" in reason
    assert content == odd


def deep_event(depth: int) -> bytes:
    """A valid-looking event whose field `x` takes it to `depth` levels in all."""
    return with_field(b'"x":' + b"[" * (depth - 1) + b"]" * (depth - 1), id="deep")


@pytest.mark.parametrize("position", [0, 2, 3])
def test_an_event_nested_1030_levels_is_quarantined_alone(client, query, position):
    odd = deep_event(1030)
    response = post(client, batch_with(odd, position))
    assert response.status_code == 200
    assert response.json == {"received": 4, "stored": 3, "duplicates": 0, "quarantined": 1}
    assert sorted(events_by_key(query)) == ["v1", "v2", "v3"]
    [(kind, reason, content, times)] = quarantined(query)
    assert kind == "event"
    assert reason == "not valid JSON: nested deeper than 1024 levels"
    assert content == odd  # the item's bytes, as received
    assert times == 1


def test_an_integer_postgresql_cannot_hold_is_quarantined_with_its_reason(client, query):
    # jsonb numbers hold up to 131,072 digits before the point: PostgreSQL refuses this one,
    # and the per-event fallback keeps just that event.
    digits = "8" * 200_000
    odd = with_field(b'"big":' + digits.encode(), id="huge")
    response = post(client, batch_with(odd, position=1))
    assert response.status_code == 200
    assert response.json == {"received": 4, "stored": 3, "duplicates": 0, "quarantined": 1}
    assert sorted(events_by_key(query)) == ["v1", "v2", "v3"]
    [(kind, reason, content, times)] = quarantined(query)
    assert kind == "event"
    assert reason == "refused by PostgreSQL: value overflows numeric format"
    assert json.loads(content, parse_int=str)["big"] == digits  # every digit kept
    assert times == 1


@pytest.mark.parametrize(
    "odd",
    [deep_event(1030), with_field(b'"big":' + b"8" * 200_000, id="huge")],
    ids=["nested-1030", "200000-digits"],
)
def test_the_same_batch_again_stores_nothing_twice_and_counts_the_quarantine_row(
    client, query, odd
):
    data = batch_with(odd, position=2)
    first = post(client, data)
    assert first.status_code == 200
    assert first.json == {"received": 4, "stored": 3, "duplicates": 0, "quarantined": 1}
    [(kind, reason, content, _)] = quarantined(query)

    again = post(client, data)
    assert again.status_code == 200
    assert again.json == {"received": 4, "stored": 0, "duplicates": 3, "quarantined": 1}
    assert sorted(events_by_key(query)) == ["v1", "v2", "v3"]
    assert quarantined(query) == [(kind, reason, content, 2)]


def test_several_odd_events_in_one_batch(client, query):
    items = [
        json.dumps(event(id="ok-1")).encode(),
        deep_event(2000),
        with_field(b'"big":' + DIGITS_4301.encode(), id="big"),
        b'{"type": "open", "x": NaN}',
        json.dumps(event(id="ok-2")).encode(),
    ]
    response = post(client, b"[\n  " + b",\n  ".join(items) + b"\n]\n")
    assert response.status_code == 200
    assert response.json == {"received": 5, "stored": 3, "duplicates": 0, "quarantined": 2}
    assert sorted(events_by_key(query)) == ["big", "ok-1", "ok-2"]
    kept = sorted((kind, content) for kind, _, content, _ in quarantined(query))
    assert kept == sorted([("event", items[1]), ("event", items[3])])
