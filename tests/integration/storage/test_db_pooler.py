"""RECEIVER_DATABASE_POOLER=transaction on a real server: the pool sets nothing and prepares
nothing, and refuses connections until the role carries the session settings itself; what the
refusal logs is what mends it. Through a real PgBouncer: tests/system/storage/test_pgbouncer.py.
And a notice that only reads like the "not replicated" warning is not taken for it."""

import logging
import re
from dataclasses import replace

import pytest

from receiver.storage import db, deliveries

from support import admin_execute


@pytest.fixture
def open_pool():
    """Open pools made by `db.make_pool`; closed at the end."""
    pools = []

    def make(config):
        pool = db.make_pool(config)
        pool.open(wait=False)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close(timeout=2)


def settings_of(conn):
    return {
        name: conn.execute(f"SHOW {name}").fetchone()[0]
        for name in ("TimeZone", "statement_timeout", "idle_in_transaction_session_timeout")
    }


def test_a_role_without_the_settings_gets_no_connection_and_is_told_the_fix(
    config, open_pool, caplog
):
    pooled = replace(config, database_pooler="transaction", pool_timeout=0.5)
    caplog.set_level(logging.ERROR, logger="receiver.db")
    with pytest.raises(db.DatabaseUnavailable):
        db.run_on_connection(open_pool(pooled), lambda conn: conn.execute("SELECT 1"))
    (message,) = {r.getMessage() for r in caplog.records if r.name == "receiver.db"}
    assert "RECEIVER_DATABASE_POOLER=transaction" in message
    fixes = re.findall(r"ALTER ROLE [^;]+;", message)
    # TimeZone is not among them: the receiver sets it, and a pooler carries it (PgBouncer).
    assert {re.search(r"SET (\w+)", fix).group(1) for fix in fixes} == {
        "statement_timeout",
        "idle_in_transaction_session_timeout",
        "client_connection_check_interval",
    }
    for fix in fixes:  # what the log says to run is what makes it work
        admin_execute(config.database_url, fix)
    pool = open_pool(replace(pooled, pool_timeout=2))
    conn_settings = db.run_on_connection(pool, settings_of)
    assert conn_settings == {
        "TimeZone": "UTC",
        "statement_timeout": "5s",
        "idle_in_transaction_session_timeout": "1min",
    }


def test_behind_a_transaction_pooler_nothing_is_prepared_nor_set(config, open_pool):
    admin_execute(
        config.database_url,
        "DO $$ BEGIN EXECUTE format('ALTER ROLE CURRENT_USER IN DATABASE %I SET "
        "statement_timeout = 700', current_database()); END $$",
    )
    pooled = replace(config, database_pooler="transaction", statement_timeout_ms=700)
    with pytest.raises(db.DatabaseUnavailable):  # the other settings are still missing
        db.run_on_connection(open_pool(replace(pooled, pool_timeout=0.5)), lambda c: None)
    for name, value in db.session_settings(700).items():
        admin_execute(
            config.database_url,
            f"DO $$ BEGIN EXECUTE format('ALTER ROLE CURRENT_USER IN DATABASE %I SET {name} = "
            f"''{value}''', current_database()); END $$",
        )
    pool = open_pool(pooled)

    def work(conn):
        for _ in range(10):  # psycopg prepares a statement on its 5th run, unless told not to
            conn.execute("SELECT count(*) FROM events WHERE client_id = %s", (1,))
            deliveries.find_on(conn, b"\0" * 32)  # the receiver's own, through libpq
        prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]
        return conn.prepare_threshold, prepared, settings_of(conn)["statement_timeout"]

    assert db.run_on_connection(pool, work) == (None, 0, "700ms")


def test_a_warning_that_only_reads_like_the_unreplicated_one_is_not_taken_for_it(config, open_pool):
    pool = open_pool(config)
    words = db.UNREPLICATED + " due to user request"

    def work(conn):
        conn.execute(f"DO $$ BEGIN RAISE WARNING '{words}'; END $$")
        return "committed"

    # A PL/pgSQL function's warning (pl_exec.c), not the server's sync-rep wait (syncrep.c).
    assert db.run_on_connection(pool, work) == "committed"
