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

# ../shared/campaign-webhooks.md: the types as webhooks are created, and as events name them.
DOCUMENTED_TYPES = frozenset(EVENT_TYPES) | frozenset(LISTED_AS.values())
# The fields the vendor's samples and spec show, with the kinds they show them in: those of
# every type, and those only some types have (a bounce's `reason` on an open is news). Ids are
# integers there; an id that arrives as a string is stored all the same (receiver.ingest.schemas
# takes digits), and said here as a kind change. `null` is expected of any optional field.
REQUIRED_FIELDS = frozenset({"type", "clientId", "created"})
COMMON_FIELDS = {
    "type": "string", "id": "string", "recipientId": "string", "userListId": "number",
    "clientId": "number", "mailingId": "number", "subscriptionId": "number", "created": "number",
    "mailId": "string", "mediaTypesToAddresses": "object",
}  # fmt: skip
RESPONSE_FIELDS = {
    "remoteAddress": "string", "device": "string", "operatingSystem": "string",
    "browser": "string",
}  # fmt: skip
TYPE_FIELDS = {
    "open": RESPONSE_FIELDS,
    "click": {**RESPONSE_FIELDS, "link": "string"},
    "bounce": {
        "category": "string", "reason": "string", "mediaType": "string",
        "thresholdExceeded": "boolean",
    },
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
# What an enumeration value looks like: a word or a few (softbounce, spam-related, Smart TV).
# Anything else in such a field (a bounce's SMTP text with the address in it) is no value of an
# enumeration and may be personal: it is counted as the one value TEXT, never kept as it is.
# PostgreSQL applies the same pattern (receiver.storage.shapes).
VALUE_PATTERN = r"^[A-Za-z][A-Za-z0-9 _.+/-]{0,39}$"
TEXT = "(text)"
# What a field name looks like; any other top-level key (an address used as a key, say) is
# recorded and shown by its shape only (see mask_text).
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# Bounds on what one client can make the table hold: types, fields per type, values per field
# (a sender that puts a field name per recipient, or a random type, would otherwise grow it
# without end). PostgreSQL keeps the most frequent ones of a chunk within these bounds; what
# goes beyond is not recorded, and logged (once per client and type in a process).
MAX_TYPES_PER_CLIENT = 100
MAX_FIELDS_PER_TYPE = 200
MAX_VALUES_PER_FIELD = 50
MAX_FIELD_LENGTH = 200
# A client's first day of events is its baseline: what it sends then is what it sends.
BASELINE = timedelta(days=1)


def expected_kind(event_type, field) -> str | None:
    """The JSON kind the vendor documents for this field of this type (None: undocumented)."""
    return COMMON_FIELDS.get(field) or TYPE_FIELDS.get(event_type, {}).get(field)


def documented(event_type, field, kind, value) -> bool:
    """Whether the vendor documents this shape (any client may send it without it being news)."""
    if field is None:
        return event_type in DOCUMENTED_TYPES
    if value is not None:
        return value in ENUMERATIONS.get(field, ())
    expected = expected_kind(event_type, field)
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
    if expected_kind(event_type, field) or (event_type, field) in known_fields:
        return "kind_changed"
    return "new_field"


def field_name(key: str) -> str:
    """A top-level key as recorded: itself if it looks like a field name, else its shape."""
    return key if NAME_PATTERN.fullmatch(key) else mask_text(key)


# Masking an example event: what a report may show of it. Ids of the sender's own objects and
# the fields the reports group by are shown (the latter only when they look like an enumeration
# value); every other string (recipient ids and addresses, mail ids, links, IP addresses, and any
# field the vendor does not document: it may hold anything) keeps only its shape, letters as x
# and digits as 0, so "john@example.com" reads "xxxx@xxxxxxx.xxx"; numbers there read 0.
SHOWN_IDS = frozenset({"type", "id", "clientId", "mailingId", "userListId", "created"})
SHOWN_WORDS = frozenset({
    "category", "reason", "mediaType", "device", "operatingSystem", "browser",
    "thresholdExceeded",
})  # fmt: skip
_LETTER = re.compile(r"[^\W\d_]")
_DIGIT = re.compile(r"\d")
_WORD = re.compile(VALUE_PATTERN)
# A key of a nested object shown as is: a media type (EMAIL, SMS), not data used as a key.
_MEDIA_NAME = re.compile(r"[A-Z_]{1,20}")


def mask_text(text: str) -> str:
    """A string by its shape: letters as x, digits as 0, the rest kept."""
    return _DIGIT.sub("0", _LETTER.sub("x", text))


def mask_event(event: dict) -> dict:
    """The event with personal data masked: the fields, kinds and shapes stay readable."""
    masked = {}
    for key, value in event.items():
        if key in SHOWN_IDS or (key in SHOWN_WORDS and _is_word(value)):
            masked[key] = value
        else:
            masked[field_name(key)] = _mask(value)
    return masked


def _is_word(value) -> bool:
    return not isinstance(value, str) or _WORD.fullmatch(value) is not None


def _mask(value):
    """Strings by their shape, numbers as 0 (an unknown number may be a phone number or a
    recipient's id); booleans and nulls say nothing about anyone. Structure is kept."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return 0
    if isinstance(value, list):
        return [_mask(item) for item in value]
    if isinstance(value, dict):
        return {
            key if _MEDIA_NAME.fullmatch(key) else mask_text(key): _mask(item)
            for key, item in value.items()
        }
    return value
