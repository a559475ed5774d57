"""The exported columns, their Parquet types, and rows turned into Arrow batches.

The columns are the feed's (receiver/storage/feed.py EVENT_FIELDS), in its order: the typed
columns of `events`, received_at and xid, then the payload as its JSON text. The month export
selects the same expressions, so both layouts load into one warehouse table.
"""

import pyarrow as pa
import pyarrow.compute as pc

TIMESTAMP = pa.timestamp("us", tz="UTC")  # Parquet TIMESTAMP(MICROS, isAdjustedToUTC=true)

# (name, Arrow type, meaning): docs/export.md's columns table says the same.
COLUMNS = (
    ("xid", pa.int64(), "the storing transaction: the event's feed position (null before 008)"),
    ("client_id", pa.int64(), "clientId"),
    ("type", pa.string(), "type: open, click, sent, bounce, ..."),
    ("created_at", TIMESTAMP, "created: the event's own time"),
    ("event_key", pa.string(), "Campaign's id, or sha256:<hex> of the event when it has none"),
    ("event_id", pa.string(), "Campaign's id (null when absent)"),
    ("received_at", TIMESTAMP, "when the receiver stored it"),
    ("mailing_id", pa.int64(), "mailingId"),
    ("user_list_id", pa.int64(), "userListId"),
    ("subscription_id", pa.int64(), "subscriptionId"),
    ("recipient_id", pa.string(), "recipientId"),
    ("mail_id", pa.string(), "mailId"),
    ("media_type", pa.string(), "mediaType"),
    ("category", pa.string(), "bounce: softbounce/hardbounce"),
    ("reason", pa.string(), "bounce: reason"),
    ("threshold_exceeded", pa.bool_(), "bounce: thresholdExceeded"),
    ("link", pa.string(), "click: the clicked URL"),
    ("device", pa.string(), "open/click: device"),
    ("operating_system", pa.string(), "open/click: operatingSystem"),
    ("browser", pa.string(), "open/click: browser"),
    ("remote_address", pa.string(), "open/click: remoteAddress"),
    ("payload", pa.string(), "the whole event as received, JSON text"),
)
NAMES = tuple(name for name, _, _ in COLUMNS)
SCHEMA = pa.schema([pa.field(name, kind) for name, kind, _ in COLUMNS])


def describe() -> list[dict]:
    """The columns as a manifest lists them: name and Arrow type."""
    return [{"name": name, "type": str(kind)} for name, kind, _ in COLUMNS]


def batch_from_tuples(rows) -> pa.RecordBatch:
    """A batch from rows as tuples in the columns' order."""
    return _batch(list(zip(*rows, strict=True)) if rows else [[] for _ in NAMES])


def batch_from_dicts(rows) -> pa.RecordBatch:
    """A batch from rows as dicts keyed by column name (the feed's rows)."""
    return _batch([[row[name] for row in rows] for name in NAMES])


def _batch(columns) -> pa.RecordBatch:
    arrays = [
        pa.array(values, type=kind) for values, (_, kind, _) in zip(columns, COLUMNS, strict=True)
    ]
    return pa.record_batch(arrays, schema=SCHEMA)


def time_bounds(batch: pa.RecordBatch, column: str) -> tuple:
    """(min, max) of a timestamp column as datetimes; (None, None) for no rows."""
    bounds = pc.min_max(batch.column(column))
    return bounds["min"].as_py(), bounds["max"].as_py()
