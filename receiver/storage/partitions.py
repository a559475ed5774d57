"""The monthly partitions of `events` (migration 003): listing, creating, splitting, dropping.

`events` is partitioned by RANGE of `created_at`, one partition a month (`events_2026_12` holds
December 2026, UTC), plus `events_default` for any time without a partition of its own, so that
a valid event is stored whatever its `created` (year 1 to 9999) and never refused.

Every DDL statement here runs with a short lock_timeout and is retried: ATTACH and DETACH need
locks that wait for in-flight batches, and a waiting DDL makes new batches queue behind it, so a
long wait would stall ingest. A short one costs a batch a few hundred milliseconds at most.
"""

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from . import db

DEFAULT_PARTITION = "events_default"
# Held (session-level) by whoever changes the partitions: migrate, maintain, a web worker's
# background check. "receiver" in ASCII plus one, distinct from the migrations' own lock.
PARTITIONS_LOCK_ID = 0x7265636569766573
# Partitions are kept ready for this many months after the current one: a web worker, `receiver
# migrate` and `receiver maintain` each make sure of it, so the month after next exists weeks
# before its first event, even if one of them is not run for a while.
MONTHS_AHEAD = 3
LOCK_TIMEOUT_MS = 300
LOCK_ATTEMPTS = 20

LIST_PARTITIONS = """
SELECT c.relname,
       pg_get_expr(c.relpartbound, c.oid) AS bound,
       pg_total_relation_size(c.oid) AS bytes,
       pg_indexes_size(c.oid) AS index_bytes,
       coalesce(s.n_live_tup, greatest(c.reltuples, 0))::bigint AS estimated_rows
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
-- The statistics' live row count, kept current by every insert and delete: reltuples is -1
-- until the first VACUUM or ANALYZE, and a month filled since showed 0 rows.
LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
WHERE i.inhparent = 'events'::regclass
ORDER BY c.relname
"""

# Monthly tables that are not partitions (table_state tells whose they are).
DETACHED_LEFTOVERS = """
SELECT c.relname FROM pg_class c
WHERE c.relkind = 'r' AND c.relname ~ '^events_[0-9]{4}_[0-9]{2}$' AND NOT c.relispartition
  AND c.relnamespace = 'public'::regnamespace
"""

# The months that have rows in the default partition (a loose scan would need an index; the
# default partition holds only stray events, so a plain scan is cheap).
DEFAULT_MONTHS = """
SELECT date_trunc('month', created_at AT TIME ZONE 'UTC') AS month, count(*)
FROM events_default GROUP BY 1 ORDER BY 1
"""

OLD_TABLE_EXISTS = "SELECT to_regclass('events_unpartitioned') IS NOT NULL"

# Rows of the pre-003 table (migration 001's columns) move in batches, each batch its own
# transaction: an interruption loses nothing (a row is deleted by the statement that inserts it)
# and the next run resumes. ON CONFLICT: an event re-delivered since the switch is already in.
MOVE_OLD_ROWS = """
WITH moved AS (
    DELETE FROM events_unpartitioned
    WHERE ctid = ANY (ARRAY(SELECT ctid FROM events_unpartitioned LIMIT %(batch)s))
    RETURNING event_key, event_id, client_id, type, created_at, received_at, mailing_id,
              user_list_id, subscription_id, recipient_id, mail_id, media_type, category,
              reason, threshold_exceeded, link, device, operating_system, browser,
              remote_address, payload
)
INSERT INTO events (event_key, event_id, client_id, type, created_at, received_at, mailing_id,
                    user_list_id, subscription_id, recipient_id, mail_id, media_type, category,
                    reason, threshold_exceeded, link, device, operating_system, browser,
                    remote_address, payload)
SELECT * FROM moved
ON CONFLICT (client_id, type, created_at, event_key) DO NOTHING
"""

