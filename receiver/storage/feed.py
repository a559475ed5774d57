"""The change feeds: stored events and status changes, read from a cursor with no gap and no
repeat, whatever order the writers commit in (migrations/008_change_feed.sql says how).

A cursor names a place in feed order: "P" is "everything at positions before P", "P:T" is
"everything before P, and at P everything up to tie-break T". A read returns what is after the
cursor and below the horizon, the oldest transaction still running: below it every writer has
ended, so nothing can appear there later. A page that is not full ends at the horizon; a full
page ends at its last row, and the next read picks up the rest of that position.

Every function takes a connection in autocommit; each statement is its own snapshot.
"""

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from psycopg.rows import dict_row

HORIZON = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"

STATUS_CHANGES = """
SELECT position::text::bigint AS position, id, client_id, recipient_id, status, previous_status,
       status_at, status_event_type, mailing_id, status_event_key, changed_at
FROM status_changes
WHERE position >= %(position)s::text::xid8 AND position < %(horizon)s::text::xid8
  AND (position > %(position)s::text::xid8 OR id > %(id)s)
  AND (%(client)s::bigint IS NULL OR client_id = %(client)s)
ORDER BY status_changes.position, id
LIMIT %(limit)s
"""

# The columns of an event in the feed (and in `receiver export`): the typed ones, then the
# payload as received. received_at is when its batch arrived; xid its position.
EVENT_FIELDS = """
xid::text::bigint AS xid, client_id, type, created_at, event_key, event_id, received_at,
mailing_id, user_list_id, subscription_id, recipient_id, mail_id, media_type, category, reason,
threshold_exceeded, link, device, operating_system, browser, remote_address"""
# (events.xid: plain `xid` would be the output column, a bigint no index is sorted by.)
# Within one transaction's events: the unique key's order, bytes compared ("C") so that a
# cursor means the same on every server.
EVENT_ORDER = 'events.xid, client_id, type COLLATE "C", created_at, event_key COLLATE "C"'
EVENTS_AFTER = """
FROM events
WHERE xid >= %(position)s::text::xid8 AND xid < %(horizon)s::text::xid8
  AND (xid > %(position)s::text::xid8 OR %(at_start)s
       OR (client_id, type COLLATE "C", created_at, event_key COLLATE "C")
          > (%(client_key)s::bigint, %(type)s::text, %(created_at)s::timestamptz,
             %(event_key)s::text))
  AND (%(client)s::bigint IS NULL OR client_id = %(client)s)
"""
# The payload parsed (JSON out of the HTTP feed) or as its JSON text (CSV, export).
PAYLOAD_AS = {"json": "payload", "text": "payload::text"}
EVENTS = {
    form: "".join(
        ("SELECT", EVENT_FIELDS, ", ", expression, " AS payload", EVENTS_AFTER, "ORDER BY ")
    )
    + EVENT_ORDER
    + "\nLIMIT %(limit)s"
    for form, expression in PAYLOAD_AS.items()
}


# Positions and ids are read out as bigint: a cursor this feed wrote never goes beyond.
BIGINT_MAX = 2**63 - 1


class BadCursor(ValueError):
    """A cursor that this receiver did not write."""


class CursorAhead(BadCursor):
    """A cursor past this database's horizon: no reader of this database can have one (the
    horizon only moves forward). The database was restored, or a replica without the latest
    transactions was promoted: its new transactions reuse positions the reader has passed, so
    reading on from there would skip them. The reader must start again from a cursor it trusts
    (e.g. the beginning, applying entries it already has as no-ops)."""


