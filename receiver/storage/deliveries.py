"""Re-deliveries recognised by the body's digest, before parsing and validation.

Every sender retry after a lost 200 is a whole batch again. When a body with the same digest
was committed whole before (every event stored as an event, by the statement that wrote the
`deliveries` row: receiver.storage.events), its events are all in `events` already, so the
re-delivery is answered 200 as all duplicates for one index lookup instead of a validation and
an insert. A batch with quarantined events is never recorded here: its re-delivery takes the
full path, which also counts it in the quarantine (times_received).
"""

import hashlib
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import orjson

from . import db

# Longer than Campaign's three days of retries, so a retry always finds its row; shorter than
# the minimum retention of events (receiver.maintenance.retention), so a row never outlives
# the events it vouches for.
LIFETIME = timedelta(days=4)
FIND = "SELECT events, counts FROM deliveries WHERE digest = %s"
DELETE_BEFORE = """
DELETE FROM deliveries WHERE digest = ANY (ARRAY(
    SELECT digest FROM deliveries WHERE received_at < %s LIMIT %s))
"""


class Delivery(NamedTuple):
    """A batch committed whole before: how many events, and how many of each type label."""

    events: int
    counts: dict


def digest(body: bytes) -> bytes:
    """SHA-256 of the body as received: OpenSSL's, with the CPU's SHA instructions where it
    has them, takes less time than Python's BLAKE2b (docs/benchmarks-history.md: #13, fourth
    session). Rows written with BLAKE2b before (migration 007's comment) simply match nothing: those
    re-deliveries take the full path and are answered as duplicates all the same."""
    return hashlib.sha256(body).digest()


def find(pool, body_digest: bytes, deadline=None) -> Delivery | None:
    """The earlier delivery of this body, if it was committed whole; DatabaseUnavailable as
    every other database call of the request (`deadline`: the request's)."""
    return db.run_on_connection(pool, lambda conn: find_on(conn, body_digest), deadline=deadline)


def find_on(conn, body_digest: bytes) -> Delivery | None:
    """`find` on a connection the caller holds (through libpq: db.run_prepared)."""
    result = db.run_prepared(conn, FIND, [body_digest], (db.BYTEA,))
    if not result.ntuples:
        return None
    return Delivery(int(result.get_value(0, 0)), orjson.loads(result.get_value(0, 1)))


def count(conn) -> int:
    """The digests kept."""
    return conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]


def delete_before(conn, horizon=None, batch=10_000) -> int:
    """Delete the rows older than `horizon` (default: LIFETIME ago), in batches."""
    horizon = horizon or datetime.now(UTC) - LIFETIME
    return db.delete_in_batches(conn, DELETE_BEFORE, horizon, batch)
