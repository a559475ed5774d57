"""The connection pool, and how database failures are classified.

Every failure ends up in one of two buckets, because they call for opposite answers:
- Transient (server down, connection lost, pool exhausted, statement timeout, deadlock, disk
  full): answer 503 and let the sender's retry, every 10 s for three days, be our buffer.
- Content (PostgreSQL refuses a value: classes 22 data exception, 23 integrity violation, 54
  program limit): retrying can never help, so the offending event goes to quarantine instead.
"""

import threading
import time

import psycopg
import psycopg_pool
from flask import current_app

CONTENT_ERROR_CLASSES = ("22", "23", "54")
# A failed attempt is tried once more on a fresh connection when a pooled connection turns out
# to be dead (the server restarted since it was opened): that costs milliseconds, where a 503
# costs the sender 10 seconds. Nothing is committed by a failed attempt, so repeating it is safe.
ATTEMPTS = 2


class DatabaseUnavailable(Exception):
    """The database cannot take the batch right now; the sender should retry."""


def is_content_error(error: BaseException) -> bool:
    """True for errors caused by the data itself, which a retry would only repeat."""
    sqlstate = getattr(error, "sqlstate", None) or ""
    return sqlstate[:2] in CONTENT_ERROR_CLASSES


def make_pool(config, name="receiver") -> psycopg_pool.ConnectionPool:
    """A closed pool for one process; open it after the fork (see `get_pool`)."""
    return psycopg_pool.ConnectionPool(
        config.database_url,
        min_size=config.pool_min_size,
        max_size=config.pool_max_size,
        # Waiting longer than this for a connection means the database is away or overloaded:
        # better a quick 503 than a hang past the sender's ~10 s timeout.
        timeout=config.pool_timeout,
        max_waiting=config.pool_max_size * 4,
        # Keep retrying the server forever in the background: it will come back.
        reconnect_timeout=float("inf"),
        open=False,
        name=name,
        # Autocommit: a batch's single INSERT is its own transaction (see storage.store_batch);
        # multi-statement work opens one explicitly with conn.transaction().
        kwargs={"connect_timeout": 2, "application_name": "receiver", "autocommit": True},
        configure=_session_settings(config.statement_timeout_ms),
    )


def _session_settings(statement_timeout_ms):
    def configure(conn):
        # A statement that runs longer than this is cancelled and the request answers 503.
        conn.execute(f"SET statement_timeout = {int(statement_timeout_ms)}")
        conn.execute("SET idle_in_transaction_session_timeout = 60000")

    return configure


def init_app(app, config):
    """Attach a pool that is opened lazily, so each gunicorn worker opens its own after fork."""
    app.extensions["receiver.pool"] = make_pool(config)
    app.extensions["receiver.pool_lock"] = threading.Lock()


def get_pool(app=None) -> psycopg_pool.ConnectionPool:
    """The app's pool, opened on first use in this process."""
    app = app or current_app
    pool = app.extensions["receiver.pool"]
    if pool.closed:
        with app.extensions["receiver.pool_lock"]:
            if pool.closed:
                pool.open(wait=False)
    return pool


def close_pool(app):
    """Close this process's pool (gunicorn's worker_exit hook)."""
    app.extensions["receiver.pool"].close(timeout=2)


def connect(url, application_name, lock_timeout_ms=None) -> psycopg.Connection:
    """A connection of its own for a command (not the request path), in autocommit.

    Autocommit, so that every `conn.transaction()` is a transaction of its own: without it the
    first statement opens an implicit transaction and each block is only a savepoint."""
    conn = psycopg.connect(
        url, autocommit=True, connect_timeout=5, application_name=application_name
    )
    if lock_timeout_ms is not None:
        conn.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")
    return conn


def run_on_connection(pool, work, deadline_seconds=8.0):
    """Run `work(conn)` on an autocommit connection; return its result. `work` makes its
    writes atomic: one statement, or `with conn.transaction()`.

    Raises DatabaseUnavailable for transient trouble. Content errors escape `work` only when it
    chose not to handle them, and are raised as they are (a bug, not the sender's problem)."""
    deadline = time.monotonic() + deadline_seconds
    for attempt in range(ATTEMPTS):
        try:
            with pool.connection() as conn:
                return work(conn)
        except psycopg_pool.PoolTimeout as error:
            raise DatabaseUnavailable(f"no database connection: {error}") from error
        except psycopg.Error as error:
            if is_content_error(error):
                raise
            retry = attempt + 1 < ATTEMPTS and time.monotonic() < deadline
            if not retry or not _worth_retrying(error):
                raise DatabaseUnavailable(f"{type(error).__name__}: {error}") from error
    raise AssertionError("unreachable")


def _worth_retrying(error) -> bool:
    """A dead connection or a deadlock (both OperationalError) may go away on the next try;
    a statement timeout would only time out again."""
    if isinstance(error, psycopg.errors.QueryCanceled):
        return False
    return isinstance(error, psycopg.OperationalError)
