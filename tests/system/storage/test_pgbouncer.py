"""The receiver behind a real PgBouncer in transaction mode (RECEIVER_DATABASE_POOLER=
transaction, the role's settings set as deploy/pgbouncer/pgbouncer.ini says): many batches from
several threads over fewer server connections than clients are all answered 200 and stored once,
and the role's statement_timeout cancels a blocked statement through the pooler."""

import threading
import time

import psycopg
import pytest

from receiver.config import Config
from receiver.storage import db

from support import body, event, table_locked
from support.pgbouncer import PgBouncer

pytestmark = pytest.mark.slow

SERVER_CONNECTIONS = 2
STATEMENT_TIMEOUT_MS = 1000


@pytest.fixture
def pgbouncer(database_url):
    reason = PgBouncer.missing(database_url)
    if reason:
        pytest.skip(reason)
    bouncer = PgBouncer(database_url, pool_mode="transaction", pool_size=SERVER_CONNECTIONS)
    yield bouncer
    bouncer.stop()


def give_role_the_settings(database_url, statement_timeout_ms):
    """`ALTER ROLE ... IN DATABASE ... SET` each session setting PgBouncer cannot carry, as the
    docs/scaling.md says (here for the test database only: its settings go with it)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        role, database = conn.execute("SELECT current_user, current_database()").fetchone()
        for name, value in db.session_settings(statement_timeout_ms).items():
            if name in db.POOLER_TRACKED:
                continue
            statement = psycopg.sql.SQL("ALTER ROLE {} IN DATABASE {} SET {} = {}").format(
                psycopg.sql.Identifier(role),
                psycopg.sql.Identifier(database),
                psycopg.sql.Identifier(name),
                psycopg.sql.Literal(value),
            )
            conn.execute(statement)


@pytest.fixture
def receiver(pgbouncer, database_url, gunicorn_factory):
    give_role_the_settings(database_url, STATEMENT_TIMEOUT_MS)
    # Server sessions opened before keep what they had: the pooler opens new ones.
    pgbouncer.console("RECONNECT")
    return gunicorn_factory(
        {
            "DATABASE_URL": pgbouncer.url,
            "RECEIVER_DATABASE_POOLER": "transaction",
            "RECEIVER_STATEMENT_TIMEOUT_MS": str(STATEMENT_TIMEOUT_MS),
        },
        workers=2,
    )


def test_many_batches_through_pgbouncer_are_all_acknowledged_and_stored_once(
    receiver, pgbouncer, database_url
):
    threads, batches, per_batch = 8, 25, 10
    answers, lock = [], threading.Lock()

    def send(thread):
        for number in range(batches):
            ids = (f"pgb-{thread}-{number}-{n}" for n in range(per_batch))
            batch = body(*(event("open", id=event_id) for event_id in ids))
            # Each batch twice: the second is the sender's retry, all duplicates.
            for _ in range(2):
                answer = receiver.post(batch)
                with lock:
                    answers.append((answer.status_code, answer.json()))

    senders = [threading.Thread(target=send, args=(n,)) for n in range(threads)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    assert {status for status, _ in answers} == {200}, [a for a in answers if a[0] != 200][:3]
    expected = threads * batches * per_batch
    assert sum(summary["stored"] for _, summary in answers) == expected
    assert sum(summary["duplicates"] for _, summary in answers) == expected
    with psycopg.connect(database_url) as conn:
        rows, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT payload->>'id') FROM events"
        ).fetchone()
    assert (rows, distinct) == (expected, expected)
    # Transaction pooling was in play: the workers' connections (4 a worker, and the probes')
    # shared at most SERVER_CONNECTIONS server sessions, where a prepared statement or a SET
    # would not have followed them.
    (pool,) = [p for p in pgbouncer.show("POOLS") if p["database"] == pgbouncer.dbname]
    assert pool["pool_mode"] == "transaction"
    servers = [s for s in pgbouncer.show("SERVERS") if s["database"] == pgbouncer.dbname]
    clients = [c for c in pgbouncer.show("CLIENTS") if c["database"] == pgbouncer.dbname]
    assert len(servers) <= SERVER_CONNECTIONS < len(clients)


def test_every_transaction_through_pgbouncer_runs_with_the_settings(
    receiver, pgbouncer, database_url
):
    config = Config(
        database_url=pgbouncer.url,
        database_pooler="transaction",
        statement_timeout_ms=STATEMENT_TIMEOUT_MS,
        pool_max_size=4,
    )
    pool = db.make_pool(config)
    pool.open(wait=False)
    read = (
        "SELECT current_setting('TimeZone'), current_setting('statement_timeout'), "
        "current_setting('idle_in_transaction_session_timeout'), pg_backend_pid()"
    )
    seen, lock = [], threading.Lock()

    def reader():
        for _ in range(25):
            row = db.run_on_connection(pool, lambda conn: conn.execute(read).fetchone())
            with lock:
                seen.append(row)

    try:
        # Another client of the same pool moves its own TimeZone: PgBouncer sets each
        # client's again on the server session it lends, so the receiver's stay in UTC.
        with psycopg.connect(pgbouncer.url, autocommit=True, prepare_threshold=None) as other:
            other.execute("SET TimeZone = 'Asia/Tokyo'")
            readers = [threading.Thread(target=reader) for _ in range(4)]
            for thread in readers:
                thread.start()
            for _ in range(25):
                assert other.execute("SHOW TimeZone").fetchone()[0] == "Asia/Tokyo"
            for thread in readers:
                thread.join()
    finally:
        pool.close(timeout=2)
    # Readers (feeds, exports) rely on UTC; the request path on the timeouts.
    assert {row[:3] for row in seen} == {("UTC", "1s", "1min")}
    assert len(seen) == 100 and len({row[3] for row in seen}) <= SERVER_CONNECTIONS


def test_the_statement_timeout_cancels_a_blocked_batch_through_pgbouncer(receiver, database_url):
    batch = body(event("sent", id="pgb-locked"))
    with table_locked(database_url, "events"):
        started = time.monotonic()
        answer = receiver.post(batch)
        elapsed = time.monotonic() - started
    assert answer.status_code == 503
    assert answer.headers["Retry-After"]
    # The server cancelled it at the role's statement_timeout (1 s), well before the client's
    # deadline (5.5 s) would have cut the connection.
    assert elapsed < 3, elapsed
    with psycopg.connect(database_url) as conn:
        waiting = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"
        ).fetchone()[0]
    assert waiting == 0  # nothing left behind waiting for the lock
    again = receiver.post(batch)  # the sender's retry, once the lock is gone
    assert (again.status_code, again.json()["stored"]) == (200, 1)
