"""All of the receiver's SQL, and the one transaction a batch is written in.

Idempotency lives in the database, not in the process: `events_key UNIQUE (client_id, type,
event_key)` with INSERT ... ON CONFLICT DO NOTHING makes a retry, a duplicate delivery or the same
batch on eight workers at once store each event exactly once, whatever the receiver's own state.
"""

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
import psycopg

from . import db

# Typed columns filled from the schemas' output, with their PostgreSQL types.
EVENT_COLUMNS = (
    ("event_key", "text"),
    ("event_id", "text"),
    ("client_id", "bigint"),
    ("type", "text"),
    ("created_at", "timestamptz"),
    ("mailing_id", "bigint"),
    ("user_list_id", "bigint"),
    ("subscription_id", "bigint"),
    ("recipient_id", "text"),
    ("mail_id", "text"),
    ("media_type", "text"),
    ("category", "text"),
    ("reason", "text"),
    ("threshold_exceeded", "boolean"),
    ("link", "text"),
    ("device", "text"),
    ("operating_system", "text"),
    ("browser", "text"),
    ("remote_address", "text"),
    ("payload", "jsonb"),
)


def _insert_events_sql():
    names = ", ".join(name for name, _ in EVENT_COLUMNS)
    definitions = ", ".join(f"{name} {kind}" for name, kind in EVENT_COLUMNS)
    # One statement per batch, its rows as one JSON document (built by orjson in C; binding 20
    # arrays cost more Python time than everything else together). ON CONFLICT DO NOTHING turns
    # every duplicate (retry, re-delivery, a concurrent worker) into a skipped row.
    return (
        f"INSERT INTO events ({names})\n"
        f"SELECT {names} FROM jsonb_to_recordset(%s::jsonb) AS r({definitions})\n"
        "ON CONFLICT (client_id, type, event_key) DO NOTHING\n"
        # What was stored, for the per-type counters and the event-lag histogram.
        "RETURNING type, extract(epoch FROM received_at - created_at)::float8"
    )


INSERT_EVENTS = _insert_events_sql()
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
    """Store valid events and quarantine the rest, atomically; return what was stored.

    `events` are (typed fields, payload bytes) pairs. Returns only after COMMIT: the caller's
    200 must mean the events are durable."""
    if not events and not rejected:
        return BatchResult()
    events = _sorted_by_key(events)
    document = _recordset(events)

    def in_one_statement(conn):
        result = BatchResult(rejected=list(rejected))
        if not rejected:
            # The common case. The pool's connections are in autocommit, so this statement is a
            # transaction of its own: execute() returns after PostgreSQL has committed it (the
            # server commits before ReadyForQuery), in one round trip instead of three.
            result.stored = conn.execute(INSERT_EVENTS, (document,)).fetchall()
            return result
        with conn.transaction():
            if events:
                result.stored = conn.execute(INSERT_EVENTS, (document,)).fetchall()
            _quarantine(conn, result.rejected)
        return result

    def event_by_event(conn):
        result = BatchResult(rejected=list(rejected))
        with conn.transaction():
            result.stored = _insert_one_by_one(conn, events, result)
            _quarantine(conn, result.rejected)
        return result

    try:
        return db.run_on_connection(pool, in_one_statement)
    except psycopg.Error as error:
        if not db.is_content_error(error):
            raise
    # Rare: a value passed validation but PostgreSQL refused it. Nothing was committed; do it
    # again event by event so that one poison event cannot hold back the other 99.
    return db.run_on_connection(pool, event_by_event)


def insert_events(conn, events, result) -> list:
    """Insert events inside the caller's transaction; refused ones are added to `result`."""
    events = _sorted_by_key(events)
    if not events:
        return []
    try:
        with conn.transaction():
            return conn.execute(INSERT_EVENTS, (_recordset(events),)).fetchall()
    except psycopg.Error as error:
        if not db.is_content_error(error):
            raise
    return _insert_one_by_one(conn, events, result)


def quarantine_body(pool, body: bytes, reason: str):
    """Keep an unparseable body, once however often it is retried."""
    db.run_on_connection(pool, lambda conn: _quarantine(conn, [Rejected("body", reason, body)]))


def _insert_one_by_one(conn, events, result) -> list:
    """Each event under its own savepoint; those PostgreSQL refuses go to `result.rejected`."""
    stored = []
    for event in events:
        try:
            with conn.transaction():
                stored += conn.execute(INSERT_EVENTS, (_recordset([event]),)).fetchall()
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


def _recordset(events) -> str:
    """The rows as one JSON array for jsonb_to_recordset; payloads are embedded as received."""
    rows = []
    for data, payload in events:
        row = dict(data)
        # Exact integer arithmetic for created_at, whatever the year; orjson writes RFC 3339.
        row["created_at"] = EPOCH + timedelta(milliseconds=data["created"])
        row["payload"] = orjson.Fragment(payload)  # already serialised and checked
        rows.append(row)
    return orjson.dumps(rows).decode()
