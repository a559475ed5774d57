"""Event validation (receiver.ingest.schemas): schema_for, validate_event and event_key."""

import decimal
import functools
import hashlib
import json
from unittest import mock

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
    return schemas.validate_event(item).event_key


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
    validated = schemas.validate_event(BOUNCE)
    assert validated._asdict() == {
        "type": "bounce",
        "event_id": BOUNCE["id"],
        "event_key": BOUNCE["id"],
        "client_id": 10180860001,
        "created": 1617108575391,
        "mailing_id": 10230355206,
        "user_list_id": 10180860004,
        "subscription_id": 10227900201,
        "payload": validated.payload,
    }
    assert type(validated.payload) is bytes
    assert json.loads(validated.payload) == BOUNCE


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
    validated = schemas.validate_event(event("open", **{field: value}))
    assert getattr(validated, column) == expected
    assert type(getattr(validated, column)) is type(expected)
    assert json.loads(validated.payload)[field] == value  # the payload keeps what was sent


@pytest.mark.parametrize(("item", "named"), INVALID_PARAMS)
def test_validate_event_refuses_invalid_values_naming_the_field(item, named):
    with pytest.raises(schemas.InvalidEvent) as refused:
        schemas.validate_event(item)
    assert named in str(refused.value)


@pytest.mark.parametrize("value", [42, {"name": "desktop"}, ["Firefox"], True])
def test_text_fields_are_not_validated_here(value):
    # PostgreSQL extracts them from the payload: tests/integration/ingest/test_schemas.py.
    item = event("click", device=value, link=value, recipientId=value, mailId=value)
    assert json.loads(schemas.validate_event(item).payload) == item
    assert schemas.validate_batch([item]).events[0].payload == item


def test_unknown_fields_do_not_reach_the_typed_fields_but_stay_in_the_payload():
    item = event("sent", device="desktop", newField={"nested": [1, 2]}, link="https://x.test/")
    validated = schemas.validate_event(item)
    assert "desktop" not in validated[:-1]
    assert "https://x.test/" not in validated[:-1]
    assert json.loads(validated.payload) == item


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


# --- validate_batch: the batch loaded as columns -----------------------------------------------

ACCEPTED_VARIANTS = [
    event("open", clientId="10180860001", created="-1000", mailingId=None, id=42),
    event("bounce", mailingId="007", userListId=2**63 - 1, subscriptionId="0", id=""),
    event("x" * schemas.MAX_TYPE_LENGTH, created=schemas.CREATED_MAX, id="x" * 512),
    event("newtype", created=schemas.CREATED_MIN, unknownField=[1, 2]),
    event("sent", id=None, subscriptionId=None),
    BOUNCE,
    OPEN,
] + [event(kind) for kind in DOCUMENTED_TYPES]


def as_bytes(events):
    return [validated._replace(payload=validated.content) for validated in events]


@pytest.mark.parametrize("count", [1, 2, len(ACCEPTED_VARIANTS)])
def test_a_batch_validates_as_columns_exactly_as_event_by_event(count):
    # The fast path (BATCH_SCHEMA, one load a batch) must give each event the same fields and
    # key as EventSchema would: it is what is stored. Its payloads are the parsed events.
    items = ACCEPTED_VARIANTS[-count:]
    batch = schemas.validate_batch(items).events
    assert [validated.payload for validated in batch] == items
    assert as_bytes(batch) == [schemas.validate_event(item) for item in items]


def test_a_batch_of_plain_values_takes_the_whole_column_check():
    # The usual batch (integers, strings, ids absent or present) never checks value by value.
    items = [OPEN, BOUNCE, event("sent", mailingId=None)]
    with mock.patch.object(schemas.Column, "_check_each", side_effect=AssertionError):
        assert len(schemas.validate_batch(items).events) == 3


@pytest.mark.parametrize(("item", "named"), INVALID_PARAMS)
def test_one_invalid_event_fails_the_batch_and_is_named_event_by_event(item, named):
    if isinstance(item, dict):
        with pytest.raises(schemas.ValidationError):
            schemas.load_columns([*ACCEPTED_VARIANTS, item])
    assert schemas.validate_batch([*ACCEPTED_VARIANTS, item]) is None
    outcomes = list(schemas.validate_events([*ACCEPTED_VARIANTS, item]))
    assert [type(outcome) for _, outcome in outcomes[:-1]] == [schemas.ValidatedEvent] * len(
        ACCEPTED_VARIANTS
    )
    assert isinstance(outcomes[-1][1], schemas.InvalidEvent)
    assert named in str(outcomes[-1][1])


