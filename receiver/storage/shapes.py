"""Learning what Campaign sends (migrations/010_event_shapes.sql), off the request path.

A pass reads the events stored since its place in the events feed (events.xid, below the
feed's horizon: final, so nothing is missed and nothing read twice), a chunk at a time. Each
chunk is counted by PostgreSQL in one statement (types, top-level fields and their JSON kinds,
enumeration values, per client), judged in Python against what the client sent before and what
the vendor documents (receiver.campaign.shapes), and written with the new place in one
transaction: every stored event is counted exactly once, whatever stops a pass.

One pass at a time (a session advisory lock, tried, never waited for): every web worker tries
once a minute (receiver.maintenance.background) and `receiver maintain` runs one too.
"""

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field

import orjson
from psycopg.rows import dict_row

from ..campaign import shapes as rules
from . import db
from .feed import HORIZON

logger = logging.getLogger("receiver.shapes")
LOCK_ID = 0x7265636569766575  # next to the receiver's other advisory locks ("receiveu")
# Events per chunk: one transaction each, a few hundred milliseconds (docs/benchmarks.md).
CHUNK_EVENTS = 20_000
# A type is `daily` when it arrived on this many of the 14 days up to its last arrival (ten:
# weekdays only still counts), and `silent` when that arrival is over a week old.
DAILY_DAYS = 10
DAYS_KEPT = 15

PLACE = "SELECT position::text::bigint, started_at FROM event_shapes_position"
START = """
INSERT INTO event_shapes_position (position, started_at) VALUES ('0', now())
RETURNING position::text::bigint, started_at
"""
# The chunk: from the place up to the first `limit` events' last transaction, whole (a
# transaction's events are never split between chunks, so a place is always a transaction id).
CHUNK_END = """
SELECT max(xid)::text::bigint + 1 FROM (
    SELECT xid FROM events
    WHERE xid >= %(start)s::text::xid8 AND xid < %(horizon)s::text::xid8
    ORDER BY xid LIMIT %(limit)s) chunk
"""
# What the chunk holds, counted: a row per (client, type, arrival day), and a row per (client,
# type, field, kind), with the value for strings of the enumerations. Each payload read once.
COUNT_CHUNK = """
WITH chunk AS MATERIALIZED (
    SELECT client_id, type, received_at, payload FROM events
    WHERE xid >= %(start)s::text::xid8 AND xid < %(end)s::text::xid8
)
SELECT client_id, type, NULL::text AS field, NULL::text AS kind, NULL::text AS value,
       (received_at AT TIME ZONE 'UTC')::date AS day,
       count(*) AS events, min(received_at) AS first_seen, max(received_at) AS last_seen
FROM chunk GROUP BY client_id, type, 6
UNION ALL
SELECT c.client_id, c.type, f.key, jsonb_typeof(f.value),
       CASE WHEN f.key = ANY(%(enumerations)s) AND jsonb_typeof(f.value) = 'string'
                 AND length(f.value #>> '{}') <= %(max_value)s
            THEN f.value #>> '{}' END,
       NULL, count(*), min(c.received_at), max(c.received_at)
FROM chunk c CROSS JOIN LATERAL jsonb_each(c.payload) f
WHERE length(f.key) <= %(max_field)s
GROUP BY 1, 2, 3, 4, 5
"""
KNOWN = """
SELECT client_id, event_type, field, kind, value, first_seen_at FROM event_shapes
WHERE client_id = ANY(%s)
"""
EXAMPLE = """
SELECT payload FROM events
WHERE xid >= %(start)s::text::xid8 AND xid < %(end)s::text::xid8
  AND client_id = %(client)s AND type = %(type)s
  AND (%(field)s::text IS NULL OR jsonb_typeof(payload -> %(field)s::text) = %(kind)s)
  AND (%(value)s::text IS NULL OR payload ->> %(field)s::text = %(value)s)
LIMIT 1
"""
UPSERT = """
INSERT INTO event_shapes AS s (client_id, event_type, field, kind, value, events, first_seen_at,
                               last_seen_at, change, example)
SELECT client_id, event_type, field, kind, value, events, first_seen, last_seen, change,
       example::jsonb
FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[],
            %s::timestamptz[], %s::timestamptz[], %s::text[], %s::text[])
     AS t(client_id, event_type, field, kind, value, events, first_seen, last_seen, change,
          example)
ON CONFLICT ON CONSTRAINT event_shapes_key DO UPDATE
SET events = s.events + EXCLUDED.events,
    first_seen_at = least(s.first_seen_at, EXCLUDED.first_seen_at),
    last_seen_at = greatest(s.last_seen_at, EXCLUDED.last_seen_at)
"""
UPSERT_DAYS = """
INSERT INTO event_type_days AS d (client_id, event_type, day, events)
SELECT * FROM unnest(%s::bigint[], %s::text[], %s::date[], %s::bigint[])
ON CONFLICT (client_id, event_type, day) DO UPDATE SET events = d.events + EXCLUDED.events
"""
# `daily` of the chunk's types, from their days up to their last arrival. Once a type stops
# arriving no chunk touches it again, so the value it had stays: "it used to arrive daily".
UPDATE_DAILY = """
UPDATE event_shapes s SET daily = (
    SELECT count(*) FROM event_type_days d
    WHERE d.client_id = s.client_id AND d.event_type = s.event_type
      AND d.day > (s.last_seen_at AT TIME ZONE 'UTC')::date - 14
      AND d.day <= (s.last_seen_at AT TIME ZONE 'UTC')::date) >= %(daily_days)s
FROM unnest(%(clients)s::bigint[], %(types)s::text[]) AS t(client_id, event_type)
WHERE s.client_id = t.client_id AND s.event_type = t.event_type AND s.field IS NULL
"""
MOVE = "UPDATE event_shapes_position SET position = %s::text::xid8"
CAUGHT_UP = "UPDATE event_shapes_position SET caught_up_at = now()"
FORGET_DAYS = """
DELETE FROM event_type_days WHERE day < (now() AT TIME ZONE 'UTC')::date - %s::integer
"""

