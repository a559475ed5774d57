"""The backfill of `recipient_status` (migrations/004): every status decided by events stored
before the table existed, filled in by `receiver migrate` after the migrations' transaction.

It reads the events a few thousand blocks at a time, each range its own short transaction, and
upserts each recipient's winner with the batch insert's own steps (receiver.storage.events):
the rule "the latest status-changing event by created_at wins" is a maximum, so ranges read in
any order, interleaved with live batches, end at the same statuses as one pass would. Locks
are taken in (client_id, recipient_id) order, as the batches take them: no deadlock.

Rows only ever move one way: out of the unpartitioned table (003), out of the default partition
into a new month's. So those two are read first, in that order: a row that moves after its
table was read was read there already, and one that moves before is read where it lands.
Progress is kept in `recipient_status_backfill`, so an interruption resumes.
"""

from psycopg import sql

from .events import RECIPIENT_STATUS_STEPS
from .partitions import DEFAULT_PARTITION

# About 16 MB of events a transaction (8 kB blocks): well under a second.
BLOCKS = 2000
PLACE = "SELECT relation, next_block FROM recipient_status_backfill FOR UPDATE"
RELATIONS = """
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'events'::regclass
UNION ALL
SELECT relname FROM pg_class WHERE oid = to_regclass('events_unpartitioned')
"""
BLOCK_COUNT = "SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::bigint"
# One range of one table through the batch insert's status steps (`stored` is what they read).
# (RECIPIENT_STATUS_STEPS is a constant of ours; the table name goes in through sql.Identifier.)
UPSERT_RANGE = "".join(
    [
        "WITH stored AS (SELECT type, client_id, recipient_id, created_at, received_at, ",
        "mailing_id, event_key, category, threshold_exceeded FROM {} ",
        "WHERE ctid >= %s::tid AND ctid < %s::tid)",
        RECIPIENT_STATUS_STEPS,
        " SELECT count(*) FROM decided",
    ]
)


def backfill(conn, blocks=BLOCKS, ranges=None) -> int:
    """Run the backfill to its end (or for `ranges` ranges), resuming where an earlier run
    stopped; the recipients decided. `conn` in autocommit. Nothing to do once it is done."""
    exists = conn.execute("SELECT to_regclass('recipient_status_backfill') IS NOT NULL")
    if not exists.fetchone()[0]:
        return 0
    decided = done = 0
    while ranges is None or done < ranges:
        with conn.transaction():
            place = conn.execute(PLACE).fetchone()  # two migrates at once take turns
            if place is None:
                return decided
            step = next_range(conn, *place, blocks)
            if step is None:
                conn.execute("DELETE FROM recipient_status_backfill")
                return decided
            relation, first = step
            decided += upsert_range(conn, relation, first, first + blocks)
            conn.execute(
                "UPDATE recipient_status_backfill SET relation = %s, next_block = %s",
                (relation, first + blocks),
            )
        done += 1
    return decided


def next_range(conn, relation, block, blocks) -> tuple[str, int] | None:
    """(table, first block) of the next range to read after `relation` at `block`; None when
    every table is read. Tables dropped meanwhile (retention) are simply passed."""
    order = reading_order(conn)
    if relation is not None and relation in order:
        if block < block_count(conn, relation):
            return relation, block
        order = order[order.index(relation) + 1 :]
    elif relation is not None:
        order = [name for name in order if sort_key(name) > sort_key(relation)]
    for name in order:
        if block_count(conn, name) > 0:
            return name, 0
    return None


def reading_order(conn) -> list[str]:
    """The tables holding events, in the order the backfill reads them."""
    return sorted((row[0] for row in conn.execute(RELATIONS)), key=sort_key)


def sort_key(name: str) -> tuple:
    """The unpartitioned table first, then the default partition, then months by name."""
    return (name != "events_unpartitioned", name != DEFAULT_PARTITION, name)


def block_count(conn, relation: str) -> int:
    return conn.execute(BLOCK_COUNT, (relation,)).fetchone()[0]


def upsert_range(conn, relation, first, end) -> int:
    """Decide the statuses the events in blocks [first, end) of `relation` carry."""
    statement = sql.SQL(UPSERT_RANGE).format(sql.Identifier(relation))
    return conn.execute(statement, (f"({first},0)", f"({end},0)")).fetchone()[0]
