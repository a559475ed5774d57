"""Events and comparisons the export tests share (tests/integration/export/,
tests/integration/cli/test_export.py): events stored through the webhook, so that each batch is
a transaction of its own as in production, and the database's rows and the files' rows in one
form to compare."""

import json
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
from psycopg import sql

from receiver.export import schema
from receiver.storage import feed, partitions

from . import body, event, post, wait_until

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
OCTOBER, NOVEMBER = datetime(2025, 10, 1, tzinfo=UTC), datetime(2025, 11, 1, tzinfo=UTC)
# The export's order, spelled out again rather than taken from receiver.export.source.
MONTH_ROWS = sql.SQL(
    "SELECT {fields}, payload FROM events WHERE created_at >= %s AND created_at < %s "
    "ORDER BY client_id, type, created_at, event_key"
)
KINDS = ("sent", "open", "click", "bounce", "unsubscribe")


def millis(moment):
    return (moment - EPOCH) // timedelta(milliseconds=1)


def month_event(month, n, **fields):
    """The n-th test event of `month`: types, mailings, recipients and optional fields vary."""
    kind = KINDS[n % len(KINDS)]
    extra = {
        "open": {"device": "mobile", "browser": "Firefox 64.1", "remoteAddress": "0.0.0.0"},
        "click": {"link": f"https://example.com/ü/{n % 3}", "device": "desktop"},
        "bounce": {
            "category": ("hardbounce", "softbounce")[n % 2],
            "thresholdExceeded": n % 4 == 3,
        },
    }.get(kind, {})
    values = {
        "created": millis(month + timedelta(hours=n, milliseconds=n % 1000)),
        "clientId": 1001 + n % 2,
        "mailingId": 500 + n % 3,
        "recipientId": f"r{n % 7}@example.com",
        "userListId": 42,
        **extra,
        **fields,
    }
    if n % 2:  # half with an id, half keyed by their digest (as Campaign's opens)
        values["id"] = f"{month:%Y%m}-{n}"
    return event(kind, **values)


def deliver(client, events, batch=5):
    """POST the events in batches of `batch` (a transaction each)."""
    for start in range(0, len(events), batch):
        response = post(client, body(*events[start : start + batch]))
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json()["quarantined"] == 0


def database_rows(conn, month):
    """The month's rows as the export writes them, in its order, the payload parsed."""
    query = MONTH_ROWS.format(fields=sql.SQL(feed.EVENT_FIELDS))
    rows = conn.execute(query, (month, partitions.add_months(month, 1))).fetchall()
    return [dict(zip(schema.NAMES, row, strict=True)) for row in rows]


def file_rows(paths):
    """The rows of Parquet files, in order, the payload parsed."""
    rows = []
    for path in paths:
        for row in pq.read_table(path).to_pylist():
            rows.append({**row, "payload": json.loads(row["payload"])})
    return rows


def folder_state(folder):
    """{file name: bytes} of every file in a folder (hidden ones too)."""
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def settle(conn):
    """Wait until everything committed so far is below the feed's horizon (the oldest running
    transaction of the whole server, which other tests' transactions hold back)."""
    marker = conn.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0]
    wait_until(lambda: feed.horizon(conn) > marker, timeout=60)
