"""What POST /webhook makes of JSON (receiver.ingest.jsoncodec), against real PostgreSQL: NULs,
lone surrogates, integers beyond 64 bits; bad bodies kept whole in quarantine, empty ones
nowhere."""

import json

import pytest

from support import body, event, post

BIG = 123456789012345678901234567890  # beyond 64 bits: orjson would turn it into a float


def nested(depth: int, opener=b"[", closer=b"]") -> bytes:
    return opener * depth + closer * depth


def quarantined(query) -> list[tuple]:
    rows = query("SELECT kind, reason, content, times_received FROM quarantine ORDER BY id")
    return [(kind, reason, bytes(content), times) for kind, reason, content, times in rows]


def event_count(query) -> int:
    return query("SELECT count(*) FROM events")[0][0]


# --- through POST /webhook ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [event(recipientId="a\x00b"), event(**{"new\x00field": 1}), event(extra={"deep": ["\x00"]})],
    ids=["in-a-value", "in-a-key", "nested"],
)
def test_a_nul_in_an_event_quarantines_that_event_only(client, query, bad):
    response = post(client, body(event(id="valid"), bad))
    assert response.status_code == 200
    assert response.json == {"received": 2, "stored": 1, "duplicates": 0, "quarantined": 1}
    assert query("SELECT event_key FROM events") == [("valid",)]
    [(kind, reason, content, times)] = quarantined(query)
    assert kind == "event"
    assert "NUL" in reason
    assert json.loads(content) == bad
    assert times == 1


def test_backslash_u0000_text_is_stored_as_text(client, query):
    data = b'[{"type": "open", "clientId": 1, "created": 1, "note": "\\\\u0000"}]'
    response = post(client, data)
    assert response.json == {"received": 1, "stored": 1, "duplicates": 0, "quarantined": 0}
    assert query("SELECT payload->>'note' FROM events") == [("\\u0000",)]
    assert quarantined(query) == []


def test_an_integer_beyond_64_bits_is_stored_with_every_digit(client, query):
    data = f'[{{"type": "open", "clientId": 1, "created": 1, "big": {BIG}}}]'.encode()
    response = post(client, data)
    assert response.json == {"received": 1, "stored": 1, "duplicates": 0, "quarantined": 0}
    assert query("SELECT payload->>'big', payload->'big' FROM events") == [(str(BIG), BIG)]


@pytest.mark.parametrize(
    "data",
    [b"\xef\xbb\xbf" + body(event()), json.dumps(event()).encode()],
    ids=["bom", "bare-object"],
)
def test_a_bom_or_a_bare_object_is_stored(client, query, data):
    response = post(client, data)
    assert response.json == {"received": 1, "stored": 1, "duplicates": 0, "quarantined": 0}
    assert query("SELECT type, client_id FROM events") == [("open", 123456789001)]


BAD_BODIES = {
    "invalid-json": (b'[{"type": "open",', "not valid JSON"),
    "not-json": (b"hello", "not valid JSON"),
    "nan-in-a-bare-object": (b'{"type": "open", "x": NaN}', "not valid JSON"),
    "unbalanced-brackets": (b'[{"type": "open", "x": [1}]', "not valid JSON"),
    "text-after-the-list": (b'[{"type": "open"}] and more', "not valid JSON"),
    "scalar": (b"42", "not a list of events"),
    "null": (b"null", "not a list of events"),
    "deeply-nested-bare-object": (b'{"a":' * 5000 + b"1" + b"}" * 5000, "not valid JSON"),
}


@pytest.mark.parametrize(("data", "reason"), BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_a_bad_body_is_400_and_kept_whole_in_quarantine(client, query, data, reason):
    response = post(client, data)
    assert response.status_code == 400
    assert reason in response.json["error"]
    assert event_count(query) == 0
    [(kind, stored_reason, content, times)] = quarantined(query)
    assert kind == "body"
    assert reason in stored_reason
    assert content == data
    assert times == 1


# One item of a list of sound structure that no parser reads: that item alone is quarantined.
UNPARSED_ITEMS = {
    "nan": (b'{"type": "open", "x": NaN}', "not valid JSON"),
    "single-quotes": (b"{'type': 'open'}", "not valid JSON"),
    "deeply-nested": (b"[" * 5000 + b"]" * 5000, "nested deeper than 1024 levels"),
    "deeply-nested-stdlib": (
        b"[" * 5000 + b"12345678901234567890" + b"]" * 5000,
        "nested deeper than the recursion limit",
    ),
}


@pytest.mark.parametrize(("bad", "reason"), UNPARSED_ITEMS.values(), ids=UNPARSED_ITEMS.keys())
def test_an_item_no_parser_reads_is_quarantined_alone(client, query, bad, reason):
    data = b"[" + body(event(id="first"))[1:-1] + b", " + bad + b"]"
    response = post(client, data)
    assert response.status_code == 200
    assert response.json == {"received": 2, "stored": 1, "duplicates": 0, "quarantined": 1}
    assert query("SELECT event_key FROM events") == [("first",)]
    [(kind, stored_reason, content, times)] = quarantined(query)
    assert (kind, content, times) == ("event", bad, 1)
    assert stored_reason.startswith("not valid JSON: ") and reason in stored_reason


# Not kept: nothing in it to replay, and `curl --data-binary @missing-file` must leave no junk.
EMPTY_BODIES = {"empty": b"", "whitespace": b"  \n"}


@pytest.mark.parametrize("data", EMPTY_BODIES.values(), ids=EMPTY_BODIES.keys())
def test_an_empty_body_is_400_and_kept_nowhere(client, query, data):
    response = post(client, data)
    assert response.status_code == 400
    assert response.json == {"error": "empty body"}
    assert event_count(query) == 0
    assert quarantined(query) == []


def test_the_same_bad_body_three_times_is_one_quarantine_row_received_three_times(client, query):
    data = b'[{"type": "open", "clientId": 1, "created": 1'
    statuses = [post(client, data).status_code for _ in range(3)]
    assert statuses == [400, 400, 400]
    [(kind, _, content, times)] = quarantined(query)
    assert (kind, content, times) == ("body", data, 3)


def test_different_bad_bodies_are_separate_quarantine_rows(client, query):
    assert post(client, b"{").status_code == 400
    assert post(client, b"[").status_code == 400
    assert sorted(content for _, _, content, _ in quarantined(query)) == [b"[", b"{"]


@pytest.mark.parametrize(
    ("data", "status", "kind"),
    [
        # orjson refuses the body, the standard parser takes it: only the event is quarantined
        (b'[{"type": "open", "clientId": 1, "created": 1, "a": "\\ud800"}]', 200, "event"),
        # the same when a long digit run sends the body to the standard parser first
        (
            b'[{"type": "open", "clientId": 1, "created": 1, "a": "\\ud800",'
            b' "n": 12345678901234567890}]',
            200,
            "event",
        ),
    ],
    ids=["orjson", "stdlib"],
)
def test_a_lone_surrogate_is_quarantined_never_stored(client, query, data, status, kind):
    response = post(client, data)
    assert response.status_code == status
    assert event_count(query) == 0
    [(stored_kind, _, content, _)] = quarantined(query)
    assert stored_kind == kind
    assert b"\\ud800" in content


def test_an_event_nested_1000_levels_is_answered_200(client, query):
    data = b'[{"type": "open", "clientId": 1, "created": 1, "x": ' + nested(1000) + b"}]"
    response = post(client, data)
    assert response.status_code == 200
    assert response.json["stored"] + response.json["quarantined"] == 1
