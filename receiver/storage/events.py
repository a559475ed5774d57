"""The `events` table: the one statement a batch is written with, and the per-event fallback.

Idempotency lives in the database, not in the process: `events_key UNIQUE (client_id, type,
created_at, event_key)` with INSERT ... ON CONFLICT DO NOTHING makes a retry, a duplicate
delivery or the same batch on eight workers at once store each event exactly once, whatever the
receiver's own state. (created_at is in the key because `events` is partitioned by it; a
re-delivered event keeps its `created`, so it meets its first copy in the same partition.)
"""

import operator
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

import orjson
import psycopg

from ..campaign import STATUS_TYPES
from . import db, quarantine
from .quarantine import Rejected

# The typed columns the receiver writes, with their PostgreSQL types: the one list of them
# (tests/integration/storage/test_migrate.py checks it against the migrated table).
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
# The columns PostgreSQL takes from the stored payload in the batch statement, not validated by
# marshmallow: (column, expression on the row's `payload` and `type`). `->>` gives a string as
# itself, a number as its digits, true/false as "true"/"false", an object or array as its JSON
# text, null as NULL; a column belongs to the types that document the field (a `device` on a
# `sent` event stays in payload only). A value PostgreSQL refuses (a thresholdExceeded that is
# no boolean, a recipientId too long for its index) fails the statement, and the per-event
# fallback quarantines just that event.
_OPEN_OR_CLICK = "r.type IN ('open', 'click')"
EXTRACTED_COLUMNS = {
    "recipient_id": "r.payload->>'recipientId'",
    "mail_id": "r.payload->>'mailId'",
    "media_type": "r.payload->>'mediaType'",
    "category": "CASE WHEN r.type = 'bounce' THEN r.payload->>'category' END",
    "reason": "CASE WHEN r.type = 'bounce' THEN r.payload->>'reason' END",
    "threshold_exceeded": (
        "CASE WHEN r.type = 'bounce' THEN (r.payload->>'thresholdExceeded')::boolean END"
    ),
    "link": "CASE WHEN r.type = 'click' THEN r.payload->>'link' END",
    "device": f"CASE WHEN {_OPEN_OR_CLICK} THEN r.payload->>'device' END",
    "operating_system": f"CASE WHEN {_OPEN_OR_CLICK} THEN r.payload->>'operatingSystem' END",
    "browser": f"CASE WHEN {_OPEN_OR_CLICK} THEN r.payload->>'browser' END",
    "remote_address": f"CASE WHEN {_OPEN_OR_CLICK} THEN r.payload->>'remoteAddress' END",
}


def _created_at(millis):
    """created_at from an expression of epoch milliseconds as text: exact whatever the year and
    TimeZone (whole seconds through a double are exact up to year 9999, the rest is an interval
    of whole ms; %% is the modulo, escaped for the driver's placeholders)."""
    return f"to_timestamp(({millis})::bigint / 1000) + ({millis})::bigint %% 1000 * interval '1 ms'"


# The columns validation checks (receiver.ingest.schemas.EventSchema), in ValidatedEvent's
# order after the key: (column, the event's JSON key, how PostgreSQL reads the text `->>`
# gives, NULL for a JSON null or an absent key).
VALIDATED = (
    ("event_id", "id", "text"),
    ("client_id", "clientId", "bigint"),
    ("type", "type", "text"),
    ("created_at", "created", "millis"),
    ("mailing_id", "mailingId", "bigint"),
    ("user_list_id", "userListId", "bigint"),
    ("subscription_id", "subscriptionId", "bigint"),
)


def _read(text, kind):
    """The expression of a VALIDATED column from the expression of its text."""
    return {"text": text, "bigint": f"({text})::bigint", "millis": _created_at(text)}[kind]


def _select(columns, source):
    """SELECT of the batch's rows: `columns` as (name, expression), FROM `source`."""
    return " ".join(["SELECT", ", ".join(f"{e} AS {name}" for name, e in columns), source])


