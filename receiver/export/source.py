"""What the month export reads from PostgreSQL: the SQL kept together here.

A month's rows are read in the unique key's order, (client_id, type, created_at, event_key),
in the database's own collation: that is the order of the `events_key` index of every
partition, so a part's rows come from an index range scan that starts at the previous part's
last key, never from a sort of the month. (COLLATE "C", as the feed orders, would sort the
whole month on a database whose collation is not C.) Within one database the order is fixed,
which is all a resume needs: the manifests keep the keys, and the same database continues after
them. A month's rows in events_default (no partition of their own yet) are read with the rest.

The rows stream from a server-side cursor, a few thousand at a time: the month is never in
memory, and the export's transaction takes no transaction id, so it holds back neither the
feed's horizon nor anyone's locks (only vacuum, for as long as one part takes).
"""

from contextlib import closing
from dataclasses import asdict, dataclass
from datetime import datetime

from psycopg import sql

from ..storage import feed

# Rows fetched per round trip; a divisor of parts.ROW_GROUP_ROWS keeps groups whole.
CHUNK_ROWS = 8192
# The export's columns: the feed's expressions (one schema for both layouts), then the payload
# as its JSON text.
MONTH_ROWS = (
    "SELECT {fields}, payload::text AS payload FROM events WHERE {where} "
    "ORDER BY client_id, type, created_at, event_key LIMIT %(limit)s"
)
COUNT = "SELECT count(*) FROM events WHERE {where}"
IN_MONTH = "created_at >= %(start)s AND created_at < %(end)s"
# Each bound is a clause of its own rather than `%(x)s IS NULL OR ...`: a bound the planner
# sees is where the index scan starts (or stops); behind an OR it would be a filter.
AFTER = (
    "(client_id, type, created_at, event_key) > (%(after_client_id)s::bigint, "
    "%(after_type)s::text, %(after_created_at)s::timestamptz, %(after_event_key)s::text)"
)
UP_TO = (
    "(client_id, type, created_at, event_key) <= (%(last_client_id)s::bigint, "
    "%(last_type)s::text, %(last_created_at)s::timestamptz, %(last_event_key)s::text)"
)


@dataclass(frozen=True)
class Key:
    """A row's place in the month's order: its unique key."""

    client_id: int
    type: str
    created_at: datetime
    event_key: str

    def params(self, prefix: str) -> dict:
        return {prefix + name: value for name, value in asdict(self).items()}


def month_rows(conn, start: datetime, end: datetime, after: Key | None, limit: int):
    """The month's rows (tuples in schema order) after the key `after` (None: from the first),
    at most `limit`, in chunks; a context manager around the generator (close it to stop)."""
    return closing(_stream(conn, *_where(start, end, after, None), limit))


def count(conn, start: datetime, end: datetime, after=None, last=None) -> int:
    """Rows of the month with a key after `after` and up to `last` (None: no bound)."""
    where, params = _where(start, end, after, last)
    return conn.execute(sql.SQL(COUNT).format(where=where), params).fetchone()[0]


def _stream(conn, where, params, limit):
    with conn.transaction(), conn.cursor(name="receiver_export", binary=True) as cursor:
        query = sql.SQL(MONTH_ROWS).format(fields=sql.SQL(feed.EVENT_FIELDS), where=where)
        cursor.execute(query, {**params, "limit": limit})
        while rows := cursor.fetchmany(CHUNK_ROWS):
            yield rows


def _where(start, end, after, last):
    """The WHERE clause (and its parameters) of the rows in [start, end) and (after, last]."""
    clauses, params = [sql.SQL(IN_MONTH)], {"start": start, "end": end}
    if after is not None:
        clauses.append(sql.SQL(AFTER))
        params.update(after.params("after_"))
    if last is not None:
        clauses.append(sql.SQL(UP_TO))
        params.update(last.params("last_"))
    return sql.SQL(" AND ").join(clauses), params
