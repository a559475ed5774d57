"""Campaign events the schema tests share: the vendor samples, the documented types, invalid
events with the field their refusal must name, and single-field changes an idempotency key must
notice (tests/unit/ingest/test_schemas.py and tests/integration/ingest/test_schemas.py)."""

import json
import re

import pytest

from receiver.ingest import schemas

from . import event, sample

DOCUMENTED_TYPES = [
    "open",
    "click",
    "sent",
    "bounce",
    "unsubscribe",
    "spamcomplaint",
    "singleoptin",
    "confirmedoptin",
    "doubleoptin",
    "blocklist",
    "archive",
    "archived",
    "filteredbyblocklist",
]
BOUNCE = json.loads(sample("bounce-event.json"))
OPEN = json.loads(sample("open-batch.json"))[0]
HASH_KEY = re.compile(r"sha256:[0-9a-f]{64}")


def without(field, item=None):
    """A valid event (or `item`) with `field` removed."""
    return {k: v for k, v in (item or event()).items() if k != field}


# (test id, item, what the quarantine reason must name). Only what marshmallow validates: the text
# columns are extracted by PostgreSQL (tests/integration/ingest/test_schemas.py, "extracted").
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
    ("not-an-object-number", 42, "not an object"),
    ("not-an-object-string", "open", "not an object"),
    ("not-an-object-null", None, "not an object"),
    ("not-an-object-list", [event()], "not an object"),
    ("not-an-object-boolean", True, "not an object"),
]
INVALID_PARAMS = [pytest.param(item, named, id=name) for name, item, named in INVALID_EVENTS]

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