# The batch's document holds one array per event (schemas.ValidatedEvent, in this order): the
# column each position fills, and how PostgreSQL reads it from the event's array `e`.
RECORD = (
    ("event_key", "e->>0"),
    *((name, _read(f"e->>{at}", kind)) for at, (name, _, kind) in enumerate(VALIDATED, 1)),
    ("payload", f"e->{len(VALIDATED) + 1}"),
)
# The batch's rows from its document (the statement's first parameter).
RECORD_SELECT = _select(RECORD, "FROM jsonb_array_elements(%s::jsonb) AS e")
# The other document of a batch: its events as the JSON list they came in (validated whole by
# receiver.ingest.schemas.validate_batch, parsed by orjson from exactly these bytes), and their
# keys as a JSON array in the same order. Each column is read from the event `p` under the key
# EventSchema validated it from, cast as RECORD casts it: validation admits only integers and
# strings of digits for the ids and `created`, which `->>` gives as their digits either way, so
# the columns are the values validation checked. Nothing of the batch is written again in
# Python (docs/benchmarks-history.md: #25).
LISTED = (
    ("event_key", "k.key"),
    *((name, _read(f"p->>'{key}'", kind)) for name, key, kind in VALIDATED),
    ("payload", "p"),
)
LISTED_SELECT = _select(
    LISTED,
    "FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS l(p, n)"
    " JOIN jsonb_array_elements_text(%s::jsonb) WITH ORDINALITY AS k(key, n) USING (n)",
)


class Listed(NamedTuple):
    """A batch's events as the JSON list they arrived in, and their keys (a JSON array in the
    same order): the document of LISTED_SELECT."""

    events: bytes
    keys: bytes


# Inserting in one global order means two transactions never wait on each other's keys in
# opposite orders, so concurrent overlapping batches cannot deadlock. PostgreSQL sorts the
# batch (no Python work per event); the per-event fallback sorts in Python by the same order
# (str compares by code point, as COLLATE "C" compares UTF-8).
INSERT_ORDER_SQL = 'r.client_id, r.type COLLATE "C", r.created_at, r.event_key COLLATE "C"'
INSERT_ORDER = operator.attrgetter("client_id", "type", "created", "event_key")

# What the insert hands on to the recipient_status step (and, first two, to the metrics).
STORED_COLUMNS = (
    "type, extract(epoch FROM received_at - created_at)::float8 AS lag, client_id, recipient_id,"
    " created_at, received_at, mailing_id, event_key, category, threshold_exceeded"
)
# recipient_status, kept current in the same statement: only the events this statement
# inserted (a duplicate costs nothing), one per recipient (the batch's winner by the decision
# order of migrations/004_reporting.sql), upserted where it beats the stored one. Rows go in by
# (client_id, recipient_id), so concurrent batches lock them in one order and cannot deadlock.
# The status types go into the text as literals: constants of receiver.campaign, never input.
STATUS_TYPES_SQL = ", ".join(f"'{kind}'" for kind in STATUS_TYPES)
RECIPIENT_STATUS_STEPS = f"""
, decided AS (
    SELECT DISTINCT ON (client_id, recipient_id)
           client_id, recipient_id, status, created_at, type, mailing_id, event_key,
           status_rank(status) AS rank, received_at
    FROM (SELECT *, event_status(type, category, threshold_exceeded) AS status FROM stored
          WHERE type IN ({STATUS_TYPES_SQL})
            AND recipient_id IS NOT NULL) s
    WHERE status IS NOT NULL
    ORDER BY client_id, recipient_id, created_at DESC, status_rank(status) DESC,
             event_key COLLATE "C" DESC
), status_upserted AS (
    INSERT INTO recipient_status AS old (client_id, recipient_id, status, status_at,
        status_event_type, mailing_id, status_event_key, status_rank, changed_at)
    SELECT * FROM decided ORDER BY client_id, recipient_id
    ON CONFLICT (client_id, recipient_id) DO UPDATE
    SET status = EXCLUDED.status, status_at = EXCLUDED.status_at,
        status_event_type = EXCLUDED.status_event_type, mailing_id = EXCLUDED.mailing_id,
        status_event_key = EXCLUDED.status_event_key, status_rank = EXCLUDED.status_rank,
        changed_at = EXCLUDED.changed_at
    WHERE (EXCLUDED.status_at, EXCLUDED.status_rank, EXCLUDED.status_event_key)
        > (old.status_at, old.status_rank, old.status_event_key)
)"""  # noqa: S608 (constants only)


# The batch's body digest (receiver.storage.deliveries), recorded by the same statement: the
# row exists exactly when the events committed. ON CONFLICT: the same body stored twice at once.
DELIVERY_STEP = """
, delivered AS (
    INSERT INTO deliveries (digest, events, counts) VALUES (%s, %s, %s::jsonb)
    ON CONFLICT (digest) DO NOTHING
)"""


