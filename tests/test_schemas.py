"""Event validation (receiver.schemas): unit level, and through POST /webhook into real tables."""

import datetime as dt
import hashlib
import json
import re

import pytest

from receiver import jsoncodec, schemas

from support import basic, body, event, sample

DOCUMENTED_TYPES = [
    "open", "click", "sent", "bounce", "unsubscribe", "spamcomplaint", "singleoptin",
    "confirmedoptin", "doubleoptin", "blocklist", "archive", "archived", "filteredbyblocklist",
]
UNKNOWN_TYPES = ["webhooknode", "futuretype"]
BOUNCE = json.loads(sample("bounce-event.json"))
OPEN = json.loads(sample("open-batch.json"))[0]
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
HASH_KEY = re.compile(r"sha256:[0-9a-f]{64}")

EVENT_COLUMNS = (
    "event_key", "event_id", "client_id", "type", "mailing_id", "user_list_id", "subscription_id",
    "recipient_id", "mail_id", "media_type", "category", "reason", "threshold_exceeded", "link",
    "device", "operating_system", "browser", "remote_address", "payload",
)
SELECT_EVENTS = (
    "SELECT event_key, event_id, client_id, type, mailing_id, user_list_id, subscription_id,"
    " recipient_id, mail_id, media_type, category, reason, threshold_exceeded, link, device,"
    " operating_system, browser, remote_address, payload FROM events ORDER BY type, event_key"
)


def post(client, *events):
    return client.post("/webhook", data=body(*events), headers=basic())


def stored_events(query) -> list[dict]:
    return [dict(zip(EVENT_COLUMNS, row, strict=True)) for row in query(SELECT_EVENTS)]


def quarantined(query) -> list[tuple]:
    rows = query("SELECT kind, reason, content, times_received FROM quarantine ORDER BY id")
    return [(kind, reason, bytes(content), times) for kind, reason, content, times in rows]


def without(field, item=None):
    """A valid event (or `item`) with `field` removed."""
    return {k: v for k, v in (item or event()).items() if k != field}


def key_of(item) -> str:
    data, _ = schemas.validate_event(item)
    return data["event_key"]


# (test id, item, what the quarantine reason must name)
INVALID_EVENTS = [
    ("clientId-missing", without("clientId"), "clientId"),
    ("clientId-null", event(clientId=None), "clientId"),
    ("clientId-float", event(clientId=1.5), "clientId"),
    ("clientId-whole-float", event(clientId=12.0), "clientId"),
    ("clientId-leading-space", event(clientId=" 12"), "clientId"),
    ("clientId-trailing-space", event(clientId="12 "), "clientId"),
    ("clientId-arabic-indic-digits", event(clientId="١٢"), "clientId"),
    ("clientId-plus-sign", event(clientId="+12"), "clientId"),
    ("clientId-empty-string", event(clientId=""), "clientId"),
    ("clientId-exponent-string", event(clientId="1e3"), "clientId"),
    ("clientId-true", event(clientId=True), "clientId"),
    ("clientId-negative", event(clientId=-1), "clientId"),
    ("clientId-negative-string", event(clientId="-12"), "clientId"),
    ("clientId-above-bigint", event(clientId=2**63), "clientId"),
    ("clientId-above-bigint-string", event(clientId=str(2**63)), "clientId"),
    ("clientId-beyond-64-bits", event(clientId=123456789012345678901234567890), "clientId"),
    ("mailingId-not-digits", event(mailingId="abc"), "mailingId"),
    ("userListId-float", event(userListId=1.5), "userListId"),
    ("subscriptionId-negative", event(subscriptionId=-5), "subscriptionId"),
    ("created-missing", without("created"), "created"),
    ("created-null", event(created=None), "created"),
    ("created-float", event(created=1564590054000.5), "created"),
    ("created-iso-date", event(created="2019-07-31T16:20:54Z"), "created"),
    ("created-true", event(created=True), "created"),
    ("created-below-year-1", event(created=schemas.CREATED_MIN - 1), "created"),
    ("created-above-year-9999", event(created=schemas.CREATED_MAX + 1), "created"),
    ("created-far-out-of-range", event(created=10**18), "created"),
    ("type-missing", without("type"), "type"),
    ("type-empty", event(""), "type"),
    ("type-null", event(None), "type"),
    ("type-number", event(5), "type"),
    ("type-list", event(["open"]), "type"),
    ("type-too-long", event("x" * (schemas.MAX_TYPE_LENGTH + 1)), "type"),
    ("id-float", event(id=1.5), "id"),
    ("id-too-long", event(id="x" * (schemas.MAX_EVENT_ID_LENGTH + 1)), "id"),
    ("recipientId-boolean", event(recipientId=False), "recipientId"),
    ("mediaType-number", event(mediaType=1), "mediaType"),
    ("device-number", event(device=42), "device"),
    ("device-object", event(device={"name": "desktop"}), "device"),
    ("browser-list", event(browser=["Firefox"]), "browser"),
    ("link-number", event("click", link=5), "link"),
    ("thresholdExceeded-maybe", event("bounce", thresholdExceeded="maybe"), "thresholdExceeded"),
    ("category-number", event("bounce", category=7), "category"),
    ("not-an-object-number", 42, "not an object"),
    ("not-an-object-string", "open", "not an object"),
    ("not-an-object-null", None, "not an object"),
    ("not-an-object-list", [event()], "not an object"),
    ("not-an-object-boolean", True, "not an object"),
]
INVALID_PARAMS = [pytest.param(item, named, id=name) for name, item, named in INVALID_EVENTS]


