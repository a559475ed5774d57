"""What `receiver campaign setup` and `status` read: events and quarantine rows per type.

Every query is bounded by `received_at` (BRIN-indexed) or `last_received_at`, so it reads the
recent rows only, however large the tables have grown.
"""

from psycopg.rows import dict_row

# The server's clock, not the command's: `received_at` is set by the server, and comparing it
# with a laptop's clock would miss events (or count old ones) whenever the two disagree.
DATABASE_NOW = "SELECT now()"

EVENTS_SINCE = """
SELECT type, count(*) AS events
FROM events
WHERE client_id = %(client)s AND type = ANY(%(types)s) AND received_at >= %(since)s
GROUP BY type
"""

# The last event is looked for within a window, not over the whole table: without an index on
# (client_id, type, received_at) "the newest ever" would read every row of the client.
ACTIVITY = """
SELECT type, max(received_at) AS last_received_at,
       count(*) FILTER (WHERE received_at >= now() - interval '1 hour') AS last_hour
FROM events
WHERE client_id = %(client)s AND received_at >= now() - make_interval(days => %(days)s)
GROUP BY type
"""

# Quarantine has no type column (a quarantined event may not even have a valid type), so the
# content of recent event rows is returned and read by the caller; bodies are only counted.
QUARANTINED_LAST_HOUR = """
SELECT kind, CASE WHEN kind = 'event' THEN content END AS content
FROM quarantine
WHERE last_received_at >= now() - interval '1 hour'
ORDER BY id DESC
LIMIT %(limit)s
"""


def database_now(conn):
    """The database server's current time."""
    return conn.execute(DATABASE_NOW).fetchone()[0]


def events_since(conn, client_id, types, since) -> dict[str, int]:
    """Events of `client_id` per type among `types`, received since `since`."""
    params = {"client": client_id, "types": list(types), "since": since}
    return {row[0]: row[1] for row in conn.execute(EVENTS_SINCE, params)}


def activity(conn, client_id, window_days=7) -> list[dict]:
    """Per type: the last event received within the window and the events of the last hour."""
    params = {"client": client_id, "days": window_days}
    return conn.cursor(row_factory=dict_row).execute(ACTIVITY, params).fetchall()


def quarantined_last_hour(conn, limit=10_000) -> list[dict]:
    """Quarantine rows received in the last hour: kind, and the content of event rows."""
    cursor = conn.cursor(row_factory=dict_row)
    return cursor.execute(QUARANTINED_LAST_HOUR, {"limit": limit}).fetchall()