# The lag histogram's bucket of a stored event, as Histogram.observe() picks it: the index of
# the first upper bound at or above the lag (bisect_left), a negative lag (clock skew) as 0;
# past the last bound, the +Inf bucket's. The bounds are metrics.LAG_BUCKETS, spelled out so
# the statement is one constant (tests/unit/storage/test_events.py checks that they agree).
LAG_BOUNDS = "{1,5,10,30,60,120,300,600,1800,3600,14400,86400,259200}"
LAG_BUCKET = "".join(
    ["(SELECT count(*) FROM unnest('", LAG_BOUNDS, "'::float8[]) AS b WHERE b < greatest(lag, 0))"]
)


def insert_events_sql(status_steps=RECIPIENT_STATUS_STEPS, delivery=False, rows=RECORD_SELECT):
    """The batch statement; `status_steps` is replaceable so bench/reporting.py can price it;
    with `delivery`, it also records the body's digest (three more parameters). `rows`: where
    the events come from, RECORD_SELECT (one parameter) or LISTED_SELECT (two)."""
    names = ", ".join(name for name, _ in EVENT_COLUMNS)
    values = ", ".join(EXTRACTED_COLUMNS.get(name, f"r.{name}") for name, _ in EVENT_COLUMNS)
    # One statement per batch, its rows from one JSON document: the list of events as received
    # with their keys beside it (LISTED), or one array per event in RECORD order written by
    # orjson in C (binding 20 arrays cost more Python time than everything else together).
    # ON CONFLICT DO NOTHING turns every duplicate (retry, re-delivery, a concurrent worker)
    # into a skipped row. The data-modifying CTEs run to completion whether or not the final
    # SELECT reads them.
    return (
        f"WITH stored AS (\n"
        f"INSERT INTO events ({names})\n"
        f"SELECT {values} FROM ({rows}) AS r\n"
        f"ORDER BY {INSERT_ORDER_SQL}\n"
        "ON CONFLICT (client_id, type, created_at, event_key) DO NOTHING\n"
        f"RETURNING {STORED_COLUMNS}\n"
        f"){status_steps}{DELIVERY_STEP if delivery else ''}\n"
        # What was stored, for the per-type counters, the event-lag histogram and the per-client
        # last-event gauges: one row per type, client and lag bucket (a handful, not 100).
        f"SELECT type, client_id, {LAG_BUCKET} AS bucket, count(*), sum(greatest(lag, 0))\n"
        "FROM stored GROUP BY type, client_id, bucket"
    )


INSERT_EVENTS = insert_events_sql()
INSERT_EVENTS_DELIVERED = insert_events_sql(delivery=True)
INSERT_LISTED = insert_events_sql(rows=LISTED_SELECT)
INSERT_LISTED_DELIVERED = insert_events_sql(delivery=True, rows=LISTED_SELECT)
# `receiver simulate --verify`: a run's rows by mail id, counted by content. The mailing ids
# find them through events_mailing (client_id, mailing_id, type), whatever else the client has;
# the run's tag, in front of every mail id, keeps out any other run's rows.
RUN_ROWS = """
SELECT mail_id, count(*) FROM events
WHERE client_id = %(client)s AND mailing_id = ANY(%(mailings)s) AND mail_id LIKE %(tagged)s
GROUP BY mail_id
"""


@dataclass
class BatchResult:
    # (type, client_id, lag bucket, events, sum of their lags) of the events stored
    groups: list = field(default_factory=list)
    rejected: list = field(default_factory=list)  # Rejected, quarantined in this transaction

    @property
    def stored(self) -> int:
        """How many events were stored."""
        return count_stored(self.groups)

    def stored_by_type(self) -> Counter:
        counts = Counter()
        for kind, _, _, events, _ in self.groups:
            counts[kind] += events
        return counts

    def lag_buckets(self) -> tuple[Counter, float]:
        """The stored events' lags (receive time minus `created`) as the lag histogram's
        {bucket index: events} and their sum in seconds (metrics.observe_buckets)."""
        counts, total = Counter(), 0.0
        for _, _, bucket, events, lags in self.groups:
            counts[bucket] += events
            total += lags
        return counts, total

    def clients(self) -> set:
        """(client_id, type) of the stored events."""
        return {(client, kind) for kind, client, *_ in self.groups}


def groups(result, encoding) -> list:
    """The batch statement's rows (BatchResult.groups) from its text-format PGresult;
    `encoding`: the connection's (the event types are text)."""
    value = result.get_value
    return [
        (
            value(row, 0).decode(encoding),
            int(value(row, 1)),
            int(value(row, 2)),
            int(value(row, 3)),
            float(value(row, 4)),
        )
        for row in range(result.ntuples)
    ]