# --- schema_for ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", DOCUMENTED_TYPES)
def test_schema_for_gives_each_documented_type_its_own_schema(kind):
    expected = {
        "open": schemas.OpenSchema,
        "click": schemas.ClickSchema,
        "bounce": schemas.BounceSchema,
    }.get(kind, schemas.EventSchema)
    schema = schemas.schema_for(event(kind))
    assert schema is schemas.SCHEMAS[kind]
    assert type(schema) is expected


@pytest.mark.parametrize(
    "item",
    [event("webhooknode"), event("OPEN"), without("type"), event(None), event(5), event(["open"])],
    ids=["unknown-type", "wrong-case", "no-type", "null-type", "number-type", "list-type"],
)
def test_schema_for_falls_back_to_the_generic_schema(item):
    assert schemas.schema_for(item) is schemas.GENERIC_SCHEMA


# --- validate_event -----------------------------------------------------------------------------


def test_validate_event_extracts_the_typed_fields_of_the_bounce_sample():
    data, payload = schemas.validate_event(BOUNCE)
    assert data == {
        "type": "bounce",
        "event_id": BOUNCE["id"],
        "event_key": BOUNCE["id"],
        "client_id": 10180860001,
        "created": 1617108575391,
        "mailing_id": 10230355206,
        "user_list_id": 10180860004,
        "subscription_id": 10227900201,
        "recipient_id": "john.smith@example.com",
        "mail_id": "4P6W8B4-4P6W0LI-BSLXEC",
        "media_type": "EMAIL",
        "category": "softbounce",
        "reason": "other",
        "threshold_exceeded": False,
    }
    assert json.loads(payload) == BOUNCE


@pytest.mark.parametrize(
    ("field", "value", "column", "expected"),
    [
        ("clientId", "10180860001", "client_id", 10180860001),
        ("clientId", "0", "client_id", 0),
        ("clientId", "007", "client_id", 7),
        ("clientId", str(2**63 - 1), "client_id", 2**63 - 1),
        ("clientId", 2**63 - 1, "client_id", 2**63 - 1),
        ("mailingId", "10230355206", "mailing_id", 10230355206),
        ("userListId", "10180860004", "user_list_id", 10180860004),
        ("subscriptionId", "10227900201", "subscription_id", 10227900201),
        ("mailingId", None, "mailing_id", None),
        ("created", "1617108575391", "created", 1617108575391),
        ("created", "-1000", "created", -1000),
        ("created", schemas.CREATED_MIN, "created", schemas.CREATED_MIN),
        ("created", schemas.CREATED_MAX, "created", schemas.CREATED_MAX),
        ("recipientId", 123456789005, "recipient_id", "123456789005"),
        ("id", 42, "event_id", "42"),
        ("device", None, "device", None),
        ("thresholdExceeded", True, "threshold_exceeded", True),
        ("thresholdExceeded", None, "threshold_exceeded", None),
    ],
)
def test_validate_event_accepts_and_normalises(field, value, column, expected):
    kind = "bounce" if field == "thresholdExceeded" else "open"
    data, payload = schemas.validate_event(event(kind, **{field: value}))
    assert data[column] == expected
    assert type(data[column]) is type(expected)
    assert json.loads(payload)[field] == value  # the payload keeps what was sent


@pytest.mark.parametrize(("item", "named"), INVALID_PARAMS)
def test_validate_event_refuses_invalid_values_naming_the_field(item, named):
    with pytest.raises(schemas.InvalidEvent) as refused:
        schemas.validate_event(item)
    assert named in str(refused.value)


def test_unknown_fields_do_not_reach_the_typed_fields_but_stay_in_the_payload():
    item = event("sent", device="desktop", newField={"nested": [1, 2]}, link="https://x.test/")
    data, payload = schemas.validate_event(item)
    assert "device" not in data
    assert "link" not in data
    assert "newField" not in data
    assert json.loads(payload) == item


