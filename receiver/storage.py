"""All of the receiver's SQL, and the one transaction a batch is written in.

Idempotency lives in the database, not in the process: `events_key UNIQUE (client_id, type,
event_key)` with INSERT ... ON CONFLICT DO NOTHING makes a retry, a duplicate delivery or the same
batch on eight workers at once store each event exactly once, whatever the receiver's own state.
"""

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg

from . import db

# Typed columns filled from the schemas' output, in the order of INSERT_EVENTS' arrays.
EVENT_COLUMNS = (
    ("event_key", "text"),
    ("event_id", "text"),
    ("client_id", "int8"),
    ("type", "text"),
    ("created_at", "timestamptz"),
    ("mailing_id", "int8"),
    ("user_list_id", "int8"),
    ("subscription_id", "int8"),
    ("recipient_id", "text"),
    ("mail_id", "text"),
    ("media_type", "text"),
    ("category", "text"),
    ("reason", "text"),
    ("threshold_exceeded", "bool"),
    ("link", "text"),
    ("device", "text"),
    ("operating_system", "text"),
    ("browser", "text"),
    ("remote_address", "text"),
)


def _insert_events_sql():
    names = [name for name, _ in EVENT_COLUMNS]
    arrays = ", ".join(f"%s::{kind}[]" for _, kind in EVENT_COLUMNS)
    # One statement per batch. ON CONFLICT DO NOTHING turns every duplicate (retry, re-delivery,
    # a concurrent worker) into a skipped row; RETURNING counts the rows actually stored.
    return (
        f"INSERT INTO events ({', '.join(names)}, payload)\n"
        f"SELECT {', '.join('r.' + n for n in names)}, r.payload::jsonb\n"
        f"FROM unnest({arrays}, %s::text[]) AS r({', '.join(names)}, payload)\n"
        "ON CONFLICT (client_id, type, event_key) DO NOTHING\n"
        # What was stored, for the per-type counters and the event-lag histogram.
        "RETURNING type, extract(epoch FROM received_at - created_at)::float8"
    )


INSERT_EVENTS = _insert_events_sql()
_CREATED_AT = [name for name, _ in EVENT_COLUMNS].index("created_at")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The same bad content retried by the sender every 10 s is kept once; later arrivals only count.
INSERT_QUARANTINE = """
INSERT INTO quarantine (kind, reason, content, content_sha256)
SELECT * FROM unnest(%s::text[], %s::text[], %s::bytea[], %s::bytea[])
ON CONFLICT (content_sha256) DO UPDATE
SET last_received_at = now(),
    times_received = quarantine.times_received + 1,
    reason = EXCLUDED.reason
"""


@dataclass
class Rejected:
    """Something kept in quarantine: a whole body or one event, and why."""

    kind: str
    reason: str
    content: bytes
    event_type: str | None = None  # the item's `type`, when it had one
    after_validation: bool = False  # valid, but PostgreSQL refused a value


@dataclass
class BatchResult:
    stored: list = field(default_factory=list)  # (type, lag seconds) of each stored event
    rejected: list = field(default_factory=list)  # Rejected, quarantined in this transaction


def store_batch(pool, events, rejected) -> BatchResult:
    """Store valid events and quarantine the rest in one transaction; return the counts.

    `events` are (typed fields, payload bytes) pairs. Returns only after COMMIT: the caller's
    200 must mean the events are durable."""

    def work(conn):
        result = BatchResult(rejected=list(rejected))
        result.stored = insert_events(conn, events, result)
        _quarantine(conn, result.rejected)
        return result

    return db.run_transaction(pool, work)


def insert_events(conn, events, result) -> list:
    """Insert events inside the caller's transaction; refused ones are added to `result`."""
    return _insert_events(conn, _sorted_by_key(events), result)


def quarantine_body(pool, body: bytes, reason: str):
    """Keep an unparseable body, once however often it is retried."""
    db.run_transaction(pool, lambda conn: _quarantine(conn, [Rejected("body", reason, body)]))


def _insert_events(conn, events, result) -> list:
    """Insert as one statement; if PostgreSQL refuses a value, find the culprits one by one."""
    if not events:
        return []
    try:
        with conn.transaction():
            return conn.execute(INSERT_EVENTS, _columns(events)).fetchall()
    except psycopg.Error as error:
        if not db.is_content_error(error):
            raise
    # Rare path: some value passed validation but PostgreSQL will not hold it. Insert each event
    # under its own savepoint so one poison event cannot hold back the other 99.
    stored = []
    for event in events:
        try:
            with conn.transaction():
                stored += conn.execute(INSERT_EVENTS, _columns([event])).fetchall()
        except psycopg.Error as error:
            if not db.is_content_error(error):
                raise
            reason = f"refused by PostgreSQL: {error.diag.message_primary or error}"
            kind = event[0]["type"]
            result.rejected.append(Rejected("event", reason, event[1], kind, True))
    return stored


def _quarantine(conn, rejected):
    if not rejected:
        return
    unique = {}
    for item in rejected:
        # The kind is part of the identity: a body `42` and an event `42` are different finds.
        digest = hashlib.sha256(item.kind.encode() + b"\0" + item.content).digest()
        unique.setdefault(digest, item)
    digests = sorted(unique)  # a fixed lock order: concurrent retries cannot deadlock
    items = [unique[d] for d in digests]
    conn.execute(
        INSERT_QUARANTINE,
        (
            [i.kind for i in items],
            [i.reason for i in items],
            [i.content for i in items],
            digests,
        ),
    )


def _sorted_by_key(events):
    # Inserting in one global order means two transactions never wait on each other's keys in
    # opposite orders, so concurrent overlapping batches cannot deadlock.
    return sorted(events, key=lambda e: (e[0]["client_id"], e[0]["type"], e[0]["event_key"]))


def _columns(events):
    arrays = [[data.get(name) for data, _ in events] for name, _ in EVENT_COLUMNS]
    created_at = [EPOCH + timedelta(milliseconds=data["created"]) for data, _ in events]
    arrays[_CREATED_AT] = created_at  # exact integer arithmetic, whatever the year
    arrays.append([payload.decode("utf-8") for _, payload in events])
    return arrays
