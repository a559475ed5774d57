"""Marshmallow schemas for Campaign's events, and the batch validator built on them.

The schema checks what decides acceptance and identity (type, client, created, id, numeric ids);
the text columns are taken from `payload` by PostgreSQL, and everything else in the event is
kept as received in `payload`, so new fields need no change here (forward compatibility). An
unknown `type` is validated like any other event and stored.
"""

import functools
import hashlib
import re
from typing import NamedTuple

import orjson
from marshmallow import EXCLUDE, Schema, ValidationError, fields, missing

from ..campaign import EVENT_TYPES, LISTED_AS
from . import jsoncodec

BIGINT_MAX = 2**63 - 1
# created is epoch milliseconds; this window is what PostgreSQL and Python both represent
# (0001-01-01 to 9999-12-31). Anything outside is a broken value, not a date.
CREATED_MIN = -62_135_596_800_000
CREATED_MAX = 253_402_300_799_999
MAX_EVENT_ID_LENGTH = 512
# Event keys (receiver.storage.events): an id as it is, a content key as CONTENT_KEY + digest,
# and an id that starts with either prefix as ESCAPED_ID + id. Each kind of key is then told
# from the others by its start, so an id never equals another event's content key.
CONTENT_KEY, ESCAPED_ID = "sha256:", "id:"
RESERVED = (CONTENT_KEY, ESCAPED_ID)
MAX_TYPE_LENGTH = 100
# ASCII digits only, and few enough of them that int() cannot refuse (Python caps conversions
# at 4300 digits) and the value has a chance to fit: everything else is a validation error.
_ID_DIGITS = re.compile(r"[0-9]{1,19}")
_MILLIS_DIGITS = re.compile(r"-?[0-9]{1,16}")


class CheckedField(fields.Field):
    """Base of our fields: they check their values in `_deserialize` themselves.

    Marshmallow builds a `validate.And` of a field's validators on every call, even when there
    are none; ours have none, and this runs for every field of every event (1,400 times for a
    batch of 100 opens), so the empty step is skipped."""

    def _validate(self, value):
        if self.validators:
            super()._validate(value)

    def deserialize(self, value, attr=None, data=None, **kwargs):
        # A present, non-null value of a field without pre_load functions or validators (all
        # of ours) goes straight to our check: Field.deserialize would only add the missing and
        # null tests that cannot apply and empty loops, 700 times a batch. Anything else takes
        # marshmallow's own path, so required/allow_none/load_default behave as declared.
        if value is None or value is missing or self.pre_load or self.validators:
            return super().deserialize(value, attr, data, **kwargs)
        return self._deserialize(value, attr, data, **kwargs)

    def accepts_all(self, values: list) -> bool:
        """Whether `_deserialize` would return every one of these values unchanged, tested on
        the whole list at once in C (set, min, max); False only means: check each."""
        return False


class CampaignId(CheckedField):
    """A non-negative id that fits bigint, as a JSON integer or a string of ASCII digits.

    Floats are refused: an 11+ digit id that went through a float may have lost digits, and
    storing a wrong id is worse than quarantining the event."""

    default_error_messages = {"invalid": "Not a whole number from 0 to 2^63-1."}

    def _deserialize(self, value, attr, data, **kwargs):
        if type(value) is not int:  # a plain integer, the usual case, goes straight on
            if not (isinstance(value, str) and _ID_DIGITS.fullmatch(value)):
                raise self.make_error("invalid")
            value = int(value)
        if not 0 <= value <= BIGINT_MAX:
            raise self.make_error("invalid")
        return value

    def accepts_all(self, values):
        return _only(values, int) and min(values) >= 0 and max(values) <= BIGINT_MAX


class EpochMillis(CheckedField):
    """Epoch milliseconds as a JSON integer or a string of ASCII digits (optionally signed)."""

    default_error_messages = {"invalid": "Not epoch milliseconds between years 1 and 9999."}

    def _deserialize(self, value, attr, data, **kwargs):
        if type(value) is not int:  # a plain integer, the usual case, goes straight on
            if not (isinstance(value, str) and _MILLIS_DIGITS.fullmatch(value)):
                raise self.make_error("invalid")
            value = int(value)
        if not CREATED_MIN <= value <= CREATED_MAX:
            raise self.make_error("invalid")
        return value

    def accepts_all(self, values):
        return _only(values, int) and min(values) >= CREATED_MIN and max(values) <= CREATED_MAX