# The signals for the metric: unreviewed changes, and daily types silent for a week (unless
# accepted since their last arrival).
SILENT = """
field IS NULL AND daily AND last_seen_at < now() - interval '7 days'
AND (reviewed_at IS NULL OR reviewed_at < last_seen_at)"""
SIGNALS = f"""
SELECT client_id, change AS signal, count(*) FROM event_shapes
WHERE change IS NOT NULL AND reviewed_at IS NULL GROUP BY 1, 2
UNION ALL
SELECT client_id, 'silent_type', count(*) FROM event_shapes WHERE {SILENT} GROUP BY 1
"""  # noqa: S608 (constants only)
CAUGHT_UP_AT = "SELECT caught_up_at FROM event_shapes_position"
REPORT = f"""
SELECT id, client_id, event_type, field, kind, value, events, first_seen_at, last_seen_at,
       change, reviewed_at, daily, ({SILENT}) AS silent, example
FROM event_shapes
WHERE (%(client)s::bigint IS NULL OR client_id = %(client)s)
  AND (%(since)s::timestamptz IS NULL OR first_seen_at >= %(since)s
       OR (%(include_silent)s AND {SILENT}))
ORDER BY client_id, event_type, field NULLS FIRST, kind, value NULLS FIRST
"""  # noqa: S608 (constants only)
ACCEPT = "UPDATE event_shapes SET reviewed_at = now() WHERE id = ANY(%s) RETURNING id"


@dataclass
class LearnReport:
    events: int = 0  # events counted
    chunks: int = 0
    changes: list = field(default_factory=list)  # the new changes, as dicts
    caught_up: bool = False  # reached the feed's horizon
    skipped: bool = False  # another pass held the lock


@dataclass
class Shape:
    events: int = 0
    first_seen: object = None
    last_seen: object = None

    def add(self, events, first_seen, last_seen):
        self.events += events
        self.first_seen = (
            first_seen if self.first_seen is None else min(self.first_seen, first_seen)
        )
        self.last_seen = last_seen if self.last_seen is None else max(self.last_seen, last_seen)