def count_stored(groups) -> int:
    """Events stored, from the batch statement's rows (BatchResult.groups)."""
    return sum(group[3] for group in groups)


def store_batch(pool, events, rejected, delivery=None, document=None, deadline=None) -> BatchResult:
    """Store valid events and quarantine the rest, atomically; return what was stored.

    `events` are schemas.ValidatedEvent; `document`, when validation wrote it, their
    recordset(), or the list they arrived in (a Listed). Returns only after COMMIT: the
    caller's 200 must mean the events are durable. `delivery`, (body digest, {type label:
    events}), is recorded with the events when the whole batch is stored as events in one
    statement, and only then: a batch with anything quarantined must take the full path when
    it comes again. `deadline`: the request's."""
    if not events and not rejected:
        return BatchResult()

    def write(conn):
        if not rejected:
            # The common case. The pool's connections are in autocommit, so this statement is a
            # transaction of its own: the call returns after PostgreSQL has committed it (the
            # server commits before ReadyForQuery, which libpq waits for), in one round trip
            # instead of three.
            statement, params, types = _batch_statement(events, document, delivery)
            try:
                result = db.run_prepared(conn, statement, params, types)
                return BatchResult(groups(result, conn.info.encoding))
            except psycopg.Error as error:
                if not db.is_content_error(error):
                    raise
                # Nothing was committed; the transaction below redoes it event by event.
        with conn.transaction():
            stored, refused = insert_events(conn, events)
            result = BatchResult(stored, [*rejected, *refused])
            quarantine.keep(conn, result.rejected)
        return result

    return db.run_on_connection(pool, write, deadline=deadline)


def _batch_statement(events, document, delivery):
    """(statement, parameters, their types) of one batch's statement: from the list as received
    (a Listed document) or from a RECORD document, with its delivery row when given."""
    if type(document) is Listed:
        plain, delivered, params = INSERT_LISTED, INSERT_LISTED_DELIVERED, list(document)
    else:
        params = [document or recordset(events)]
        plain, delivered = INSERT_EVENTS, INSERT_EVENTS_DELIVERED
    if delivery is None:
        return plain, params, (0,) * len(params)
    body_digest, counts = delivery
    params += [body_digest, b"%d" % len(events), orjson.dumps(counts)]
    return delivered, params, (0,) * (len(params) - 3) + (db.BYTEA, 0, 0)


def insert_events(conn, events) -> tuple[list, list]:
    """Insert events inside the caller's transaction: (stored rows, Rejected for the refused).

    A stored row is as BatchResult.groups; recipient_status follows in the statement.

    All in one statement; if PostgreSQL refuses a value that passed validation (rare), event by
    event under savepoints, so that one poison event cannot hold back the other 99."""
    if not events:
        return [], []
    try:
        with conn.transaction():
            return conn.execute(INSERT_EVENTS, (recordset(events).decode(),)).fetchall(), []
    except psycopg.Error as error:
        if not db.is_content_error(error):
            raise
    stored, refused = [], []
    # One statement each, but one transaction: its keys are taken in the statement's order.
    for event in sorted(events, key=INSERT_ORDER):
        try:
            with conn.transaction():
                stored += conn.execute(INSERT_EVENTS, (recordset([event]).decode(),)).fetchall()
        except psycopg.Error as error:
            if not db.is_content_error(error):
                raise
            reason = f"refused by PostgreSQL: {error.diag.message_primary or error}"
            refused.append(Rejected("event", reason, event.content, event.type, True))
    return stored, refused


def rows_by_mail_id(conn, client_id, mailing_ids, tag) -> dict:
    """{mail_id: rows} of a simulated run: its client's mailings, mail ids that start `tag-`."""
    params = {"client": client_id, "mailings": list(mailing_ids), "tagged": f"{tag}-%"}
    return dict(conn.execute(RUN_ROWS, params).fetchall())


def recordset(events) -> bytes:
    """The batch's JSON document (UTF-8): one array per event, its payload embedded as
    received."""
    rows = list(map(tuple, events))  # orjson writes tuples itself; a NamedTuple needs a call
    try:
        return orjson.dumps(rows, default=_as_json)
    except orjson.JSONEncodeError:
        # A parsed payload within orjson's nesting limit on its own but not two levels deeper,
        # inside the document: each payload serialised alone, then embedded as bytes.
        rows = [(*event[:-1], event.content) for event in events]
        return orjson.dumps(rows, default=_as_json)


def _as_json(value):
    """A payload's bytes (serialised and checked at validation) as they are."""
    if type(value) is bytes:
        return orjson.Fragment(value)
    raise TypeError
