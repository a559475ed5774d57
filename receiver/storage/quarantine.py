"""The `quarantine` table: what could not be stored as an event, kept once with its reason.

The sender retries anything but 200 every 10 s for three days, so the same bad content arrives
again and again: it is keyed by a digest of its kind and bytes and counted, not stored per retry.
"""

import hashlib
from dataclasses import dataclass

from psycopg.rows import dict_row

# The same bad content retried by the sender every 10 s is kept once; later arrivals only count.
INSERT_QUARANTINE = """
INSERT INTO quarantine (kind, reason, content, content_sha256)
SELECT * FROM unnest(%s::text[], %s::text[], %s::bytea[], %s::bytea[])
ON CONFLICT (content_sha256) DO UPDATE
SET last_received_at = now(),
    times_received = quarantine.times_received + 1,
    reason = EXCLUDED.reason
"""

# The filters of `list`, written out in each statement: a NULL parameter means "no filter".
LIST_ROWS = """
SELECT id, kind, reason, times_received, received_at, last_received_at, resolved_at, resolution,
       octet_length(content) AS size,
       CASE WHEN %(with_content)s THEN content END AS content
FROM quarantine
WHERE (%(all)s OR resolved_at IS NULL)
  AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
  AND (%(since)s::timestamptz IS NULL OR last_received_at >= %(since)s::timestamptz)
ORDER BY id
LIMIT %(limit)s
"""

COUNT_BY_REASON = """
SELECT reason, count(*) AS rows
FROM quarantine
WHERE (%(all)s OR resolved_at IS NULL)
  AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
  AND (%(since)s::timestamptz IS NULL OR last_received_at >= %(since)s::timestamptz)
GROUP BY reason
ORDER BY count(*) DESC, reason
"""

GET_ROW = """
SELECT id, kind, reason, times_received, received_at, last_received_at, resolved_at, resolution,
       octet_length(content) AS size, content
FROM quarantine WHERE id = %s
"""

# Retention: a resolved row has done its job once its events are stored; unresolved rows stay
# until someone looks at them, whatever their age.
DELETE_RESOLVED_BEFORE = """
DELETE FROM quarantine WHERE id = ANY (ARRAY(
    SELECT id FROM quarantine WHERE resolved_at < %s ORDER BY id LIMIT %s))
"""

COUNT_RESOLVED_BEFORE = "SELECT count(*) FROM quarantine WHERE resolved_at < %s"

UNRESOLVED_IDS = "SELECT id FROM quarantine WHERE resolved_at IS NULL ORDER BY id"
EXISTING_IDS = "SELECT id FROM quarantine WHERE id = ANY(%s)"

# FOR UPDATE: an operator's UPDATE of the content, or a second replay, waits until this row's
# outcome is committed, so the row is resolved for exactly the content whose events were stored.
LOCK_ROW = "SELECT id, kind, content, resolved_at FROM quarantine WHERE id = %s FOR UPDATE"

# The reason is kept on a resolved row: it is the record of why the content was quarantined.
RESOLVE_ROW = "UPDATE quarantine SET resolved_at = now(), resolution = %s WHERE id = %s"
KEEP_ROW = "UPDATE quarantine SET reason = %s WHERE id = %s"


@dataclass
class Rejected:
    """Something kept in quarantine: a whole body or one event, and why."""

    kind: str
    reason: str
    content: bytes
    event_type: str | None = None  # the item's `type`, when it had one
    after_validation: bool = False  # valid, but PostgreSQL refused a value


def keep(conn, rejected):
    """Insert (or count again) each Rejected, in the caller's transaction."""
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


def keep_body(pool, body: bytes, reason: str, deadline=None):
    """Keep an unparseable body, once however often it is retried (`deadline`: the request's)."""
    from . import db

    db.run_on_connection(
        pool, lambda conn: keep(conn, [Rejected("body", reason, body)]), deadline=deadline
    )


def list_rows(conn, kind=None, since=None, limit=100, include_resolved=False, with_content=False):
    """Quarantine rows in id order, unresolved only unless include_resolved."""
    params = _filters(kind, since, include_resolved) | {
        "limit": limit,
        "with_content": with_content,
    }
    return conn.cursor(row_factory=dict_row).execute(LIST_ROWS, params).fetchall()


def reason_counts(conn, kind=None, since=None, include_resolved=False) -> list[dict]:
    """Rows per reason under the same filters as `list_rows`, most frequent first."""
    params = _filters(kind, since, include_resolved)
    return conn.cursor(row_factory=dict_row).execute(COUNT_BY_REASON, params).fetchall()


def get_row(conn, row_id) -> dict | None:
    """One quarantine row with its content, or None."""
    return conn.cursor(row_factory=dict_row).execute(GET_ROW, (row_id,)).fetchone()


def lock_row(conn, row_id) -> dict | None:
    """The row to replay, locked until the caller's transaction ends; None if it is gone."""
    return conn.cursor(row_factory=dict_row).execute(LOCK_ROW, (row_id,)).fetchone()


def resolve_row(conn, row_id, resolution: str):
    conn.execute(RESOLVE_ROW, (resolution, row_id))


def update_reason(conn, row_id, reason: str):
    conn.execute(KEEP_ROW, (reason, row_id))


def unresolved_ids(conn) -> list[int]:
    return [row[0] for row in conn.execute(UNRESOLVED_IDS)]


def existing_ids(conn, ids) -> set[int]:
    return {row[0] for row in conn.execute(EXISTING_IDS, (sorted(set(ids)),))}


def delete_resolved_before(conn, horizon, batch=10_000) -> int:
    """Delete rows resolved before `horizon`, in batches; the number deleted."""
    from . import db

    return db.delete_in_batches(conn, DELETE_RESOLVED_BEFORE, horizon, batch)


def count_resolved_before(conn, horizon) -> int:
    """The rows delete_resolved_before(horizon) would delete."""
    return conn.execute(COUNT_RESOLVED_BEFORE, (horizon,)).fetchone()[0]


def _filters(kind, since, include_resolved) -> dict:
    return {"kind": kind, "since": since, "all": include_resolved}