def learn(conn, budget_seconds=None, chunk_events=CHUNK_EVENTS, baseline=rules.BASELINE):
    """One pass on an autocommit connection: count the events stored since the last one, up
    to the feed's horizon or until `budget_seconds` (None: no limit) are spent."""
    report = LearnReport()
    with db.session_lock_if_free(conn, LOCK_ID) as held:
        if not held:
            report.skipped = True
            return report
        started = time.monotonic()
        position, started_at = place(conn)
        horizon = conn.execute(HORIZON).fetchone()[0]
        if position > horizon:
            # Only a restored database or a promoted replica behind us moves the horizon back:
            # its new transactions reuse positions below ours, so read on from its horizon.
            logger.warning("the events feed is behind the shapes' place: restarting at it")
            position = horizon
        while position < horizon:
            if budget_seconds is not None and time.monotonic() - started > budget_seconds:
                break
            params = {"start": position, "horizon": horizon, "limit": chunk_events}
            end = conn.execute(CHUNK_END, params).fetchone()[0] or horizon
            with conn.transaction():
                counted, changes = count_chunk(conn, position, end, started_at, baseline)
                conn.execute(MOVE, (end,))
            report.events += counted
            report.chunks += 1
            report.changes += changes
            position = end
        if position >= horizon:
            report.caught_up = True
            with conn.transaction():
                conn.execute(CAUGHT_UP)
                conn.execute(FORGET_DAYS, (DAYS_KEPT,))
    for noticed in report.changes:
        logger.warning("Campaign sends something new", extra={"fields": noticed})
    return report


def place(conn) -> tuple[int, object]:
    """The pass's place and the time of the first pass (made now if there was none)."""
    row = conn.execute(PLACE).fetchone()
    return row if row is not None else conn.execute(START).fetchone()


def count_chunk(conn, start, end, started_at, baseline) -> tuple[int, list]:
    """Count the events in [start, end) into the tables; (events counted, new changes)."""
    params = {
        "start": start,
        "end": end,
        "enumerations": list(rules.ENUMERATIONS),
        "max_value": rules.MAX_VALUE_LENGTH,
        "max_field": rules.MAX_FIELD_LENGTH,
    }
    rows = conn.execute(COUNT_CHUNK, params).fetchall()
    days, shapes = {}, defaultdict(Shape)
    for client, kind, field_name, json_kind, value, day, events, first, last in rows:
        if field_name is None:
            days[client, kind, day] = events
            shapes[client, (kind, None, None, None)].add(events, first, last)
            continue
        shapes[client, (kind, field_name, json_kind, None)].add(events, first, last)
        if value is not None:
            shapes[client, (kind, field_name, json_kind, value)].add(events, first, last)
    changes = write(conn, shapes, Known.load(conn, {client for client, _ in shapes}),
                    (start, end), started_at, baseline)  # fmt: skip
    if days:
        columns = [
            list(column)
            for column in zip(*((c, t, d, n) for (c, t, d), n in days.items()), strict=True)
        ]
        conn.execute(UPSERT_DAYS, columns)
        types = sorted({(c, t) for c, t, _ in days})
        conn.execute(
            UPDATE_DAILY,
            {
                "clients": [c for c, _ in types],
                "types": [t for _, t in types],
                "daily_days": DAILY_DAYS,
            },
        )
    return sum(days.values()), changes


class Known:
    """What the chunk's clients sent before: their shapes, the start of their baseline."""

    def __init__(self):
        self.shapes = set()  # (client, shape)
        self.fields = set()  # (client, type, field)
        self.values = defaultdict(int)  # (client, type, field): values recorded
        self.field_count = defaultdict(int)  # (client, type): fields recorded (any kind)
        self.first_seen = {}  # client: its first arrival

    @classmethod
    def load(cls, conn, clients) -> "Known":
        known = cls()
        for client, kind, field_name, json_kind, value, first in conn.execute(
            KNOWN, (sorted(clients),)
        ):
            known.note(client, (kind, field_name, json_kind, value), first)
        return known

    def note(self, client, shape, first_seen):
        kind, field_name, _, value = shape
        self.shapes.add((client, shape))
        if value is not None:
            self.values[client, kind, field_name] += 1
        elif field_name is not None:
            if (client, kind, field_name) not in self.fields:
                self.field_count[client, kind] += 1
            self.fields.add((client, kind, field_name))
        earliest = self.first_seen.get(client)
        self.first_seen[client] = first_seen if earliest is None else min(earliest, first_seen)

    def room_for(self, client, shape) -> bool:
        """Whether a new shape stays within the client's bounds (rules.MAX_...)."""
        kind, field_name, _, value = shape
        if value is not None:
            return self.values[client, kind, field_name] < rules.MAX_VALUES_PER_FIELD
        if field_name is not None and (client, kind, field_name) not in self.fields:
            return self.field_count[client, kind] < rules.MAX_FIELDS_PER_TYPE
        return True


