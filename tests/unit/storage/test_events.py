"""The batch statement's document layouts (receiver.storage.events.RECORD and LISTED)."""

import math

import orjson

from receiver.ingest import schemas
from receiver.observability import metrics
from receiver.storage import events


def test_the_document_holds_each_event_as_validated_in_record_order():
    # Position by position, the array orjson writes for a ValidatedEvent is what RECORD reads.
    names = [name for name, _ in events.RECORD]
    assert names == [
        "created_at" if field == "created" else field for field in schemas.ValidatedEvent._fields
    ]
    for position, (_, expression) in enumerate(events.RECORD):
        assert f"e->{position}" in expression or f"e->>{position}" in expression


def test_the_list_as_received_is_read_under_the_keys_validation_reads():
    # events.VALIDATED names each column's JSON key itself (storage does not import the
    # schemas): it must follow EventSchema, in ValidatedEvent's order after the key.
    data_keys = {
        name: field.data_key or name for name, field in schemas.EventSchema().fields.items()
    }
    validated = [
        field for field in schemas.ValidatedEvent._fields if field not in ("event_key", "payload")
    ]
    assert [(column, key) for column, key, _ in events.VALIDATED] == [
        ("created_at" if field == "created" else field, data_keys[field]) for field in validated
    ]
    assert [name for name, _ in events.LISTED] == [name for name, _ in events.RECORD]


def test_every_column_is_either_in_the_document_or_extracted_from_the_payload():
    names = {name for name, _ in events.RECORD}
    assert names.isdisjoint(events.EXTRACTED_COLUMNS)
    assert names | set(events.EXTRACTED_COLUMNS) == {name for name, _ in events.EVENT_COLUMNS}


def test_an_event_is_one_array_its_checked_payload_embedded_as_is():
    validated = schemas.validate_event({"type": "open", "clientId": 1, "created": 5, "id": "k"})
    assert events.recordset([validated]) == (
        b'[["k","k",1,"open",5,null,null,null,{"type":"open","clientId":1,"created":5,"id":"k"}]]'
    )


def test_the_document_written_at_validation_is_the_recordset_of_its_events():
    # A batch validated whole is stored with the document its check wrote, not a second dump.
    extra = [1.5, None, {"a": "\u00e9"}]
    items = [
        {"type": "open", "clientId": 1, "created": 5},
        {"type": "sent", "clientId": 2, "created": 6, "id": "x", "mailingId": 7, "extra": extra},
    ]
    batch = schemas.validate_batch(items)
    assert batch.document == events.recordset(batch.events)
    assert orjson.loads(batch.document)[1][8] == items[1]


def test_the_statement_buckets_lags_by_the_histograms_own_bounds():
    assert events.LAG_BOUNDS.strip("{}").split(",") == list(map(str, metrics.LAG_BUCKETS))
    assert metrics.EVENT_LAG_SECONDS._upper_bounds == [*map(float, metrics.LAG_BUCKETS), math.inf]