class Text(CheckedField):
    """A string of at most `max_length` characters; with `numbers=True` a JSON integer is
    accepted and kept as its digits. (The length check lives here rather than in a `validate=`
    validator, which marshmallow rebuilds on every call: this runs 100 times a batch.)"""

    default_error_messages = {
        "invalid": "Not a string.",
        "empty": "Must not be empty.",
        "too_long": "Longer than {max_length} characters.",
    }

    def __init__(self, *, numbers=False, max_length=None, allow_empty=True, **kwargs):
        kwargs.setdefault("allow_none", True)
        super().__init__(**kwargs)
        self.numbers, self.max_length, self.allow_empty = numbers, max_length, allow_empty

    def _deserialize(self, value, attr, data, **kwargs):
        if self.numbers and type(value) is int:
            value = str(value)
        if not isinstance(value, str):
            raise self.make_error("invalid")
        if not value and not self.allow_empty:
            raise self.make_error("empty")
        if self.max_length is not None and len(value) > self.max_length:
            raise self.make_error("too_long", max_length=self.max_length)
        return value

    def accepts_all(self, values):
        return (
            _only(values, str)
            and (self.allow_empty or "" not in values)
            and (self.max_length is None or max(map(len, values)) <= self.max_length)
        )


def _only(values, kind) -> bool:
    """Whether every value is exactly of this type (a bool is no int here, as in the fields)."""
    return set(map(type, values)) == {kind}


class EventSchema(Schema):
    """What decides whether an event is accepted and which row it is: its type, client, time,
    id and numeric ids. One schema for every type, known or not.

    The text columns users filter on (recipient, device, link, bounce category, ...) are not
    validated here: PostgreSQL takes them from `payload` in the batch statement
    (receiver.storage.events.EXTRACTED_COLUMNS), in C, sparing marshmallow's bookkeeping for
    each of those fields of every event (docs/benchmarks-history.md: #13, third session). What
    PostgreSQL refuses there (a `thresholdExceeded` that is no boolean, a value too long for an
    index) is quarantined by the per-event fallback."""

    class Meta:
        unknown = EXCLUDE

    type = Text(required=True, allow_none=False, allow_empty=False, max_length=MAX_TYPE_LENGTH)
    client_id = CampaignId(data_key="clientId", required=True)
    created = EpochMillis(required=True)
    event_id = Text(data_key="id", numbers=True, max_length=MAX_EVENT_ID_LENGTH)
    mailing_id = CampaignId(data_key="mailingId", allow_none=True)
    user_list_id = CampaignId(data_key="userListId", allow_none=True)
    subscription_id = CampaignId(data_key="subscriptionId", allow_none=True)


# Every documented type (the bounded label values of the per-type metrics). They share one
# schema, so a batch is one marshmallow call (BATCH_SCHEMA below), whatever its mix of types; their
# other fields are kept in `payload` all the same.
# `archive` is the type's name when the webhook is created, `archived` when it is listed back.
DOCUMENTED_TYPES = (*EVENT_TYPES, *LISTED_AS.values())
GENERIC_SCHEMA = EventSchema()
SCHEMAS = dict.fromkeys(DOCUMENTED_TYPES, GENERIC_SCHEMA)


