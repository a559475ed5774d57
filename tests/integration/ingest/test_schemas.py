"""Event validation through POST /webhook into real tables: one row per event, typed columns
filled, invalid events quarantined, idempotency (receiver.ingest.schemas, receiver.web.webhook)."""

import datetime as dt
import json

import pytest

from receiver.ingest import schemas
from receiver.storage.events import EVENT_COLUMNS

from support import body, event, post, sample
from support.events import (
    BOUNCE,
    DOCUMENTED_TYPES,
    HASH_KEY,
    INVALID_PARAMS,
    OPEN,
    SINGLE_FIELD_CHANGES,
)

UNKNOWN_TYPES = ["webhooknode", "futuretype"]
CLICK = {
    **OPEN,
    "type": "click",
    "link": "https://www.example.com/offer?utm_source=campaign&x=%C3%A4",
    "device": "mobile",
    "operatingSystem": "Android 14",
    "browser": "Chrome Mobile 120",
    "remoteAddress": "2001:db8::1",
}
EPOCH = dt.datetime(1970, 1, 1)

# Every column the receiver writes except created_at (checked on its own, exactly).
COLUMNS = [name for name, _ in EVENT_COLUMNS if name != "created_at"]
SELECT_EVENTS = f"SELECT {', '.join(COLUMNS)} FROM events ORDER BY type, event_key"  # noqa: S608


def stored_events(query) -> list[dict]:
    return [dict(zip(COLUMNS, row, strict=True)) for row in query(SELECT_EVENTS)]


def quarantined(query) -> list[tuple]:
    rows = query("SELECT kind, reason, content, times_received FROM quarantine ORDER BY id")
    return [(kind, reason, bytes(content), times) for kind, reason, content, times in rows]


# --- through POST /webhook: one row per event ---------------------------------------------------


@pytest.mark.parametrize("kind", DOCUMENTED_TYPES + UNKNOWN_TYPES)
def test_every_type_is_stored_as_one_row(client, query, kind):
    item = event(kind, recipientId="someone@example.com", mailingId=123456789004)
    response = post(client, body(item))
    assert response.status_code == 200
    assert response.json == {"received": 1, "stored": 1, "duplicates": 0, "quarantined": 0}
    [row] = stored_events(query)
    assert row["type"] == kind
    assert row["client_id"] == 123456789001
    assert row["mailing_id"] == 123456789004
    assert row["recipient_id"] == "someone@example.com"
    assert HASH_KEY.fullmatch(row["event_key"])
    assert row["event_id"] is None
    assert row["payload"] == item


def test_documented_bounce_fills_the_bounce_columns(client, query):
    response = post(client, sample("bounce-event.json"))
    assert response.json == {"received": 1, "stored": 1, "duplicates": 0, "quarantined": 0}
    [row] = stored_events(query)
    assert row == {
        "event_key": BOUNCE["id"],
        "event_id": BOUNCE["id"],
        "client_id": 10180860001,
        "type": "bounce",
        "mailing_id": 10230355206,
        "user_list_id": 10180860004,
        "subscription_id": 10227900201,
        "recipient_id": "john.smith@example.com",
        "mail_id": "4P6W8B4-4P6W0LI-BSLXEC",
        "media_type": "EMAIL",
        "category": "softbounce",
        "reason": "other",
        "threshold_exceeded": False,
        "link": None,
        "device": None,
        "operating_system": None,
        "browser": None,
        "remote_address": None,
        "payload": BOUNCE,
    }


def test_documented_open_batch_fills_the_client_columns_once(client, query):
    response = post(client, sample("open-batch.json"))
    assert response.status_code == 200
    assert response.json == {"received": 2, "stored": 1, "duplicates": 1, "quarantined": 0}
    [row] = stored_events(query)
    assert HASH_KEY.fullmatch(row["event_key"])
    assert (row["device"], row["operating_system"], row["browser"], row["remote_address"]) == (
        "desktop",
        "Windows 10",
        "Firefox 64.1",
        "0.0.0.0",
    )
    assert (row["recipient_id"], row["user_list_id"], row["subscription_id"]) == (
        "123456789005",
        123456789003,
        1234567,
    )
    assert row["mail_id"] == "3IHQ2XT8-38PY7WFQ-XKNQSY"
    assert row["link"] is None
    assert row["category"] is None
    assert row["payload"] == OPEN