# --- event_key ----------------------------------------------------------------------------------


def test_event_key_is_campaigns_id_when_there_is_one():
    assert key_of(BOUNCE) == "0a673102-178d27b2c8c-178d2cac0e4-c7420699923845e"
    assert key_of(event(id=987654321)) == "987654321"


def test_event_key_without_id_is_the_sha256_of_the_canonical_event():
    key = key_of(OPEN)
    assert HASH_KEY.fullmatch(key)
    assert key == "sha256:" + hashlib.sha256(jsoncodec.canonical(OPEN)).hexdigest()


@pytest.mark.parametrize(
    "missing_id", [{}, {"id": ""}, {"id": None}], ids=["absent", "empty", "null"]
)
def test_event_key_treats_an_empty_or_null_id_as_no_id(missing_id):
    assert HASH_KEY.fullmatch(key_of({**OPEN, **missing_id}))


def test_event_key_does_not_depend_on_key_order():
    nested = {"EMAIL": "a@example.com", "SMS": "+4912345"}
    extra = {"b": 1, "a": [{"y": 1, "x": 2}]}
    item = event(recipientId="r1", mediaTypesToAddresses=nested, extra=extra)
    reordered = dict(reversed(item.items()))
    reordered["mediaTypesToAddresses"] = dict(reversed(nested.items()))
    reordered["extra"] = {"a": [{"x": 2, "y": 1}], "b": 1}
    assert list(reordered) != list(item)
    assert key_of(reordered) == key_of(item)


SINGLE_FIELD_CHANGES = {
    "type": {"type": "click"},
    "clientId": {"clientId": 123456789002},
    "clientId-as-string": {"clientId": "123456789001"},
    "created-by-1ms": {"created": 1564590054001},
    "recipientId": {"recipientId": "123456789006"},
    "mailingId": {"mailingId": 123456789099},
    "device": {"device": "mobile"},
    "remoteAddress": {"remoteAddress": "0.0.0.1"},
    "nested-value": {"mediaTypesToAddresses": {"EMAIL": "other@example.com"}},
    "added-field": {"newField": None},
    "empty-id-added": {"id": ""},
}


@pytest.mark.parametrize("change", SINGLE_FIELD_CHANGES.values(), ids=SINGLE_FIELD_CHANGES.keys())
def test_event_key_differs_when_any_single_field_differs(change):
    base = {**OPEN, "mediaTypesToAddresses": {"EMAIL": "john@example.com"}}
    assert key_of({**base, **change}) != key_of(base)


# --- through POST /webhook: one row per event ---------------------------------------------------


@pytest.mark.parametrize("kind", DOCUMENTED_TYPES + UNKNOWN_TYPES)
def test_every_type_is_stored_as_one_row(client, query, kind):
    item = event(kind, recipientId="someone@example.com", mailingId=123456789004)
    response = post(client, item)
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
    response = client.post("/webhook", data=sample("bounce-event.json"), headers=basic())
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
    response = client.post("/webhook", data=sample("open-batch.json"), headers=basic())
    assert response.status_code == 200
    assert response.json == {"received": 2, "stored": 1, "duplicates": 1, "quarantined": 0}
    [row] = stored_events(query)
    assert HASH_KEY.fullmatch(row["event_key"])
    assert (row["device"], row["operating_system"], row["browser"], row["remote_address"]) == (
        "desktop", "Windows 10", "Firefox 64.1", "0.0.0.0",
    )
    assert (row["recipient_id"], row["user_list_id"], row["subscription_id"]) == (
        "123456789005", 123456789003, 1234567,
    )
    assert row["mail_id"] == "3IHQ2XT8-38PY7WFQ-XKNQSY"
    assert row["link"] is None
    assert row["category"] is None
    assert row["payload"] == OPEN


