"""Event validation (receiver.ingest.schemas): schema_for, validate_event and event_key."""

import hashlib
import json

import pytest
from marshmallow import validate

from receiver.ingest import jsoncodec, schemas

from support import event
from support.events import (
    BOUNCE,
    DOCUMENTED_TYPES,
    HASH_KEY,
    INVALID_PARAMS,
    OPEN,
    SINGLE_FIELD_CHANGES,
)


def key_of(item) -> str:
    data, _ = schemas.validate_event(item)
    return data["event_key"]


# --- schema_for ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", DOCUMENTED_TYPES)
def test_every_documented_type_is_a_bounded_metric_label(kind):
    assert kind in schemas.SCHEMAS


def test_one_schema_validates_only_acceptance_and_identity():
    # The text columns are PostgreSQL's to extract (receiver.storage.events.EXTRACTED_COLUMNS).
    assert set(schemas.EventSchema().load_fields) == {
        "type",
        "client_id",
        "created",
        "event_id",
        "mailing_id",
        "user_list_id",
        "subscription_id",
    }
    assert set(schemas.SCHEMAS.values()) == {schemas.GENERIC_SCHEMA}


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
        ("id", 42, "event_id", "42"),
    ],
)
def test_validate_event_accepts_and_normalises(field, value, column, expected):
    data, payload = schemas.validate_event(event("open", **{field: value}))
    assert data[column] == expected
    assert type(data[column]) is type(expected)
    assert json.loads(payload)[field] == value  # the payload keeps what was sent


@pytest.mark.parametrize(("item", "named"), INVALID_PARAMS)
def test_validate_event_refuses_invalid_values_naming_the_field(item, named):
    with pytest.raises(schemas.InvalidEvent) as refused:
        schemas.validate_event(item)
    assert named in str(refused.value)


@pytest.mark.parametrize("value", [42, {"name": "desktop"}, ["Firefox"], True])
def test_text_fields_are_not_validated_here(value):
    # PostgreSQL extracts them from the payload: tests/integration/ingest/test_schemas.py.
    item = event("click", device=value, link=value, recipientId=value, mailId=value)
    data, payload = schemas.validate_event(item)
    assert {"device", "link", "recipient_id", "mail_id"}.isdisjoint(data)
    assert json.loads(payload) == item


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


@pytest.mark.parametrize("change", SINGLE_FIELD_CHANGES.values(), ids=SINGLE_FIELD_CHANGES.keys())
def test_event_key_differs_when_any_single_field_differs(change):
    base = {**OPEN, "mediaTypesToAddresses": {"EMAIL": "john@example.com"}}
    assert key_of({**base, **change}) != key_of(base)


# --- validate_events: the batch loaded as columns -----------------------------------------------

ACCEPTED_VARIANTS = [
    event("open", clientId="10180860001", created="-1000", mailingId=None, id=42),
    event("bounce", mailingId="007", userListId=2**63 - 1, subscriptionId="0", id=""),
    event("x" * schemas.MAX_TYPE_LENGTH, created=schemas.CREATED_MAX, id="x" * 512),
    event("newtype", created=schemas.CREATED_MIN, unknownField=[1, 2]),
    BOUNCE,
    OPEN,
] + [event(kind) for kind in DOCUMENTED_TYPES]


def test_a_batch_loads_as_columns_exactly_as_event_by_event():
    # The fast path (BATCH_SCHEMA, one load a batch) must give each event the same fields as
    # EventSchema would, absent ones absent: it is what is stored.
    assert schemas.load_columns(ACCEPTED_VARIANTS) == [
        schemas.GENERIC_SCHEMA.load(item) for item in ACCEPTED_VARIANTS
    ]


@pytest.mark.parametrize(("item", "named"), INVALID_PARAMS)
def test_one_invalid_event_fails_the_column_load_and_is_named_event_by_event(item, named):
    if isinstance(item, dict):
        with pytest.raises(schemas.ValidationError):
            schemas.load_columns([*ACCEPTED_VARIANTS, item])
    outcomes = list(schemas.validate_events([*ACCEPTED_VARIANTS, item]))
    assert [type(outcome) for _, outcome in outcomes[:-1]] == [schemas.ValidatedEvent] * len(
        ACCEPTED_VARIANTS
    )
    assert isinstance(outcomes[-1][1], schemas.InvalidEvent)
    assert named in str(outcomes[-1][1])


def test_a_column_applies_the_validators_declared_on_its_field():
    column = schemas.Column(schemas.CampaignId(validate=validate.Range(max=5)))
    assert column.deserialize([1, "5"]) == [1, 5]
    with pytest.raises(schemas.ValidationError):
        column.deserialize([1, 9])