# The months present in the old table, found with its created_at index one month at a time.
OLD_TABLE_MONTHS = """
WITH RECURSIVE months(month) AS (
    SELECT date_trunc('month', min(created_at) AT TIME ZONE 'UTC') FROM events_unpartitioned
    UNION ALL
    SELECT (SELECT date_trunc('month', min(created_at) AT TIME ZONE 'UTC')
            FROM events_unpartitioned
            WHERE created_at >= ((month + interval '1 month') AT TIME ZONE 'UTC'))
    FROM months WHERE month IS NOT NULL
)
SELECT month FROM months WHERE month IS NOT NULL
"""


@dataclass(frozen=True)
class Partition:
    name: str
    bound: str
    bytes: int
    index_bytes: int
    estimated_rows: int

    @property
    def month(self) -> datetime | None:
        """The month this partition holds (None for the default partition)."""
        return month_of_name(self.name)


def month_start(moment: datetime) -> datetime:
    """The first instant (UTC) of the month of `moment`."""
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def add_months(month: datetime, count: int) -> datetime:
    """`month` (a month start) moved by `count` months."""
    index = month.year * 12 + month.month - 1 + count
    return month.replace(year=index // 12, month=index % 12 + 1)


def partition_name(month: datetime) -> str:
    return f"events_{month.year:04d}_{month.month:02d}"


def month_of_name(name: str) -> datetime | None:
    try:
        _, year, month = name.split("_")
        return datetime(int(year), int(month), 1, tzinfo=UTC)
    except ValueError:
        return None


def list_partitions(conn) -> list[Partition]:
    """Every partition of `events`, the default one included, with its size."""
    return [Partition(*row) for row in conn.execute(LIST_PARTITIONS)]


def monthly_partitions(conn) -> dict[datetime, Partition]:
    return {p.month: p for p in list_partitions(conn) if p.month is not None}


def create_month(conn, month: datetime) -> bool:
    """Create the partition of `month` unless it exists, moving its rows out of the default
    partition; True if it was created. The caller's connection must be in autocommit.

    Two short transactions. The first makes the table ready to attach: the events columns,
    indexes and a CHECK of the month's range (which spares ATTACH a scan of it), marked as ours
    so that an interrupted run is recognised and redone. The second blocks new rows into the
    default partition (SHARE ROW EXCLUSIVE: reads and every other month go on), moves the
    month's rows over and attaches: no row of the month can reach the default partition
    between the move and the ATTACH's check of it, which would make ATTACH fail."""
    name = partition_name(month)
    if table_state(conn, name) == PARTITION:
        return False
    bounds = (month.isoformat(), add_months(month, 1).isoformat())
    if not with_lock_retries(conn, lambda conn: prepare_table(conn, name, bounds)):
        return False
    return with_lock_retries(conn, lambda conn: move_and_attach(conn, name, bounds))


# What a monthly table is: a partition, our own table not attached yet, or someone else's (an
# operator's detached archive, say), which the receiver never touches.
PARTITION, BEING_CREATED, DETACHED_BY_PRUNE, FOREIGN = (
    "partition",
    "being created",
    "detached by prune",
    "foreign",
)
# The comments that mark a monthly table as the receiver's own while it is not a partition.
MARKS = {
    BEING_CREATED: "receiver: partition being created",
    DETACHED_BY_PRUNE: "receiver: detached by prune, to be dropped",
}
TABLE_STATE = """
SELECT c.relispartition, obj_description(c.oid, 'pg_class')
FROM pg_class c
WHERE c.oid = to_regclass(%s)
"""


def table_state(conn, name: str) -> str | None:
    """PARTITION, BEING_CREATED, DETACHED_BY_PRUNE or FOREIGN; None if there is no such table."""
    row = conn.execute(TABLE_STATE, (name,)).fetchone()
    if row is None:
        return None
    attached, comment = row
    if attached:
        return PARTITION
    return next((state for state, mark in MARKS.items() if mark == comment), FOREIGN)


def mark(conn, name: str, state: str) -> None:
    """Comment the table as the receiver's own, in `state`."""
    conn.execute(
        sql.SQL("COMMENT ON TABLE {} IS {}").format(sql.Identifier(name), sql.Literal(MARKS[state]))
    )


def prepare_table(conn, name, bounds) -> bool:
    """The first transaction of create_month: the table, empty, indexed, checked, marked;
    False if the month needs no table (a partition, or someone else's table of that name)."""
    # Two processes creating the same month take turns; the second finds it made.
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITIONS_LOCK_ID,))
    state = table_state(conn, name)
    if state in (PARTITION, FOREIGN):
        return False
    table = sql.Identifier(name)
    if state is not None:  # ours, left by an interrupted run: made again from scratch
        conn.execute(sql.SQL("DROP TABLE {}").format(table))
    # A plain table, attached later: ATTACH takes a lock that lets batches go on into the other
    # partitions, where CREATE TABLE ... PARTITION OF would block all of them. Its indexes are
    # made now, while it is empty, so that ATTACH adopts them instead of building them under
    # its lock.
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
            "INCLUDING INDEXES)"
        ).format(table)
    )
    check = "ALTER TABLE {} ADD CONSTRAINT {} CHECK (created_at >= {} AND created_at < {})"
    conn.execute(
        sql.SQL(check).format(table, sql.Identifier(f"{name}_range"), *map(sql.Literal, bounds))
    )
    mark(conn, name, BEING_CREATED)
    return True