@pytest.mark.parametrize(
    "unstorable",
    [
        event("open", note="a\x00b"),
        event("open", amount=decimal.Decimal("0.10000000000000000001")),
        event("open", big=2**70),
        event("open", text="\ud800"),
        event("open", deep=functools.reduce(lambda inner, _: [inner], range(252), 1)),
    ],
    ids=["nul", "decimal", "long-integer", "surrogate", "deep"],
)
def test_a_batch_with_a_payload_orjson_cannot_store_as_parsed_goes_event_by_event(unstorable):
    # Stored exactly (a Decimal, a long integer) or refused with its reason, one by one.
    assert schemas.validate_batch([OPEN, unstorable]) is None
    assert type(schemas.validate_event(OPEN).payload) is bytes


@pytest.mark.parametrize(
    ("field", "values"),
    [
        (schemas.CampaignId(), [1, True]),
        (schemas.CampaignId(), [1, -1]),
        (schemas.CampaignId(), [1, 2**63]),
        (schemas.CampaignId(), [1, 1.0]),
        (schemas.CampaignId(required=True), [1, schemas.missing]),
        (schemas.CampaignId(), [1, None]),
        (schemas.EpochMillis(), [0, schemas.CREATED_MAX + 1]),
        (schemas.EpochMillis(), [0, schemas.CREATED_MIN - 1]),
        (schemas.Text(allow_empty=False, allow_none=False), ["a", ""]),
        (schemas.Text(allow_none=False), ["a", None]),
        (schemas.Text(max_length=3), ["abc", "abcd"]),
        (schemas.Text(), ["a", 1]),
    ],
)
def test_a_column_refuses_what_its_field_refuses(field, values):
    with pytest.raises(schemas.ValidationError):
        schemas.Column(field).deserialize(values)
    with pytest.raises(schemas.ValidationError):
        for value in values:
            field.deserialize(value)


@pytest.mark.parametrize(
    ("field", "values", "expected"),
    [
        (schemas.CampaignId(allow_none=True), [1, None, schemas.missing], [1, None, None]),
        (schemas.CampaignId(), ["7", 8], [7, 8]),
        (schemas.CampaignId(), [0, 2**63 - 1], [0, 2**63 - 1]),
        (schemas.Text(numbers=True, max_length=3), [None, 42, "abc"], [None, "42", "abc"]),
        (schemas.Text(), [schemas.missing] * 2, [None, None]),
        (schemas.EpochMillis(), [schemas.CREATED_MIN, "-1"], [schemas.CREATED_MIN, -1]),
    ],
)
def test_a_column_loads_what_its_field_loads(field, values, expected):
    assert schemas.Column(field).deserialize(values) == expected


def test_a_column_applies_the_validators_declared_on_its_field():
    column = schemas.Column(schemas.CampaignId(validate=validate.Range(max=5)))
    assert column.deserialize([1, "5"]) == [1, 5]
    with pytest.raises(schemas.ValidationError):
        column.deserialize([1, 9])


@pytest.mark.parametrize("reserved", ["sha256:", "id:"])
def test_an_id_that_looks_like_another_kind_of_key_is_escaped(reserved):
    """An id `sha256:<hex>` took the key of the id-less event with that digest, which was then
    answered as a duplicate and never stored: two different events merged."""
    content = schemas.content_key(OPEN)
    claimed = reserved + content.removeprefix("sha256:")
    forger = {**OPEN, "id": claimed}
    key = schemas.validate_event(forger).event_key
    assert key == "id:" + claimed
    assert key != content
    batch = schemas.validate_batch([OPEN, forger])
    assert [event.event_key for event in batch.events] == [content, "id:" + claimed]
    assert batch.events[1].event_id == claimed  # the id itself is stored as sent


def test_an_ordinary_id_is_its_own_key():
    assert (
        schemas.validate_event({**OPEN, "id": "0a673102-178d27b2"}).event_key == "0a673102-178d27b2"
    )
    assert schemas.validate_event({**OPEN, "id": "ids:x"}).event_key == "ids:x"
