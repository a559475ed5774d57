"""What the vendor documents Campaign's events to hold, and how a first sight is judged against
it: the rules behind `receiver report schema` and the receiver_campaign_changes metric
(receiver/storage/shapes.py learns; docs/monitoring.md says what each change means).

A shape is (type, field, kind, value): an event type (field None), a top-level field of it with
the JSON kind of its value (string, number, boolean, object, array, null), or a value of one of
the small enumerations the reports depend on. A shape first seen for a client is a change when
the vendor does not document it and the client's baseline (its first day, or everything stored
before the first pass) is over.
"""

import re
from datetime import timedelta

from . import EVENT_TYPES, LISTED_AS

JSON_KINDS = ("string", "number", "boolean", "object", "array", "null")
CHANGES = ("new_type", "new_field", "kind_changed", "new_value")
# ../shared/campaign-webhooks.md: the types as webhooks are created, and as events name them.
DOCUMENTED_TYPES = frozenset(EVENT_TYPES) | frozenset(LISTED_AS.values())
# The fields the vendor's samples and spec show, with the kinds they show them in. Ids are
# integers there; an id that arrives as a string is stored all the same (receiver.ingest.schemas
# takes digits), and said here as a kind change. `null` is expected of any optional field.
REQUIRED_FIELDS = frozenset({"type", "clientId", "created"})
DOCUMENTED_FIELDS = {
    "type": "string", "id": "string", "recipientId": "string", "userListId": "number",
    "clientId": "number", "mailingId": "number", "subscriptionId": "number", "created": "number",
    "mailId": "string", "remoteAddress": "string", "device": "string",
    "operatingSystem": "string", "browser": "string", "link": "string",
    "mediaTypesToAddresses": "object", "category": "string", "reason": "string",
    "mediaType": "string", "thresholdExceeded": "boolean",
}  # fmt: skip
# The enumerations whose values the reports and the status rules depend on, with the values
# documented. A device other than the sample's `desktop` (mobile, tablet, ...) that arrives in
# the client's first day is part of its baseline, not a change.
ENUMERATIONS = {
    "category": frozenset({"softbounce", "hardbounce"}),
    "reason": frozenset({"spam-related", "other"}),
    "mediaType": frozenset({"EMAIL", "FAX", "SMS", "LETTER", "PUSH", "PRINT"}),
    "device": frozenset({"desktop"}),
}
# A value longer than this is no enumeration value (a free text in that field): not recorded.
MAX_VALUE_LENGTH = 100
# Bounds on what one client can make this table hold: values per field, fields per type (a
# sender that puts a free text in `device`, or a field name per recipient, would otherwise
# grow it without end). What goes beyond is not recorded, and the pass logs it once.
MAX_VALUES_PER_FIELD = 50
MAX_FIELDS_PER_TYPE = 200
MAX_FIELD_LENGTH = 200
# A client's first day of events is its baseline: what it sends then is what it sends.
BASELINE = timedelta(days=1)


def documented(event_type, field, kind, value) -> bool:
    """Whether the vendor documents this shape (any client may send it without it being news)."""
    if field is None:
        return event_type in DOCUMENTED_TYPES
    if value is not None:
        return value in ENUMERATIONS.get(field, ())
    expected = DOCUMENTED_FIELDS.get(field)
    return kind == expected or (kind == "null" and expected and field not in REQUIRED_FIELDS)


def change(shape, known_fields, in_baseline) -> str | None:
    """The change a first sight of `shape` (type, field, kind, value) is, or None. `known_fields`:
    the (type, field) pairs this client has sent before, in any kind."""
    event_type, field, _, value = shape
    if in_baseline or documented(*shape):
        return None
    if field is None:
        return "new_type"
    if value is not None:
        return "new_value"
    if field in DOCUMENTED_FIELDS or (event_type, field) in known_fields:
        return "kind_changed"
    return "new_field"


# Masking an example event: what a report may show of it. Fields the reports group by and ids
# of the sender's own objects are shown as they are; every other string (recipient ids and
# addresses, mail ids, links, IP addresses, and any new field: it may hold anything) keeps only
# its shape, letters as x and digits as 0, so "john@example.com" reads "xxxx@xxxxxxx.xxx".
SHOWN_FIELDS = frozenset({
    "type", "id", "clientId", "mailingId", "userListId", "created", "category", "reason",
    "mediaType", "device", "operatingSystem", "browser", "thresholdExceeded",
})  # fmt: skip
_LETTER = re.compile(r"[^\W\d_]")
_DIGIT = re.compile(r"\d")
# A key of a nested object shown as is: a name (EMAIL, SMS), not data used as a key.
_NAME = re.compile(r"[A-Za-z_]{1,40}")


def mask_event(event: dict) -> dict:
    """The event with personal data masked: the fields, kinds and shapes stay readable."""
    return {key: value if key in SHOWN_FIELDS else _mask(value) for key, value in event.items()}


def _mask(value):
    """Strings by their shape, numbers as 0 (an unknown number may be a phone number or a
    recipient's id); booleans and nulls say nothing about anyone. Structure is kept."""
    if isinstance(value, str):
        return _DIGIT.sub("0", _LETTER.sub("x", value))
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return 0
    if isinstance(value, list):
        return [_mask(item) for item in value]
    if isinstance(value, dict):
        return {
            key if _NAME.fullmatch(key) else _mask(key): _mask(item) for key, item in value.items()
        }
    return value
