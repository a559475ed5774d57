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
# Clients a chunk counts (the first by id; a deployment has a handful) and the table holds;
# examples a chunk looks up (changes first). Beyond, logged.
MAX_CLIENTS_PER_CHUNK = 100
MAX_CLIENTS = 1000
MAX_EXAMPLES_PER_CHUNK = 50
# A type is `daily` when it arrived on this many of the 14 days up to its last arrival (ten:
# weekdays only still counts), and `silent` when that arrival is over a week old.
DAILY_DAYS = 10
DAYS_KEPT = 15

PLACE = """
SELECT position::text::bigint, started_at, now() - last_pass_at FROM event_shapes_position
FOR UPDATE
"""
START = """
INSERT INTO event_shapes_position (position, started_at, last_pass_at) VALUES ('0', now(), now())
RETURNING position::text::bigint, started_at, NULL::interval
"""
RECORD_START = "UPDATE event_shapes_position SET last_pass_at = now()"
# The chunk: from the place up to the first `limit` events' last transaction, whole (a
# transaction's events are never split between chunks, so a place is always a transaction id).
CHUNK_END = """
SELECT max(xid)::text::bigint + 1 FROM (
    SELECT xid FROM events
    WHERE xid >= %(start)s::text::xid8 AND xid < %(horizon)s::text::xid8
    ORDER BY xid LIMIT %(limit)s) chunk
"""
# What the chunk holds, counted: a row per (client, type, arrival day); per (client, type,
# field, kind); and per value of the enumerations (a value that does not look like one counted
# as %(text)s). Each payload is read once. The bounds apply here, keeping the most frequent of
# the chunk (a real field is in every event, a junk key in one), so that no sender can make a
# chunk's answer large: clients, types per client, fields per type, values per field.
COUNT_CHUNK = """
WITH chunk AS MATERIALIZED (
    SELECT client_id, type, received_at, payload FROM events
    WHERE xid >= %(start)s::text::xid8 AND xid < %(end)s::text::xid8
), days AS (
    SELECT client_id, type, (received_at AT TIME ZONE 'UTC')::date AS day, count(*) AS events,
           min(received_at) AS first_seen, max(received_at) AS last_seen
    FROM chunk GROUP BY 1, 2, 3
), kept AS (
    SELECT client_id, type FROM (
        SELECT client_id, type,
               row_number() OVER (PARTITION BY client_id ORDER BY sum(events) DESC, type) AS n,
               dense_rank() OVER (ORDER BY client_id) AS client_n
        FROM days GROUP BY client_id, type) ranked
    WHERE n <= %(max_types)s AND client_n <= %(max_clients)s
), pairs AS MATERIALIZED (
    SELECT c.client_id, c.type, f.key AS field, jsonb_typeof(f.value) AS kind,
           CASE WHEN f.key = ANY(%(enumerations)s) AND jsonb_typeof(f.value) = 'string' THEN
                CASE WHEN f.value #>> '{}' ~ %(value_pattern)s THEN f.value #>> '{}'
                     ELSE %(text)s END
           END AS value,
           count(*) AS events, min(c.received_at) AS first_seen, max(c.received_at) AS last_seen
    FROM chunk c JOIN kept USING (client_id, type) CROSS JOIN LATERAL jsonb_each(c.payload) f
    WHERE length(f.key) <= %(max_field)s
    GROUP BY 1, 2, 3, 4, 5
), fields AS (
    SELECT client_id, type, field, kind, sum(events)::bigint AS events,
           min(first_seen) AS first_seen, max(last_seen) AS last_seen,
           sum(sum(events)) OVER (PARTITION BY client_id, type, field) AS field_events
    FROM pairs GROUP BY 1, 2, 3, 4
), ranked_fields AS (
    SELECT *, dense_rank() OVER (PARTITION BY client_id, type
                                 ORDER BY field_events DESC, field) AS n
    FROM fields
), ranked_values AS (
    SELECT *, row_number() OVER (PARTITION BY client_id, type, field
                                 ORDER BY events DESC, value) AS n
    FROM pairs WHERE value IS NOT NULL
)
SELECT client_id, type, NULL::text AS field, NULL::text AS kind, NULL::text AS value, day,
       events, first_seen, last_seen
FROM days JOIN kept USING (client_id, type)
UNION ALL
SELECT client_id, type, field, kind, NULL, NULL, events, first_seen, last_seen
FROM ranked_fields WHERE n <= %(max_fields)s
UNION ALL
SELECT v.client_id, v.type, v.field, v.kind, v.value, NULL, v.events, v.first_seen, v.last_seen
FROM ranked_values v
WHERE v.n <= %(max_values)s
  AND EXISTS (SELECT FROM ranked_fields f WHERE f.n <= %(max_fields)s
              AND (f.client_id, f.type, f.field) = (v.client_id, v.type, v.field))
"""
KNOWN = """
SELECT client_id, event_type, field, kind, value, first_seen_at FROM event_shapes
WHERE client_id = ANY(%s)
"""
CLIENTS = "SELECT count(DISTINCT client_id) FROM event_shapes"
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
RESTART_AT = """
SELECT min(xid)::text::bigint FROM events
WHERE received_at >= coalesce((SELECT learned_until FROM event_shapes_position), '-infinity')
"""
# How far the counting has come, in time: every event that arrived before `learned_until` is
# counted. The arrival of the first event not counted yet (behind a held-back horizon, or a
# budget), else now. Not "when a pass last ran": a pass that counts nothing is no progress.
LEARNED_UNTIL = """
UPDATE event_shapes_position SET learned_until = coalesce(
    (SELECT received_at FROM events WHERE xid >= %s::text::xid8 ORDER BY xid LIMIT 1), now())
"""
FORGET_DAYS = """
DELETE FROM event_type_days WHERE day < (now() AT TIME ZONE 'UTC')::date - %s::integer
"""

