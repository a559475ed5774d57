"""The client-side deadline on a real connection, and a read-only server (SQLSTATE 25006)."""

import time
from dataclasses import replace

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from receiver.storage import db

from support import admin_execute, body, event, post, table_locked, wait_until


@pytest.fixture
def slow_pool(config):
    """A pool whose deadline (0.5 s) comes long before the server's statement_timeout."""
    pool = db.make_pool(replace(config, statement_timeout_ms=60_000, database_deadline_ms=500))
    pool.open(wait=True)
    yield pool
    pool.close()


def backend_pid(pool):
    return db.run_on_connection(pool, lambda conn: conn.info.backend_pid)


def test_a_call_past_its_deadline_is_cut_and_its_connection_discarded(slow_pool):
    before = backend_pid(slow_pool)
    started = time.monotonic()
    with pytest.raises(db.DeadlineExceeded):
        # The pool's only idle connection: the one `before` came from.
        db.run_on_connection(slow_pool, lambda conn: conn.execute("SELECT pg_sleep(5)"))
    assert time.monotonic() - started < 1.5
    assert backend_pid(slow_pool) != before  # the cut connection was never handed out again


def test_a_connection_cut_while_its_work_was_busy_elsewhere_is_discarded(slow_pool):
    """The deadline passed while `work` did something else than wait on the database, and it
    then failed with an error of its own: the cut connection went back to the pool, and the
    next request was handed a dead socket."""

    def busy_then_failing(conn):
        conn.execute("SELECT 1")
        time.sleep(0.8)  # past the pool's 0.5 s deadline: the watchdog cuts the socket
        raise RuntimeError("not a database error")

    with pytest.raises(RuntimeError):
        db.run_on_connection(slow_pool, busy_then_failing)
    with slow_pool.connection(timeout=2) as conn:  # straight from the pool, no retry
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_call_within_its_deadline_keeps_its_connection(slow_pool):
    before = backend_pid(slow_pool)
    assert db.run_on_connection(slow_pool, lambda conn: conn.execute("SELECT 1").fetchone()) == (1,)
    assert backend_pid(slow_pool) == before


@pytest.fixture
def read_only_database(database_url):
    """The test database made read-only for new sessions, as a standby or demoted primary is."""
    name = conninfo_to_dict(database_url)["dbname"]
    admin_execute(database_url, f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    return database_url


def test_a_read_only_server_is_a_503_never_stored_nor_quarantined(read_only_database, make_client):
    client = make_client(pool_timeout=0.3)
    valid = post(client, body(event(id="ro-1")))
    broken = post(client, b"{not json")
    assert (valid.status_code, broken.status_code) == (503, 503)
    assert valid.headers["Retry-After"] == "10"


def test_a_statement_cut_while_waiting_for_a_lock_does_not_stay_behind(slow_pool, database_url):
    """A call cut by the deadline (a request's last call often gets less than statement_timeout)
    left its statement waiting for the lock on the server, orphaned, until the lock went."""
    with table_locked(database_url, "events"):
        pids = []

        def wait_for_the_lock(conn):
            pids.append(conn.info.backend_pid)
            conn.execute("SELECT count(*) FROM events")

        with pytest.raises(db.DeadlineExceeded):
            db.run_on_connection(slow_pool, wait_for_the_lock)

        def gone():
            with psycopg.connect(database_url) as conn:
                query = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
                return conn.execute(query, (pids[0],)).fetchone()[0] == 0

        wait_until(gone, timeout=5)  # while the lock is still held