def test_click_fills_the_link_and_client_columns(client, query):
    assert post(client, body(CLICK)).json["stored"] == 1
    [row] = stored_events(query)
    assert row["type"] == "click"
    assert row["link"] == CLICK["link"]
    assert (row["device"], row["operating_system"], row["browser"], row["remote_address"]) == (
        "mobile",
        "Android 14",
        "Chrome Mobile 120",
        "2001:db8::1",
    )
    assert row["payload"] == CLICK


@pytest.mark.parametrize(
    "created",
    [
        1617108575391,
        1564590054000,
        "1617108575391",
        0,
        1,
        999,
        -1,
        "-1",
        4102444800001,  # 2100-01-01 00:00:00.001
        schemas.CREATED_MIN,
        pytest.param(
            schemas.CREATED_MAX,
        ),
    ],
)
def test_created_at_is_the_epoch_milliseconds_exactly(client, query, created):
    assert post(client, body(event(created=created))).json["stored"] == 1
    [(created_at,)] = query("SELECT created_at AT TIME ZONE 'UTC' FROM events")
    assert created_at == EPOCH + dt.timedelta(milliseconds=int(created))


def test_unknown_fields_and_enum_values_are_stored_and_kept_in_the_payload(client, query):
    item = {
        **BOUNCE,
        "category": "weirdbounce",
        "reason": "carrier-pigeon-lost",
        "mediaType": "PIGEON",
        "mediaTypesToAddresses": {"PIGEON": "loft 7", "EMAIL": "john.smith@example.com"},
        "brandNewField": "v2",
        "nested": {"deeper": {"list": [1, "two", None, True, 2.5]}},
        "bounceCode": 550,
    }
    response = post(client, body(item))
    assert response.json == {"received": 1, "stored": 1, "duplicates": 0, "quarantined": 0}
    [row] = stored_events(query)
    assert (row["category"], row["reason"], row["media_type"]) == (
        "weirdbounce",
        "carrier-pigeon-lost",
        "PIGEON",
    )
    assert row["payload"] == item


def test_fields_without_a_column_for_the_type_stay_in_the_payload_only(client, query):
    sent = event("sent", id="s1", device="desktop", link="https://example.com/", category="x")
    future = event("webhooknode", id="w1", browser="Firefox", thresholdExceeded="maybe")
    response = post(client, body(sent, future))
    assert response.json == {"received": 2, "stored": 2, "duplicates": 0, "quarantined": 0}
    rows = {row["type"]: row for row in stored_events(query)}
    sent_row, future_row = rows["sent"], rows["webhooknode"]
    assert (sent_row["device"], sent_row["link"], sent_row["category"]) == (None, None, None)
    assert (future_row["browser"], future_row["threshold_exceeded"]) == (None, None)
    assert rows["sent"]["payload"] == sent
    assert rows["webhooknode"]["payload"] == future


def test_ids_as_numeric_strings_are_stored_as_integers(client, query):
    item = {
        **BOUNCE,
        "clientId": "10180860001",
        "mailingId": "10230355206",
        "userListId": "10180860004",
        "subscriptionId": "10227900201",
        "created": "1617108575391",
    }
    assert post(client, body(item)).json["stored"] == 1
    [row] = stored_events(query)
    assert (row["client_id"], row["mailing_id"], row["user_list_id"], row["subscription_id"]) == (
        10180860001,
        10230355206,
        10180860004,
        10227900201,
    )
    [(created_at,)] = query("SELECT created_at AT TIME ZONE 'UTC' FROM events")
    assert created_at == EPOCH + dt.timedelta(milliseconds=1617108575391)
    assert row["payload"] == item  # as received: still strings


def test_an_integer_recipient_id_is_stored_as_text(client, query):
    assert post(client, body(event(recipientId=123456789005))).json["stored"] == 1
    [row] = stored_events(query)
    assert row["recipient_id"] == "123456789005"
    assert row["payload"]["recipientId"] == 123456789005