class Column(fields.Field):
    """One EventSchema field's values for every event of a batch, checked in one go.

    The same field object as EventSchema's, so the same rules (required, allow_none and the
    field's own check); what this saves is marshmallow's per-field-per-event bookkeeping
    (getter closure, `_call_and_store`, error store, 700 times a batch), which the profile of a
    worker under load showed as the largest share of its CPU (docs/benchmarks-history.md: #13,
    second session, "What the profile showed"). A column the field accepts whole (`accepts_all`: the
    usual batch) costs a few C calls; any other is checked value by value, and the first invalid
    value raises (the batch is then validated event by event with EventSchema, for the
    reasons). Absent values come out as None."""

    def __init__(self, field, **kwargs):
        super().__init__(required=True, **kwargs)
        self.field = field

    def _deserialize(self, values, attr, data, **kwargs):
        field = self.field
        if not field.validators and field.accepts_all(values):
            # Every value present, of the field's one type, and accepted: the usual column,
            # settled without a scan for absent or null values (an `in` per value and kind).
            return values
        absent, nulls = missing in values, None in values
        if field.validators or (absent and field.required) or (nulls and not field.allow_none):
            return self._check_each(values, attr, data)  # raises with the field's own message
        present = values
        if absent or nulls:
            present = [v for v in values if v is not missing and v is not None]
        if present and not field.accepts_all(present):
            return self._check_each(values, attr, data)
        return [None if v is missing else v for v in values] if absent else values

    def _check_each(self, values, attr, data):
        field, check = self.field, self.field._deserialize
        # Validators declared on an EventSchema field (none today) apply here too.
        validate = field._validate if field.validators else None
        out = []
        for value in values:
            if value is missing:
                if field.required:
                    raise field.make_error("required")
                value = None
            elif value is None:
                if not field.allow_none:
                    raise field.make_error("null")
            else:
                value = check(value, attr, data)
                if validate:
                    validate(value)
            out.append(value)
        return out


def _batch_schema():
    """A schema of one Column per EventSchema field, keyed by the field's attribute name."""
    columns = {name: Column(field) for name, field in GENERIC_SCHEMA.fields.items()}
    return Schema.from_dict(columns, name="BatchColumnsSchema")()


BATCH_SCHEMA = _batch_schema()
# (attribute, key in the event) of every EventSchema field, in declaration order.
_KEYS = tuple((name, field.data_key or name) for name, field in GENERIC_SCHEMA.fields.items())


class ValidatedEvent(NamedTuple):
    """An event that passed validation, laid out as its array in the batch statement's
    document (receiver.storage.events.RECORD, in this order).

    `payload` is the event as received: its serialised and checked bytes when validated on its
    own, or the parsed object itself when the whole batch was checked at once (orjson then
    writes it straight into the batch's document)."""

    event_key: str
    event_id: str | None
    client_id: int
    type: str
    created: int  # epoch milliseconds (PostgreSQL makes them created_at)
    mailing_id: int | None
    user_list_id: int | None
    subscription_id: int | None
    payload: bytes | dict

    @property
    def content(self) -> bytes:
        """The event as JSON bytes (what the quarantine keeps if PostgreSQL refuses it)."""
        return self.payload if type(self.payload) is bytes else jsoncodec.encode(self.payload)


# A ValidatedEvent from a tuple of its fields, in C (a NamedTuple's own __new__ is Python).
_as_event = functools.partial(tuple.__new__, ValidatedEvent)


class InvalidEvent(ValueError):
    """An item that cannot be stored as an event; the message is the quarantine reason."""


class ValidBatch(NamedTuple):
    """A batch whose every item is valid: its events, and the document they are stored with.

    Either the list as received (`listed`, from jsoncodec.ParsedBatch) with `keys`, the
    events' keys as a JSON array in the same order, and PostgreSQL takes every column from the
    events themselves (receiver.storage.events.LISTED); or, with `keys` None, a document
    written here (receiver.storage.events.RECORD, one array per event in the order received)."""

    events: list[ValidatedEvent]
    document: bytes  # UTF-8 JSON, as the batch statement sends it
    keys: bytes | None = None


