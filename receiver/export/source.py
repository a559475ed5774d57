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

Besides the rows: their keys alone, in the same order (to check that the database still has a
part's rows before that part is written again, and to find the events a pruned month received
after its export), the newest storing transaction of the month, and rows by their keys.
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
MONTH_KEYS = (
    "SELECT client_id, type, created_at, event_key FROM events WHERE {where} "
    "ORDER BY client_id, type, created_at, event_key"
)
COUNT = "SELECT count(*) FROM events WHERE {where}"
# The newest storing transaction (the partial index events_xid, read backwards).
NEWEST = (
    "SELECT xid::text::bigint FROM events WHERE {where} AND xid IS NOT NULL "
    "ORDER BY xid DESC LIMIT 1"
)
# Rows by their keys, in the keys' order: one index lookup per key.
ROWS_BY_KEYS = (
    "SELECT e.* FROM unnest(%(client_ids)s::bigint[], %(types)s::text[], "
    "%(created_ats)s::timestamptz[], %(event_keys)s::text[]) WITH ORDINALITY "
    "AS k(client_id, type, created_at, event_key, n) "
    "CROSS JOIN LATERAL (SELECT {fields}, payload::text AS payload FROM events "
    "WHERE {where} AND events.client_id = k.client_id AND events.type = k.type "
    "AND events.created_at = k.created_at AND events.event_key = k.event_key) AS e "
    "ORDER BY k.n"
)
IN_MONTH = "created_at >= %(start)s AND created_at < %(end)s"
# Each bound is a clause of its own rather than `%(x)s IS NULL OR ...`: a bound the planner
# sees is where the index scan starts (or stops); behind an OR it would be a filter.
AFTER = (
    "(client_id, type, created_at, event_key) > (%(after_client_id)s::bigint, "
    "%(after_type)s::text, %(after_created_at)s::timestamptz, %(after_event_key)s::text)"
)
FROM = (
    "(client_id, type, created_at, event_key) >= (%(first_client_id)s::bigint, "
    "%(first_type)s::text, %(first_created_at)s::timestamptz, %(first_event_key)s::text)"
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


def month_keys(conn, start: datetime, end: datetime, after=None, last=None, first=None):
    """The keys (tuples) of the month's rows after `after` (or from `first`) up to `last`, in
    the rows' order, in chunks; a context manager around the generator."""
    where, params = _where(start, end, after, last, first)
    return closing(_chunks(conn, sql.SQL(MONTH_KEYS).format(where=where), params))


def count(conn, start: datetime, end: datetime, after=None, last=None) -> int:
    """Rows of the month with a key after `after` and up to `last` (None: no bound)."""
    where, params = _where(start, end, after, last)
    return conn.execute(sql.SQL(COUNT).format(where=where), params).fetchone()[0]


def newest_xid(conn, start: datetime, end: datetime) -> int | None:
    """The newest storing transaction among the month's rows (None: none has one)."""
    where, params = _where(start, end, None, None)
    row = conn.execute(sql.SQL(NEWEST).format(where=where), params).fetchone()
    return None if row is None else row[0]


def rows_by_keys(conn, start: datetime, end: datetime, keys: list[tuple]) -> list[tuple]:
    """The month's rows (tuples in schema order) with these keys, in their order; a key the
    database no longer has is left out."""
    where, params = _where(start, end, None, None)
    columns = [list(column) for column in zip(*keys, strict=True)] if keys else [[]] * 4
    params.update(zip(("client_ids", "types", "created_ats", "event_keys"), columns, strict=True))
    query = sql.SQL(ROWS_BY_KEYS).format(fields=sql.SQL(feed.EVENT_FIELDS), where=where)
    with conn.cursor(binary=True) as cursor:
        return cursor.execute(query, params).fetchall()


def _stream(conn, where, params, limit):
    query = sql.SQL(MONTH_ROWS).format(fields=sql.SQL(feed.EVENT_FIELDS), where=where)
    yield from _chunks(conn, query, {**params, "limit": limit})


def _chunks(conn, query, params):
    with conn.transaction(), conn.cursor(name="receiver_export", binary=True) as cursor:
        cursor.execute(query, params)
        while rows := cursor.fetchmany(CHUNK_ROWS):
            yield rows


def _where(start, end, after, last, first=None):
    """The WHERE clause (and its parameters) of the rows in [start, end), (after, last] and
    from `first` on."""
    clauses, params = [sql.SQL(IN_MONTH)], {"start": start, "end": end}
    if after is not None:
        clauses.append(sql.SQL(AFTER))
        params.update(after.params("after_"))
    if first is not None:
        clauses.append(sql.SQL(FROM))
        params.update(first.params("first_"))
    if last is not None:
        clauses.append(sql.SQL(UP_TO))
        params.update(last.params("last_"))
    return sql.SQL(" AND ").join(clauses), params