# The longest ATTACH may take. It reads the default partition under an exclusive lock, which
# holds up every reader of `events` that cannot skip that partition: past this the step fails,
# says so, and the rows stay where they are, safe; the next pass tries again. (The move before
# it only holds up batches bound for the default partition; it runs under the connection's own
# statement timeout, so a big stray month is split however long that takes.)
ATTACH_STATEMENT_TIMEOUT_MS = 5000


def move_and_attach(conn, name, bounds) -> bool:
    """The second transaction of create_month: rows moved and the table attached."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITIONS_LOCK_ID,))
    if table_state(conn, name) != BEING_CREATED:
        return False  # another process attached it meanwhile
    table, default = sql.Identifier(name), sql.Identifier(DEFAULT_PARTITION)
    lower, upper = map(sql.Literal, bounds)
    # Before the move: a batch that would put a row of this month into the default partition
    # now waits for our commit. PostgreSQL then refuses its row there (it was routed by the
    # partitions it saw before), and the receiver tries the batch again at once, into the new
    # partition (db.is_routing_race); a wait past the request's deadline is a 503, retried.
    conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(default))
    conn.execute(
        sql.SQL(
            "WITH moved AS (DELETE FROM {} WHERE created_at >= {} AND created_at < {} "
            "RETURNING *) INSERT INTO {} SELECT * FROM moved"
        ).format(default, lower, upper, table)
    )
    conn.execute(
        "SELECT set_config('statement_timeout', %s, true)", (f"{ATTACH_STATEMENT_TIMEOUT_MS}ms",)
    )
    conn.execute(
        sql.SQL("ALTER TABLE events ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
            table, lower, upper
        )
    )
    conn.execute(
        sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(table, sql.Identifier(f"{name}_range"))
    )
    conn.execute(sql.SQL("COMMENT ON TABLE {} IS NULL").format(table))
    return True


def drop_month(conn, name: str) -> None:
    """Detach a monthly partition (short lock, retried) and drop it. The detached table is
    marked in the same transaction, so that a prune interrupted before the DROP finishes it
    next time, and never takes a table someone else detached."""
    table = sql.Identifier(name)

    def detach(conn):
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITIONS_LOCK_ID,))
        if table_state(conn, name) == PARTITION:
            conn.execute(sql.SQL("ALTER TABLE events DETACH PARTITION {}").format(table))
            mark(conn, name, DETACHED_BY_PRUNE)

    def drop(conn):
        # The mark checked and the table dropped under the partitions' lock: a create_month
        # of the same month (a worker's upkeep) cannot swap a new partition in between.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITIONS_LOCK_ID,))
        if table_state(conn, name) == DETACHED_BY_PRUNE:
            # Detached, the table is nobody's: dropping it waits for no batch.
            conn.execute(sql.SQL("DROP TABLE {}").format(table))

    with_lock_retries(conn, detach)
    with_lock_retries(conn, drop)


def detached_leftovers(conn) -> list[str]:
    """Monthly tables a prune detached and was interrupted before dropping."""
    names = [row[0] for row in conn.execute(DETACHED_LEFTOVERS)]
    return [name for name in names if table_state(conn, name) == DETACHED_BY_PRUNE]


def default_months(conn) -> list[tuple[datetime, int]]:
    """(month, rows) with rows in the default partition."""
    return [(m.replace(tzinfo=UTC), n) for m, n in conn.execute(DEFAULT_MONTHS)]


def delete_default_before(conn, horizon: datetime, batch=10_000) -> int:
    """Delete rows created before `horizon` from the default partition, in batches."""
    statement = sql.SQL(
        "DELETE FROM {0} WHERE ctid = ANY (ARRAY(SELECT ctid FROM {0} WHERE created_at < %s "
        "LIMIT %s))"
    ).format(sql.Identifier(DEFAULT_PARTITION))
    return db.delete_in_batches(conn, statement, horizon, batch)


def count_default_before(conn, horizon: datetime) -> int:
    """The rows delete_default_before(horizon) would delete."""
    statement = sql.SQL("SELECT count(*) FROM {} WHERE created_at < %s").format(
        sql.Identifier(DEFAULT_PARTITION)
    )
    return conn.execute(statement, (horizon,)).fetchone()[0]


def old_table_exists(conn) -> bool:
    return conn.execute(OLD_TABLE_EXISTS).fetchone()[0]


def old_table_months(conn) -> list[datetime]:
    return [m.replace(tzinfo=UTC) for (m,) in conn.execute(OLD_TABLE_MONTHS)]


def move_old_rows(conn, batch=20_000) -> int:
    """Move one batch of the pre-003 table into `events`; the number of rows moved."""
    return conn.execute(MOVE_OLD_ROWS, {"batch": batch}).rowcount


def drop_old_table(conn) -> None:
    conn.execute("DROP TABLE IF EXISTS events_unpartitioned")


def ensure_months(conn, now: datetime | None = None, months_ahead=MONTHS_AHEAD) -> list[str]:
    """Create the partitions of the previous, current and coming months; the names created."""
    current = month_start(now or datetime.now(UTC))
    created = []
    for offset in range(-1, months_ahead + 1):
        month = add_months(current, offset)
        if create_month(conn, month):
            created.append(partition_name(month))
    return created


def move_old_table(conn, batch=20_000, progress=None) -> int:
    """Move every row of the pre-003 table into its month's partition, then drop the table.

    Resumable: run again after an interruption and it goes on where it stopped. Two processes
    running it at once (two hosts' release steps) take turns."""
    if not old_table_exists(conn):
        return 0
    conn.execute("SELECT pg_advisory_lock(%s)", (PARTITIONS_LOCK_ID,))
    try:
        if not old_table_exists(conn):  # the other process finished it
            return 0
        for month in old_table_months(conn):
            create_month(conn, month)
        total = 0
        while moved := move_old_rows(conn, batch):
            total += moved
            if progress:
                progress(total)
        drop_old_table(conn)
        return total
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (PARTITIONS_LOCK_ID,))


def with_lock_retries(conn, work, attempts=None, lock_timeout_ms=LOCK_TIMEOUT_MS):
    """Run `work(conn)` in a transaction with a short lock_timeout, retried on lock timeouts
    (LOCK_ATTEMPTS times unless `attempts` says otherwise)."""
    attempts = attempts or LOCK_ATTEMPTS
    for attempt in range(attempts):
        try:
            with conn.transaction():
                conn.execute(
                    "SELECT set_config('lock_timeout', %s, true)", (f"{lock_timeout_ms}ms",)
                )
                return work(conn)
        except psycopg.errors.LockNotAvailable:
            if attempt + 1 == attempts:
                raise
            # Back off a little more each time: the batches holding the lock finish in ms.
            time.sleep(min(0.05 * (attempt + 1), 1.0))
    raise AssertionError("unreachable")