@dataclass(frozen=True)
class Cursor:
    position: int = 0
    # None: at the start of `position`. Status changes: the entry id. Events: (client_id, type,
    # created_at in microseconds since the epoch, event_key).
    tie: object = None

    def __str__(self) -> str:
        if self.tie is None:
            return str(self.position)
        if isinstance(self.tie, int):
            return f"{self.position}:{self.tie}"
        packed = base64.urlsafe_b64encode(orjson.dumps(list(self.tie))).rstrip(b"=")
        return f"{self.position}:{packed.decode()}"

    @classmethod
    def parse(cls, text, tie="id") -> "Cursor":
        """A cursor from its text; None or "" is the beginning. `tie`: "id" or "event"."""
        if not text:
            return cls()
        position, _, rest = str(text).partition(":")
        try:
            if not _is_bigint_digits(position):
                raise ValueError
            if not rest:
                return cls(int(position))
            if tie == "id":
                if not _is_bigint_digits(rest):
                    raise ValueError
                return cls(int(position), int(rest))
            client, kind, micros, key = orjson.loads(
                base64.urlsafe_b64decode(rest + "=" * (-len(rest) % 4))
            )
            # What PostgreSQL takes as the query's bigint and text parameters: anything else
            # (a boolean, a client id beyond 64 bits, a NUL) would fail the read, not the parse.
            if (
                not all(type(v) is int for v in (client, micros))
                or not -BIGINT_MAX - 1 <= client <= BIGINT_MAX
                or not all(isinstance(v, str) and "\x00" not in v for v in (kind, key))
            ):
                raise ValueError
            EPOCH + timedelta(microseconds=micros)  # a time PostgreSQL and Python can hold
            return cls(int(position), (client, kind, micros, key))
        except (ValueError, TypeError, OverflowError, binascii.Error, orjson.JSONDecodeError):
            raise BadCursor(f"not a cursor of this feed: {str(text)[:80]!r}") from None


@dataclass
class Page:
    rows: list
    next: Cursor
    horizon: int  # positions below this one are final
    full: bool  # the page holds `limit` rows: there may be more before the horizon
    columns: tuple = ()  # the rows' keys, in order (also when there are none)


# The seed (migrations/008): the next few statuses decided before 008 that have no entry yet,
# one entry each. Two statements in one short transaction: the first locks the batch's rows
# (FOR UPDATE), so a batch changing one of them waits for the seed, and its entry comes after
# the seed's; the second, a statement of its own and so with a snapshot taken once the locks
# are held, sees every entry of a batch that held one of those rows first and committed (that
# recipient needs no seed: its latest entry carries its status).
SEED_PLACE = "SELECT client_id, recipient_id FROM status_changes_seed FOR UPDATE"
SEED_LOCK = """
SELECT client_id, recipient_id FROM recipient_status
WHERE (client_id, recipient_id) > (%(client)s, %(recipient)s)
ORDER BY client_id, recipient_id LIMIT %(batch)s
FOR UPDATE
"""
SEED_INSERT = """
INSERT INTO status_changes (position, client_id, recipient_id, status, status_at,
    status_event_type, mailing_id, status_event_key, changed_at)
SELECT pg_current_xact_id(), client_id, recipient_id, status, status_at, status_event_type,
       mailing_id, status_event_key, changed_at
FROM recipient_status b
WHERE (client_id, recipient_id) > (%(client)s, %(recipient)s)
  AND (client_id, recipient_id) <= (%(last_client)s, %(last_recipient)s)
  AND NOT EXISTS (SELECT FROM status_changes c
                  WHERE c.client_id = b.client_id AND c.recipient_id = b.recipient_id)
ORDER BY client_id, recipient_id
"""


def seed_status_changes(conn, batch=5_000) -> int:
    """Give every status decided before 008 its entry, a batch per transaction, resuming where
    an earlier run stopped; the entries written. `conn` in autocommit."""
    seeded = 0
    while True:
        with conn.transaction():
            # FOR UPDATE: two `receiver migrate` at once take turns, batch by batch.
            place = conn.execute(SEED_PLACE).fetchone()
            if place is None:
                return seeded
            client, recipient = place
            locked = conn.execute(
                SEED_LOCK, {"client": client, "recipient": recipient, "batch": batch}
            ).fetchall()
            if not locked:
                conn.execute("DELETE FROM status_changes_seed")  # done: nothing to resume
                return seeded
            last_client, last_recipient = locked[-1]
            params = {"client": client, "recipient": recipient,
                      "last_client": last_client, "last_recipient": last_recipient}  # fmt: skip
            seeded += conn.execute(SEED_INSERT, params).rowcount
            conn.execute(
                "UPDATE status_changes_seed SET client_id = %s, recipient_id = %s",
                (last_client, last_recipient),
            )


def horizon(conn) -> int:
    """The oldest transaction still running: every position below it is final."""
    return conn.execute(HORIZON).fetchone()[0]


def checked_horizon(conn, cursor) -> int:
    """The horizon, or CursorAhead if `cursor` is past it."""
    top = horizon(conn)
    if cursor.position > top:
        raise CursorAhead(
            f"cursor {cursor} is ahead of this database (its transactions are at {top}): "
            "restored or failed over? start again from a cursor you trust"
        )
    return top