# --- extracted by PostgreSQL: the text columns, taken from the payload in the batch statement ----


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (42, "42"),
        (2.5, "2.5"),
        (True, "true"),
        ({"name": "desktop"}, '{"name": "desktop"}'),
        (["Firefox", 64], '["Firefox", 64]'),
        ("", ""),
        (None, None),
    ],
    ids=["integer", "float", "boolean", "object", "list", "empty", "null"],
)
def test_a_text_column_given_another_json_value_stores_its_json_text(client, query, value, stored):
    fields = ("recipientId", "mailId", "mediaType", "link", "device", "operatingSystem",
              "browser", "remoteAddress")  # fmt: skip
    item = event("click", id="c1", **dict.fromkeys(fields, value))
    assert post(client, body(item)).json == {
        "received": 1,
        "stored": 1,
        "duplicates": 0,
        "quarantined": 0,
    }
    [row] = stored_events(query)
    columns = ("recipient_id", "mail_id", "media_type", "link", "device", "operating_system",
               "browser", "remote_address")  # fmt: skip
    assert {column: row[column] for column in columns} == dict.fromkeys(columns, stored)
    assert row["payload"] == item  # as received


def test_bounce_text_columns_given_numbers_store_their_digits(client, query):
    item = event("bounce", id="b1", category=7, reason=550, thresholdExceeded="yes")
    assert post(client, body(item)).json["stored"] == 1
    [row] = stored_events(query)
    assert (row["category"], row["reason"], row["threshold_exceeded"]) == ("7", "550", True)


@pytest.mark.parametrize("value", ["maybe", 2, {"yes": True}, [True]])
def test_a_bounce_whose_threshold_exceeded_postgresql_refuses_is_quarantined_alone(
    client, query, value
):
    bad = event("bounce", id="b-bad", thresholdExceeded=value)
    response = post(client, body(event(id="before"), bad, event(id="after")))
    assert response.status_code == 200
    assert response.json == {"received": 3, "stored": 2, "duplicates": 0, "quarantined": 1}
    assert [row["event_key"] for row in stored_events(query)] == ["after", "before"]
    [(kind, reason, content, times)] = quarantined(query)
    assert (kind, json.loads(content), times) == ("event", bad, 1)
    assert reason.startswith("refused by PostgreSQL:")
    assert "boolean" in reason


def test_a_recipient_id_too_long_for_its_index_is_quarantined_alone(client, query):
    bad = event(id="long", recipientId="r" * 10_000 + "".join(chr(0x4E00 + i) for i in range(3000)))
    response = post(client, body(event(id="before"), bad))
    assert response.json == {"received": 2, "stored": 1, "duplicates": 0, "quarantined": 1}
    [(kind, reason, content, _)] = quarantined(query)
    assert (kind, json.loads(content)) == ("event", bad)
    assert reason.startswith("refused by PostgreSQL:")


def test_the_largest_bigint_client_id_is_stored(client, query):
    assert post(client, body(event(clientId=2**63 - 1), event(clientId=0))).json["stored"] == 2
    assert sorted(row["client_id"] for row in stored_events(query)) == [0, 2**63 - 1]


# --- invalid events: quarantined, the rest of the batch stored ----------------------------------


@pytest.mark.parametrize(("item", "named"), INVALID_PARAMS)
def test_an_invalid_event_is_quarantined_and_the_rest_of_the_batch_stored(
    client, query, item, named
):
    response = post(client, body(event(id="before"), item, event(id="after")))
    assert response.status_code == 200
    assert response.json == {"received": 3, "stored": 2, "duplicates": 0, "quarantined": 1}
    assert [row["event_key"] for row in stored_events(query)] == ["after", "before"]
    [(kind, reason, content, times)] = quarantined(query)
    assert kind == "event"
    assert named in reason
    assert json.loads(content) == item
    assert times == 1