def test_click_fills_the_link_and_client_columns(client, query):
    assert post(client, CLICK).json["stored"] == 1
    [row] = stored_events(query)
    assert row["type"] == "click"
    assert row["link"] == CLICK["link"]
    assert (row["device"], row["operating_system"], row["browser"], row["remote_address"]) == (
        "mobile", "Android 14", "Chrome Mobile 120", "2001:db8::1",
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
    assert post(client, event(created=created)).json["stored"] == 1
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
    response = post(client, item)
    assert response.json == {"received": 1, "stored": 1, "duplicates": 0, "quarantined": 0}
    [row] = stored_events(query)
    assert (row["category"], row["reason"], row["media_type"]) == (
        "weirdbounce", "carrier-pigeon-lost", "PIGEON",
    )
    assert row["payload"] == item


def test_fields_without_a_column_for_the_type_stay_in_the_payload_only(client, query):
    sent = event("sent", id="s1", device="desktop", link="https://example.com/", category="x")
    future = event("webhooknode", id="w1", browser="Firefox", thresholdExceeded="maybe")
    response = post(client, sent, future)
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
    assert post(client, item).json["stored"] == 1
    [row] = stored_events(query)
    assert (row["client_id"], row["mailing_id"], row["user_list_id"], row["subscription_id"]) == (
        10180860001, 10230355206, 10180860004, 10227900201,
    )
    [(created_at,)] = query("SELECT created_at AT TIME ZONE 'UTC' FROM events")
    assert created_at == EPOCH + dt.timedelta(milliseconds=1617108575391)
    assert row["payload"] == item  # as received: still strings


def test_an_integer_recipient_id_is_stored_as_text(client, query):
    assert post(client, event(recipientId=123456789005)).json["stored"] == 1
    [row] = stored_events(query)
    assert row["recipient_id"] == "123456789005"
    assert row["payload"]["recipientId"] == 123456789005


def test_the_largest_bigint_client_id_is_stored(client, query):
    assert post(client, event(clientId=2**63 - 1), event(clientId=0)).json["stored"] == 2
    assert sorted(row["client_id"] for row in stored_events(query)) == [0, 2**63 - 1]


# --- invalid events: quarantined, the rest of the batch stored ----------------------------------


@pytest.mark.parametrize(("item", "named"), INVALID_PARAMS)
def test_an_invalid_event_is_quarantined_and_the_rest_of_the_batch_stored(
    client, query, item, named
):
    response = post(client, event(id="before"), item, event(id="after"))
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
    assert post(client, bad).json == {"received": 1, "stored": 0, "duplicates": 0, "quarantined": 1}
    assert post(client, bad, bad).json["quarantined"] == 2
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
    ids=["created-double-minus", "created-double-minus-realistic", "clientId-5000-digits",
         "created-5000-digits"],
)
def test_malformed_digit_strings_are_quarantined_not_a_server_error(client, query, item):
    response = post(client, event(id="valid"), item)
    assert response.status_code == 200
    assert response.json["quarantined"] == 1
    assert [row["event_key"] for row in stored_events(query)] == ["valid"]


# --- idempotency --------------------------------------------------------------------------------


@pytest.mark.parametrize("item", [BOUNCE, OPEN], ids=["with-id", "without-id"])
def test_the_same_event_posted_twice_is_stored_once(client, query, item):
    first = post(client, item)
    second = post(client, item)
    assert first.json == {"received": 1, "stored": 1, "duplicates": 0, "quarantined": 0}
    assert second.status_code == 200
    assert second.json == {"received": 1, "stored": 0, "duplicates": 1, "quarantined": 0}
    assert len(stored_events(query)) == 1


def test_the_same_event_with_its_keys_reordered_is_a_duplicate(client, query):
    reordered = json.dumps([dict(reversed(OPEN.items()))]).encode()
    assert reordered != body(OPEN)
    assert post(client, OPEN).json["stored"] == 1
    again = client.post("/webhook", data=reordered, headers=basic())
    assert again.json == {"received": 1, "stored": 0, "duplicates": 1, "quarantined": 0}
    assert len(stored_events(query)) == 1


def test_events_without_id_differing_in_one_field_are_never_merged(client, query):
    variants = [{**OPEN, **change} for change in SINGLE_FIELD_CHANGES.values()]
    response = post(client, OPEN, *variants)
    count = len(variants) + 1
    assert response.json == {"received": count, "stored": count, "duplicates": 0, "quarantined": 0}
    assert len(stored_events(query)) == count


def test_two_different_events_with_an_empty_id_are_both_stored(client, query):
    first, second = event(id="", recipientId="a"), event(id="", recipientId="b")
    response = post(client, first, second)
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
    response = post(client, original, {**original, **change})
    assert response.json == {"received": 2, "stored": 2, "duplicates": 0, "quarantined": 0}
    rows = stored_events(query)
    assert [row["event_key"] for row in rows] == ["shared-id", "shared-id"]
    assert {(row["type"], row["client_id"]) for row in rows} == {
        ("open", 123456789001),
        (change.get("type", "open"), change.get("clientId", 123456789001)),
    }


def test_the_same_id_type_and_client_is_a_duplicate_whatever_else_differs(client, query):
    assert post(client, event(id="e-1", device="desktop")).json["stored"] == 1
    again = post(client, event(id="e-1", device="mobile"))
    assert again.json == {"received": 1, "stored": 0, "duplicates": 1, "quarantined": 0}
    [row] = stored_events(query)
    assert row["device"] == "desktop"  # the first delivery wins