# The signals for the metric: unreviewed changes, each once (a new type with all the fields it
# came with, a new field whatever kinds it came in),
# and daily types silent for a week of what is counted (not of the clock: a pass catching up a
# backlog has not seen the last week yet), unless accepted since their last arrival.
SILENT = """
field IS NULL AND daily
AND last_seen_at < (SELECT learned_until FROM event_shapes_position) - interval '7 days'
AND (reviewed_at IS NULL OR reviewed_at < last_seen_at)"""
SIGNALS = f"""
SELECT client_id, change AS signal,
       count(DISTINCT (event_type,
                       CASE WHEN change <> 'new_type' THEN field END,
                       CASE WHEN change = 'kind_changed' THEN kind END,
                       CASE WHEN change = 'new_value' THEN value END))
FROM event_shapes
WHERE change IS NOT NULL AND reviewed_at IS NULL GROUP BY 1, 2
UNION ALL
SELECT client_id, 'silent_type', count(*) FROM event_shapes WHERE {SILENT} GROUP BY 1
"""  # noqa: S608 (constants only)
LEARNED_UNTIL_AT = "SELECT learned_until FROM event_shapes_position"
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
# Retention (receiver.maintenance.retention): what was last seen before the horizon is gone
# with its events; seen again, it is judged anew.
FORGET = "DELETE FROM event_shapes WHERE last_seen_at < %s"
COUNT_FORGOTTEN = "SELECT count(*) FROM event_shapes WHERE last_seen_at < %s"


@dataclass
class LearnReport:
    events: int = 0  # events counted
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


def learn(
    conn, budget_seconds=None, chunk_events=CHUNK_EVENTS, baseline=rules.BASELINE, min_interval=None
) -> LearnReport:
    """One pass on an autocommit connection: count the events stored since the last one, up
    to the feed's horizon or until `budget_seconds` (None: no limit) are spent. With
    `min_interval` (a timedelta), none if the last pass started less than that ago: every web
    worker tries each minute, and one pass a minute is the plan, not one per worker."""
    report = LearnReport()
    with db.session_lock_if_free(conn, LOCK_ID) as held:
        if not held:
            report.skipped = True
            return report
        with conn.transaction():
            position, started_at, since_last = place(conn)
            if min_interval is not None and since_last is not None and since_last < min_interval:
                report.skipped = True
                return report
            conn.execute(RECORD_START)
        started = time.monotonic()
        horizon = conn.execute(HORIZON).fetchone()[0]
        if position > horizon:
            # Only a database restored from a logical copy (or a place set by hand) is behind
            # us: its new transactions reuse positions below ours. Read on from the first event
            # that arrived after what was counted (counted again if it was: counts, not events).
            logger.warning("the events feed is behind the shapes' place: going back")
            position = min(conn.execute(RESTART_AT).fetchone()[0] or horizon, horizon)
            conn.execute(MOVE, (position,))
        while position < horizon:
            if budget_seconds is not None and time.monotonic() - started > budget_seconds:
                break
            params = {"start": position, "horizon": horizon, "limit": chunk_events}
            end = conn.execute(CHUNK_END, params).fetchone()[0] or horizon
            with conn.transaction():
                counted, changes = count_chunk(conn, position, end, started_at, baseline)
                conn.execute(MOVE, (end,))
            for noticed in changes:  # committed: said once, whatever happens to the pass next
                logger.warning("Campaign sends something new", extra={"fields": noticed})
            report.events += counted
            report.changes += changes
            position = end
        report.caught_up = position >= horizon
        with conn.transaction():
            conn.execute(LEARNED_UNTIL, (position,))
            if report.caught_up:
                conn.execute(FORGET_DAYS, (DAYS_KEPT,))
    return report