def test_the_same_invalid_event_is_quarantined_once_and_counted(client, query):
    bad = event(clientId=1.5)
    assert post(client, body(bad)).json == {
        "received": 1,
        "stored": 0,
        "duplicates": 0,
        "quarantined": 1,
    }
    assert post(client, body(bad, bad)).json["quarantined"] == 2
    [(kind, reason, content, times)] = quarantined(query)
    assert (kind, json.loads(content), times) == ("event", bad, 2)
    assert "clientId" in reason


@pytest.mark.parametrize(
    "item",
    [
        event(created="--5"),
        event(created="--1564590054000"),
        event(clientId="1" * 5000),
        event(created="1" * 5000),
    ],
    ids=[
        "created-double-minus",
        "created-double-minus-realistic",
        "clientId-5000-digits",
        "created-5000-digits",
    ],
)
def test_malformed_digit_strings_are_quarantined_not_a_server_error(client, query, item):
    response = post(client, body(event(id="valid"), item))
    assert response.status_code == 200
    assert response.json["quarantined"] == 1
    assert [row["event_key"] for row in stored_events(query)] == ["valid"]


# --- idempotency --------------------------------------------------------------------------------


@pytest.mark.parametrize("item", [BOUNCE, OPEN], ids=["with-id", "without-id"])
def test_the_same_event_posted_twice_is_stored_once(client, query, item):
    first = post(client, body(item))
    second = post(client, body(item))
    assert first.json == {"received": 1, "stored": 1, "duplicates": 0, "quarantined": 0}
    assert second.status_code == 200
    assert second.json == {"received": 1, "stored": 0, "duplicates": 1, "quarantined": 0}
    assert len(stored_events(query)) == 1


def test_the_same_event_with_its_keys_reordered_is_a_duplicate(client, query):
    reordered = json.dumps([dict(reversed(OPEN.items()))]).encode()
    assert reordered != body(OPEN)
    assert post(client, body(OPEN)).json["stored"] == 1
    again = post(client, reordered)
    assert again.json == {"received": 1, "stored": 0, "duplicates": 1, "quarantined": 0}
    assert len(stored_events(query)) == 1


def test_events_without_id_differing_in_one_field_are_never_merged(client, query):
    variants = [{**OPEN, **change} for change in SINGLE_FIELD_CHANGES.values()]
    response = post(client, body(OPEN, *variants))
    count = len(variants) + 1
    assert response.json == {"received": count, "stored": count, "duplicates": 0, "quarantined": 0}
    assert len(stored_events(query)) == count


def test_two_different_events_with_an_empty_id_are_both_stored(client, query):
    first, second = event(id="", recipientId="a"), event(id="", recipientId="b")
    response = post(client, body(first, second))
    assert response.json == {"received": 2, "stored": 2, "duplicates": 0, "quarantined": 0}
    rows = stored_events(query)
    assert len(rows) == 2
    assert all(HASH_KEY.fullmatch(row["event_key"]) for row in rows)
    assert {row["recipient_id"] for row in rows} == {"a", "b"}


@pytest.mark.parametrize(
    "change",
    [{"type": "click"}, {"clientId": 987654321}],
    ids=["different-type", "different-client"],
)
def test_the_same_id_for_another_type_or_client_is_another_row(client, query, change):
    original = event(id="shared-id")
    response = post(client, body(original, {**original, **change}))
    assert response.json == {"received": 2, "stored": 2, "duplicates": 0, "quarantined": 0}
    rows = stored_events(query)
    assert [row["event_key"] for row in rows] == ["shared-id", "shared-id"]
    assert {(row["type"], row["client_id"]) for row in rows} == {
        ("open", 123456789001),
        (change.get("type", "open"), change.get("clientId", 123456789001)),
    }


def test_the_same_id_type_and_client_is_a_duplicate_whatever_else_differs(client, query):
    assert post(client, body(event(id="e-1", device="desktop"))).json["stored"] == 1
    again = post(client, body(event(id="e-1", device="mobile")))
    assert again.json == {"received": 1, "stored": 0, "duplicates": 1, "quarantined": 0}
    [row] = stored_events(query)
    assert row["device"] == "desktop"  # the first delivery wins
