"""Marshmallow schemas for Campaign's events, and the batch validator built on them.

The schema checks what decides acceptance and identity (type, client, created, id, numeric ids);
the text columns are taken from `payload` by PostgreSQL, and everything else in the event is
kept as received in `payload`, so new fields need no change here (forward compatibility). An
unknown `type` is validated like any other event and stored.
"""

import hashlib
import re
from typing import NamedTuple

from marshmallow import EXCLUDE, Schema, ValidationError, fields, missing

from . import jsoncodec

BIGINT_MAX = 2**63 - 1
# created is epoch milliseconds; this window is what PostgreSQL and Python both represent
# (0001-01-01 to 9999-12-31). Anything outside is a broken value, not a date.
CREATED_MIN = -62_135_596_800_000
CREATED_MAX = 253_402_300_799_999
MAX_EVENT_ID_LENGTH = 512
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


class EventSchema(Schema):
    """What decides whether an event is accepted and which row it is: its type, client, time,
    id and numeric ids. One schema for every type, known or not.

    The text columns users filter on (recipient, device, link, bounce category, ...) are not
    validated here: PostgreSQL takes them from `payload` in the batch statement
    (receiver.storage.events.EXTRACTED_COLUMNS), in C, where marshmallow's bookkeeping cost
    ~2.5 us per field of every event. What PostgreSQL refuses there (a `thresholdExceeded` that
    is no boolean, a value too long for an index) is quarantined by the per-event fallback."""

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
DOCUMENTED_TYPES = (
    "open",
    "click",
    "bounce",
    "sent",
    "unsubscribe",
    "spamcomplaint",
    "singleoptin",
    "confirmedoptin",
    "doubleoptin",
    "blocklist",
    "archive",  # the type's name when the webhook is created...
    "archived",  # ...and when it is listed back
    "filteredbyblocklist",
)
GENERIC_SCHEMA = EventSchema()
SCHEMAS = dict.fromkeys(DOCUMENTED_TYPES, GENERIC_SCHEMA)


class Column(fields.Field):
    """One EventSchema field's values for every event of a batch, checked in one loop.

    The same field object as EventSchema's, so the same rules (required, allow_none and the
    field's own check); what this saves is marshmallow's per-field-per-event bookkeeping
    (getter closure, `_call_and_store`, error store: ~1.9 us a field, 700 times a batch), which
    the profile of a worker under load showed as a third of its CPU. The first invalid value
    raises; the batch is then validated event by event with EventSchema for the reasons."""

    def __init__(self, field, **kwargs):
        super().__init__(required=True, **kwargs)
        self.field = field

    def _deserialize(self, values, attr, data, **kwargs):
        field, check = self.field, self.field._deserialize
        # Validators declared on an EventSchema field (none today) apply here too.
        validate = field._validate if field.validators else None
        out = []
        for value in values:
            if value is missing:
                if field.required:
                    raise field.make_error("required")
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
_NAMES = tuple(name for name, _ in _KEYS)


class ValidatedEvent(NamedTuple):
    """An event that passed validation: its typed fields (with `event_key`) and payload bytes."""

    fields: dict
    payload: bytes

    @property
    def type(self) -> str:
        return self.fields["type"]


class InvalidEvent(ValueError):
    """An item that cannot be stored as an event; the message is the quarantine reason."""


def validate_event(item) -> ValidatedEvent:
    """Validate one item into a ValidatedEvent, or raise InvalidEvent."""
    if not isinstance(item, dict):
        raise InvalidEvent(f"event is a JSON {_json_kind(item)}, not an object")
    try:
        return _complete(item, GENERIC_SCHEMA.load(item))
    except ValidationError as error:
        raise InvalidEvent(_describe(error.messages)) from None


def validate_events(items):
    """Yield (item, ValidatedEvent) or (item, exception) for each item of a batch.

    Marshmallow loads the batch as columns in one call (BATCH_SCHEMA), which costs a fraction
    of an EventSchema load per event; a batch with any invalid event is redone event by event
    with EventSchema for the reasons."""
    loaded = None
    if items and all(type(item) is dict for item in items):
        try:
            loaded = load_columns(items)
        except Exception:  # invalid events (or worse): redo one by one, each caught below
            loaded = None
    for index, item in enumerate(items):
        try:
            yield item, (_complete(item, loaded[index]) if loaded else validate_event(item))
        except Exception as error:  # the caller decides what an unexpected error means
            yield item, error


def load_columns(items) -> list[dict]:
    """Each event's loaded fields, as EventSchema would give them, from one BATCH_SCHEMA load.

    Raises ValidationError at the first invalid value (the caller then goes event by event)."""
    columns = {name: [item.get(key, missing) for item in items] for name, key in _KEYS}
    loaded = BATCH_SCHEMA.load(columns)
    rows = zip(*(loaded[name] for name in _NAMES), strict=True)
    # A field absent from the event is absent from its dict, as with EventSchema.
    return [
        {name: value for name, value in zip(_NAMES, row, strict=True) if value is not missing}
        for row in rows
    ]


def _complete(item, data) -> ValidatedEvent:
    """Add what the schema does not compute: the stored payload and the idempotency key."""
    try:
        payload = jsoncodec.encode(item)
        data["event_key"] = event_key(item, data)
    except jsoncodec.Unstorable as error:
        raise InvalidEvent(str(error)) from None
    return ValidatedEvent(data, payload)


def event_key(item: dict, data: dict) -> str:
    """The idempotency key: Campaign's `id`, or a digest of the event's canonical content.

    Events without an id (the documented opens have none) are identified by everything they
    say, so a re-delivery maps to the same key and two events differing in any field never do."""
    if data.get("event_id"):
        return data["event_id"]
    return "sha256:" + hashlib.sha256(jsoncodec.canonical(item)).hexdigest()


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