def place(conn) -> tuple[int, object, object]:
    """The pass's place, the time of the first pass (made now if there was none) and the time
    since the last pass started (None for the first); in the caller's transaction."""
    row = conn.execute(PLACE).fetchone()
    return row if row is not None else conn.execute(START).fetchone()


def count_chunk(conn, start, end, started_at, baseline) -> tuple[int, list]:
    """Count the events in [start, end) into the tables; (events counted, new changes)."""
    params = {
        "start": start,
        "end": end,
        "enumerations": list(rules.ENUMERATIONS),
        "value_pattern": rules.VALUE_PATTERN,
        "text": rules.TEXT,
        "max_field": rules.MAX_FIELD_LENGTH,
        "max_clients": MAX_CLIENTS_PER_CHUNK,
        "max_types": rules.MAX_TYPES_PER_CLIENT,
        "max_fields": rules.MAX_FIELDS_PER_TYPE,
        "max_values": rules.MAX_VALUES_PER_FIELD,
    }
    rows = conn.execute(COUNT_CHUNK, params).fetchall()
    days, shapes = {}, defaultdict(Shape)
    for client, kind, key, json_kind, value, day, events, first, last in rows:
        if key is None:
            days[client, kind, day] = events
            shapes[client, (kind, None, None, None)].add(events, first, last)
        else:  # a key that is no field name is recorded by its shape (it may be personal)
            name = rules.field_name(key)
            shapes[client, (kind, name, json_kind, value)].add(events, first, last)
    known = Known.load(conn, {client for client, _ in shapes})
    changes = write(conn, shapes, known, (start, end), started_at, baseline)
    if days:
        columns = zip(*((c, t, d, n) for (c, t, d), n in days.items()), strict=True)
        conn.execute(UPSERT_DAYS, [list(column) for column in columns])
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

    def __init__(self, clients_total=0):
        self.shapes = set()  # (client, shape)
        self.fields = defaultdict(set)  # client: its (type, field) pairs, any kind
        self.types = defaultdict(int)  # client: types recorded
        self.values = defaultdict(int)  # (client, type, field): values recorded
        self.field_count = defaultdict(int)  # (client, type): fields recorded
        self.first_seen = {}  # client: its first arrival
        self.clients_total = clients_total  # clients in the table

    @classmethod
    def load(cls, conn, clients) -> "Known":
        known = cls(conn.execute(CLIENTS).fetchone()[0])
        for client, kind, field_name, json_kind, value, first in conn.execute(
            KNOWN, (sorted(clients),)
        ):
            known.note(client, (kind, field_name, json_kind, value), first, loaded=True)
        return known

    def note(self, client, shape, first_seen, loaded=False):
        kind, field_name, _, value = shape
        if client not in self.first_seen and not loaded:
            self.clients_total += 1  # a client new to the table
        self.shapes.add((client, shape))
        if field_name is None:
            self.types[client] += 1
        elif value is not None:
            self.values[client, kind, field_name] += 1
        elif (kind, field_name) not in self.fields[client]:
            self.field_count[client, kind] += 1
            self.fields[client].add((kind, field_name))
        earliest = self.first_seen.get(client)
        self.first_seen[client] = first_seen if earliest is None else min(earliest, first_seen)

    def room_for(self, client, shape) -> bool:
        """Whether a new shape stays within the bounds (rules.MAX_..., MAX_CLIENTS) of the
        table, over every chunk (COUNT_CHUNK keeps one chunk's)."""
        kind, field_name, _, value = shape
        if client not in self.first_seen and self.clients_total >= MAX_CLIENTS:
            return False
        if field_name is None:
            return self.types[client] < rules.MAX_TYPES_PER_CLIENT
        if value is not None:
            return self.values[client, kind, field_name] < rules.MAX_VALUES_PER_FIELD
        if (kind, field_name) not in self.fields[client]:
            return self.field_count[client, kind] < rules.MAX_FIELDS_PER_TYPE
        return True