_bounds_reported = set()


def write(conn, shapes, known, chunk, started_at, baseline) -> list:
    """Upsert the chunk's shapes; judge and illustrate the new ones. The new changes."""
    rows, changes = [], []
    # Types first, then fields, then values: a field's judgement needs its type known, a
    # value's its field.
    order = sorted(shapes, key=lambda k: (k[0], k[1][1] is not None, k[1][3] is not None, k[1]))
    arrived = {}  # client: its first arrival in the chunk
    for (client, _), counted in shapes.items():
        arrived[client] = min(arrived.get(client, counted.first_seen), counted.first_seen)
    for client, shape in order:
        counted = shapes[client, shape]
        change, example = None, None
        if (client, shape) not in known.shapes:
            if not known.room_for(client, shape):
                report_bounds(client, shape)
                continue
            # The baseline: the client's first day, and everything stored before the first pass.
            first = min(known.first_seen.get(client, arrived[client]), arrived[client])
            baseline_end = max(first + baseline, started_at)
            known_fields = {(t, f) for c, t, f in known.fields if c == client}
            change = rules.change(shape, known_fields, counted.first_seen < baseline_end)
            if change is not None or shape[1] is None:
                example = find_example(conn, chunk, client, shape)
            known.note(client, shape, counted.first_seen)
            if change is not None:
                changes.append(describe(client, shape, change, counted))
        rows.append((client, *shape, counted.events, counted.first_seen, counted.last_seen,
                     change, example))  # fmt: skip
    if rows:
        conn.execute(UPSERT, [list(column) for column in zip(*rows, strict=True)])
    return changes


def find_example(conn, chunk, client, shape) -> str | None:
    """One event of the chunk that shows the shape, masked, as JSON text."""
    kind, field_name, json_kind, value = shape
    params = {"start": chunk[0], "end": chunk[1], "client": client, "type": kind}
    params |= {"field": field_name, "kind": json_kind, "value": value}
    row = conn.execute(EXAMPLE, params).fetchone()
    return orjson.dumps(rules.mask_event(row[0])).decode() if row else None


def report_bounds(client, shape):
    """Log, once per process and (client, type, field), a shape not recorded for the bounds."""
    key = (client, shape[0], shape[1])
    if key not in _bounds_reported:
        _bounds_reported.add(key)
        what = "values" if shape[3] is not None else "fields"
        logger.warning(
            "too many %s to record: the rest are not counted",
            what,
            extra={"fields": {"client_id": client, "type": shape[0], "field": shape[1]}},
        )


def describe(client, shape, change, counted) -> dict:
    kind, field_name, json_kind, value = shape
    return {
        "client_id": client,
        "change": change,
        "type": kind,
        "field": field_name,
        "kind": json_kind,
        "value": value,
        "first_seen_at": counted.first_seen.isoformat(),
    }


def signals(conn) -> dict:
    """{(client_id, signal): count}: unreviewed changes by kind, and silent daily types."""
    return {(client, signal): count for client, signal, count in conn.execute(SIGNALS)}


def caught_up_at(conn):
    """When a pass last reached the feed's horizon (None: never)."""
    row = conn.execute(CAUGHT_UP_AT).fetchone()
    return row[0] if row else None


def report_rows(conn, client=None, since=None) -> list[dict]:
    """Every shape (of `client`; first seen since `since`, plus the silent types), in order,
    with `documented` said."""
    params = {"client": client, "since": since, "include_silent": True}
    rows = conn.cursor(row_factory=dict_row).execute(REPORT, params).fetchall()
    for row in rows:
        row["documented"] = rules.documented(
            row["event_type"], row["field"], row["kind"], row["value"]
        )
    return rows


def accept(conn, ids) -> list[int]:
    """Mark these rows reviewed (their change, or their silence, is known); the ids updated."""
    return [row[0] for row in conn.execute(ACCEPT, (list(ids),))]