def read_status_changes(conn, after=None, limit=1000, client=None) -> Page:
    """Status changes after the cursor `after` (text or Cursor), at most `limit` (>= 1)."""
    _check_limit(limit)
    cursor = after if isinstance(after, Cursor) else Cursor.parse(after, "id")
    top = checked_horizon(conn, cursor)
    params = {
        "position": str(cursor.position),
        "id": cursor.tie if cursor.tie is not None else 0,
        "horizon": str(top),
        "client": client,
        "limit": limit,
    }
    columns, rows = _fetch(conn, STATUS_CHANGES, params)
    if len(rows) >= limit:
        last = rows[-1]
        return Page(rows, Cursor(last["position"], last["id"]), top, True, columns)
    return Page(rows, Cursor(max(top, cursor.position)), top, False, columns)


def read_events(conn, after=None, limit=1000, client=None, payload="json") -> Page:
    """Events after the cursor `after` (text or Cursor), at most `limit`; `payload`: "json"
    (parsed) or "text" (its JSON text)."""
    _check_limit(limit)
    cursor = after if isinstance(after, Cursor) else Cursor.parse(after, "event")
    top = checked_horizon(conn, cursor)
    client_key, kind, micros, key = cursor.tie or (None, None, None, None)
    params = {
        "position": str(cursor.position),
        "horizon": str(top),
        "at_start": cursor.tie is None,
        "client_key": client_key,
        "type": kind,
        "created_at": None if micros is None else EPOCH + timedelta(microseconds=micros),
        "event_key": key,
        "client": client,
        "limit": limit,
    }
    columns, rows = _fetch(conn, EVENTS[payload], params)
    if len(rows) >= limit:
        last = rows[-1]
        tie = (last["client_id"], last["type"], _to_micros(last["created_at"]), last["event_key"])
        return Page(rows, Cursor(last["xid"], tie), top, True, columns)
    return Page(rows, Cursor(max(top, cursor.position)), top, False, columns)


def _check_limit(limit):
    # A page of none could not say where the next one starts.
    if limit < 1:
        raise ValueError(f"a page holds at least one row, not {limit}")


def _fetch(conn, query, params) -> tuple[tuple, list]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, params).fetchall()
        return tuple(column.name for column in cur.description), rows


def _is_bigint_digits(text) -> bool:
    """ASCII digits of a number from 0 to BIGINT_MAX (str.isdigit alone takes "١٢" and "²")."""
    return 0 < len(text) <= 19 and text.isascii() and text.isdigit() and int(text) <= BIGINT_MAX


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _to_micros(moment: datetime) -> int:
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# Retention of the status feed: an entry older than the horizon goes once a later entry of the
# same recipient exists. Whoever reads from any cursor still ends with every recipient's
# current status (each one's latest entry stays), only the history before the horizon thins.
# By ranges of id (the primary key), each its own short transaction.
COMPACTION_END = "SELECT max(id) FROM status_changes WHERE changed_at < %s"
COMPACT_RANGE = """
DELETE FROM status_changes c
WHERE c.id >= %(low)s AND c.id < %(high)s AND c.changed_at < %(horizon)s
  AND EXISTS (SELECT FROM status_changes later
              WHERE later.client_id = c.client_id AND later.recipient_id = c.recipient_id
                AND later.position >= c.position
                AND (later.position, later.id) > (c.position, c.id))
"""


COUNT_COMPACTABLE = """
SELECT count(*) FROM status_changes c
WHERE c.changed_at < %(horizon)s
  AND EXISTS (SELECT FROM status_changes later
              WHERE later.client_id = c.client_id AND later.recipient_id = c.recipient_id
                AND later.position >= c.position
                AND (later.position, later.id) > (c.position, c.id))
"""


def count_compactable_status_changes(conn, horizon) -> int:
    """The entries compact_status_changes(horizon) would delete."""
    return conn.execute(COUNT_COMPACTABLE, {"horizon": horizon}).fetchone()[0]


def compact_status_changes(conn, horizon, batch=10_000) -> int:
    """Delete the status changes older than `horizon` that a later change of the same
    recipient supersedes; the entries deleted. `conn` in autocommit."""
    end = conn.execute(COMPACTION_END, (horizon,)).fetchone()[0]
    deleted, low = 0, 1
    while end is not None and low <= end:
        params = {"low": low, "high": low + batch, "horizon": horizon}
        deleted += conn.execute(COMPACT_RANGE, params).rowcount
        low += batch
    return deleted