# Bounds reached, logged once per process and (client, type); the set is bounded itself.
_bounds_reported = set()
MAX_BOUNDS_REPORTED = 1000


def write(conn, shapes, known, chunk, started_at, baseline) -> list:
    """Upsert the chunk's shapes; judge and illustrate the new ones. The new changes."""
    rows, changes, examples = [], [], MAX_EXAMPLES_PER_CHUNK
    arrived = {}  # client: its first arrival in the chunk
    for (client, _), counted in shapes.items():
        arrived[client] = min(arrived.get(client, counted.first_seen), counted.first_seen)
    new_fields = set()  # (client, type, field) first seen in this chunk, in any kind
    new_types = set()  # (client, type) new in this chunk
    # Types first, then fields, then values: a field's judgement needs its type known, a
    # value's its field.
    order = sorted(shapes, key=lambda k: (k[0], k[1][1] is not None, k[1][3] is not None, k[1]))
    for client, shape in order:
        counted = shapes[client, shape]
        change, example = None, None
        if (client, shape) not in known.shapes:
            if not known.room_for(client, shape):
                report_bounds(client, shape)
                continue
            change = judge(known, client, shape, counted, arrived[client], started_at, baseline)
            kind, field_name, _, _ = shape
            if change == "new_type":
                new_types.add((client, kind))
            elif change is not None and (client, kind) in new_types:
                change = "new_type"  # the fields of a new type are the new type: one change
            elif change == "new_field":
                new_fields.add((client, kind, field_name))
            elif change == "kind_changed" and (client, kind, field_name) in new_fields:
                change = "new_field"  # the new field came in several kinds: one change
            illustrated = field_name is None or (change and (client, kind) not in new_types)
            if illustrated and examples:
                examples -= 1  # changes come first in `order` within a client's types only
                example = find_example(conn, chunk, client, shape)
            known.note(client, shape, counted.first_seen)
            if change is not None and (change != "new_type" or field_name is None):
                changes.append(describe(client, shape, change, counted))
        rows.append((client, *shape, counted.events, counted.first_seen, counted.last_seen,
                     change, example))  # fmt: skip
    if rows:
        conn.execute(UPSERT, [list(column) for column in zip(*rows, strict=True)])
    return changes


def judge(known, client, shape, counted, arrived, started_at, baseline) -> str | None:
    """The change a shape's first sight is: in the client's baseline (its first day, and
    everything stored before the first pass) none."""
    first = min(known.first_seen.get(client, arrived), arrived)
    in_baseline = counted.first_seen < max(first + baseline, started_at)
    return rules.change(shape, known.fields[client], in_baseline)


def find_example(conn, chunk, client, shape) -> str | None:
    """One event of the chunk that shows the shape, masked, as JSON text."""
    kind, field_name, json_kind, value = shape
    params = {"start": chunk[0], "end": chunk[1], "client": client, "type": kind}
    params |= {"field": field_name, "kind": json_kind, "value": value}
    row = conn.execute(EXAMPLE, params).fetchone()
    return orjson.dumps(rules.mask_event(row[0])).decode() if row else None


def report_bounds(client, shape):
    """Log, once per process and (client, type), a shape not recorded for the bounds."""
    key = (client, shape[0])
    if key not in _bounds_reported and len(_bounds_reported) < MAX_BOUNDS_REPORTED:
        _bounds_reported.add(key)
        logger.warning(
            "too many clients, types, fields or values to record: the rest are not counted",
            extra={"fields": {"client_id": client, "type": shape[0]}},
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


def learned_until(conn):
    """Every event that arrived before this time is counted (None: no pass yet)."""
    row = conn.execute(LEARNED_UNTIL_AT).fetchone()
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


def forget_before(conn, horizon) -> int:
    """Delete the shapes last seen before `horizon` (a few hundred rows at most per client)."""
    return conn.execute(FORGET, (horizon,)).rowcount


def count_before(conn, horizon) -> int:
    """How many shapes forget_before would delete."""
    return conn.execute(COUNT_FORGOTTEN, (horizon,)).fetchone()[0]