def validate_batch(items, listed: bytes | None = None) -> ValidBatch | None:
    """Every item as a ValidatedEvent, from one marshmallow load of the batch as columns; None
    when any item is invalid or cannot be stored as parsed (validate_events then says which).

    The usual batch, so everything per event here is done in C where it can be: the columns
    are checked whole (Column), the rows built by zip. `listed`, the bytes orjson read the
    items from (jsoncodec.ParsedBatch: checked there that PostgreSQL may store them as they
    are), is then their document as it is, with their keys beside it: PostgreSQL reads from it
    what validation read (the same values: checked here, cast there), and nothing is written
    again. Without it, one dump of the rows is both the check that every payload can be
    stored as parsed and the batch statement's document."""
    if not items or any(type(item) is not dict for item in items):
        return None
    try:
        columns = load_columns(items)
    except ValidationError:
        return None
    ids = columns["event_id"]
    try:
        keys = [
            (ESCAPED_ID + event_id if event_id.startswith(RESERVED) else event_id)
            if event_id
            else content_key(item)
            for event_id, item in zip(ids, items, strict=True)
        ]
    except jsoncodec.Unstorable:
        return None
    rows = list(
        zip(
            keys,
            ids,
            columns["client_id"],
            columns["type"],
            columns["created"],
            columns["mailing_id"],
            columns["user_list_id"],
            columns["subscription_id"],
            items,
            strict=True,
        )
    )
    if listed is not None:
        # Every key is text orjson parsed (or a digest), so it is written back as it is.
        return ValidBatch(list(map(_as_event, rows)), listed, orjson.dumps(keys))
    document = jsoncodec.document(rows)
    if document is None:
        return None
    return ValidBatch(list(map(_as_event, rows)), document)


# (attribute, key in the event, its Column in BATCH_SCHEMA) of every EventSchema field.
_COLUMNS = tuple((name, key, BATCH_SCHEMA.fields[name]) for name, key in _KEYS)


def load_columns(items) -> dict[str, list]:
    """{EventSchema field name: its loaded value for each event, None where absent}, each
    column deserialised by its BATCH_SCHEMA field. Raises ValidationError at the first
    invalid value.

    What BATCH_SCHEMA.load would give (it has no hooks, no validators of its own and no
    unknown keys here), without its per-field bookkeeping: 7 fields, every batch, about as
    much Python as the checks themselves (docs/benchmarks-history.md: #25)."""
    return {
        name: column.deserialize([item.get(key, missing) for item in items], name)
        for name, key, column in _COLUMNS
    }


def validate_event(item) -> ValidatedEvent:
    """Validate one item into a ValidatedEvent, or raise InvalidEvent."""
    if type(item) is jsoncodec.Unparsed:  # an item no parser could read: the reason says why
        raise InvalidEvent(item.reason)
    if not isinstance(item, dict):
        raise InvalidEvent(f"event is a JSON {_json_kind(item)}, not an object")
    try:
        data = GENERIC_SCHEMA.load(item)
    except ValidationError as error:
        raise InvalidEvent(_describe(error.messages)) from None
    try:
        payload = jsoncodec.encode(item)
        key = event_key(item, data.get("event_id"))
    except jsoncodec.Unstorable as error:
        raise InvalidEvent(str(error)) from None
    return ValidatedEvent(
        key,
        data.get("event_id"),
        data["client_id"],
        data["type"],
        data["created"],
        data.get("mailing_id"),
        data.get("user_list_id"),
        data.get("subscription_id"),
        payload,
    )


def validate_events(items):
    """Yield (item, ValidatedEvent) or (item, exception) for each item, one by one (the path of a
    batch validate_batch did not take whole: each event's own outcome and reason)."""
    for item in items:
        try:
            yield item, validate_event(item)
        except Exception as error:  # the caller decides what an unexpected error means
            yield item, error


def event_key(item: dict, event_id: str | None) -> str:
    """The idempotency key: Campaign's `id`, or a digest of the event's canonical content.

    Events without an id (the documented opens have none) are identified by everything they
    say, so a re-delivery maps to the same key and two events differing in any field never do.
    An id that begins like a content key (or like an escaped id) is escaped, so that no id can
    ever take an id-less event's key: two different events are never merged."""
    if not event_id:
        return content_key(item)
    return ESCAPED_ID + event_id if event_id.startswith(RESERVED) else event_id


def content_key(item: dict) -> str:
    """The key of an event without an id: SHA-256 of its key-sorted compact JSON."""
    try:  # jsoncodec.canonical's first try, inline: half of a batch's events come here
        data = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        data = jsoncodec.canonical(item)
    return CONTENT_KEY + hashlib.sha256(data).hexdigest()


def _describe(messages: dict) -> str:
    parts = []
    for name, problems in sorted(messages.items()):
        text = "; ".join(problems) if isinstance(problems, list) else str(problems)
        parts.append(f"{name}: {text}")
    return "invalid event: " + ", ".join(parts)


def _json_kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array"
