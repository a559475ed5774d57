"""The connection pool, the deadline on every database call, and how failures are classified.

Every failure ends up in one of two buckets, because they call for opposite answers:
- Transient (server down, silent or read-only, connection lost, pool exhausted, statement
  timeout, deadline missed, deadlock, disk full): answer 503 and let the sender's retry, every
  10 s for three days, be our buffer.
- Content (PostgreSQL refuses a value: classes 22 data exception, 23 integrity violation, 54
  program limit): retrying can never help, so the offending event goes to quarantine instead.

A server that stops answering without closing its connections (stalled disk, frozen VM, dead
network path) is the one failure PostgreSQL's own statement_timeout cannot catch: the server is
the silent part. So every call on the request path runs under a client-side deadline kept by the
watchdog (receiver.watchdog), which cuts the connection's socket when the deadline passes; the
blocked read returns, psycopg raises, and the connection is discarded, never handed out again.
That deadline is the call's own bound or what is left of the request's (receiver.deadline),
whichever ends first.
"""

import hashlib
import logging
import re
import threading
import time
import weakref
from contextlib import contextmanager

import psycopg
import psycopg.sql
import psycopg_pool
from flask import current_app
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import ExecStatus
from psycopg_pool.base import AttemptWithBackoff

from ..config import Config
from ..watchdog import WATCHDOG

logger = logging.getLogger("receiver.db")

CONTENT_ERROR_CLASSES = ("22", "23", "54")
# A failed attempt is tried once more on a fresh connection when a pooled connection turns out
# to be dead (the server restarted since it was opened) or on a server that is no longer the
# primary: that costs milliseconds, where a 503 costs the sender 10 seconds. Nothing is
# committed by a failed attempt, so repeating it is safe.
ATTEMPTS = 2
# SQLSTATE 25006: the server is read-only (a standby, or a primary demoted by a failover). The
# connection is discarded so that the pool reconnects, and target_session_attrs=read-write in
# DATABASE_URL finds the new primary.
READ_ONLY = "25006"
# libpq parameters the receiver sets unless DATABASE_URL sets them itself. Keepalives notice a
# dead path under an idle pooled connection in about 10 + 3 x 3 s instead of the kernel's two
# hours; tcp_user_timeout drops a connection whose sent data is not acknowledged for 9 s (a
# dead path under a busy one). Both only apply to TCP; a Unix socket ignores them.
TCP_DEFAULTS = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
    "tcp_user_timeout": 9000,
}


# client_connection_check_interval exists from PostgreSQL 14 on.
CLIENT_CHECK_SINCE = 140000

# Times read back (the feeds, exports, reports) in UTC whatever the server's TimeZone: every
# time the receiver accepts (years 1 to 9999 UTC) then fits Python's datetime, where in another
# zone an event of 9999-12-31 would overflow it and stop every reader at that row.
UTC_SESSION = "SET TimeZone = 'UTC'"


# RECEIVER_DATABASE_DEADLINE_MS's default, for a pool that was not made by `make_pool`.
DEFAULT_DEADLINE_SECONDS = Config.database_deadline_ms / 1000


class DatabaseUnavailable(Exception):
    """The database cannot take the batch right now; the sender should retry."""


def is_content_error(error: BaseException) -> bool:
    """True for errors caused by the data itself, which a retry would only repeat."""
    sqlstate = getattr(error, "sqlstate", None) or ""
    return sqlstate[:2] in CONTENT_ERROR_CLASSES and not is_routing_race(error)


# SQLSTATE 23514 without a constraint's name: a row refused by a partition's own bound, not by a
# CHECK of ours (every one has a name). It happens when `receiver maintain` attaches a month
# while a batch routed one of its rows to events_default by the partitions it saw before: the
# row is fine, the next attempt routes it to the new partition. Transient, never quarantined.
CHECK_VIOLATION = "23514"


def is_routing_race(error: BaseException) -> bool:
    """True for a row refused by a partition bound that changed under the statement."""
    diag = getattr(error, "diag", None)
    return (
        getattr(error, "sqlstate", None) == CHECK_VIOLATION
        and diag is not None
        and diag.constraint_name is None
    )


class DeadlineExceeded(DatabaseUnavailable):
    """The database did not answer within the deadline; the connection was cut."""


def call_with_deadline(conn, seconds, work):
    """`work(conn)` under a deadline; raise DeadlineExceeded if the watchdog had to cut it.

    A connection the watchdog cut is closed whatever `work` did, so that the pool discards it
    and nobody is handed its shut socket; a call that completed before the cut keeps its result
    (a commit that returned is a commit)."""
    alarm = WATCHDOG.arm(conn, seconds)
    try:
        result = work(conn)
    except BaseException as error:
        if WATCHDOG.disarm(alarm):
            conn.close()
            if isinstance(error, psycopg.Error):
                raise DeadlineExceeded(
                    f"no answer from the database within {seconds:.1f} s"
                ) from error
        raise
    if WATCHDOG.disarm(alarm):
        conn.close()
    return result


def connection_kwargs(config) -> dict:
    """libpq parameters for the pool: the receiver's defaults where DATABASE_URL sets none."""
    given = conninfo_to_dict(config.database_url)
    defaults = {**TCP_DEFAULTS, "connect_timeout": config.connect_timeout}
    kwargs = {key: value for key, value in defaults.items() if key not in given}
    return {**kwargs, "application_name": given.get("application_name", "receiver")}


class CappedBackoff(AttemptWithBackoff):
    """psycopg_pool's reconnection backoff, doubling from 1 s but never beyond MAX_DELAY.

    Uncapped, with reconnect_timeout=inf, a 60 s outage put the next attempt 30 s and more
    away: the database was back and the receiver still answered 503 for 13 s."""

    MAX_DELAY = 2.0

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, self.MAX_DELAY)


class ReceiverPool(psycopg_pool.ConnectionPool):
    """A pool that knows the request path's budget: how long to wait for a connection and for
    the database to answer (`run_on_connection` applies both); it reconnects with a capped
    backoff, so that ingest resumes within seconds of the database's return."""

    def __init__(self, *args, deadline_seconds, **kwargs):
        self.deadline_seconds = deadline_seconds
        super().__init__(*args, **kwargs)

    def _add_connection(self, attempt, growing=False):
        """psycopg_pool's own (a private method: tests/unit/storage/test_db_options.py checks
        it is still there), started with the capped backoff."""
        if attempt is None:
            attempt = CappedBackoff(timeout=self.reconnect_timeout)
        return super()._add_connection(attempt, growing=growing)


def make_pool(config, name="receiver", size=None) -> ReceiverPool:
    """A closed pool for one process; open it after the fork (see `get_pool`). `size`: at
    most that many connections, opened only when needed (else the configured sizes)."""
    deadline = config.database_deadline_ms / 1000
    min_size, max_size = (0, size) if size else (config.pool_min_size, config.pool_max_size)
    # Autocommit: a batch's single INSERT is its own transaction (see events.store_batch);
    # multi-statement work opens one explicitly with conn.transaction().
    kwargs = {**connection_kwargs(config), "autocommit": True}
    settings = session_settings(config.statement_timeout_ms)
    if config.database_pooler == "transaction":
        # A statement psycopg prepares lives in one server session; the pooler runs the next
        # transaction on whichever it likes, where it does not exist (SQLSTATE 26000, and a
        # 503 on every retry). PgBouncer before 1.21 cannot carry them across.
        kwargs["prepare_threshold"] = None
        configure = _check_role_settings(settings, deadline)
    else:
        configure = _set_session(settings, deadline)
    return ReceiverPool(
        config.database_url,
        deadline_seconds=deadline,
        min_size=min_size,
        max_size=max_size,
        # Waiting longer than this for a connection means the database is away or overloaded:
        # better a quick 503 than a hang past the sender's ~10 s timeout.
        timeout=config.pool_timeout,
        max_waiting=max_size * 4,
        # Keep retrying the server forever in the background: it will come back.
        reconnect_timeout=float("inf"),
        open=False,
        name=name,
        kwargs=kwargs,
        configure=configure,
    )


def session_settings(statement_timeout_ms) -> dict:
    """{setting: value in its base unit} every session of the request path runs with; the
    ones that need a later server than 15 are dropped by `_applicable`."""
    return {
        # Times read back (feeds, exports, reports) in UTC: see UTC_SESSION.
        "TimeZone": "UTC",
        # A statement that runs longer than this is cancelled and the request answers 503.
        "statement_timeout": str(int(statement_timeout_ms)),
        "idle_in_transaction_session_timeout": "60000",
        # A statement whose connection the deadline cut (a request's last call gets only what
        # is left of its deadline, often less than statement_timeout) would otherwise go on
        # waiting for its lock on the server, orphaned, while the pool opens another: a long
        # lock would pile them up to max_connections. PostgreSQL checks each second.
        "client_connection_check_interval": "1000",
    }


def _applicable(settings, server_version) -> dict:
    """`settings` without those the server does not know."""
    if server_version >= CLIENT_CHECK_SINCE:
        return settings
    return {k: v for k, v in settings.items() if k != "client_connection_check_interval"}


# Every setting in one round trip, as SET would set it (for the session); the names and values
# are parameters, never text in the statement.
SET_SETTINGS = """
SELECT set_config(name, value, false) FROM unnest(%s::text[], %s::text[]) AS s(name, value)
"""


def set_settings(conn, settings: dict) -> None:
    """Set `settings` ({name: value}) for the session, in one statement."""
    if settings:
        conn.execute(SET_SETTINGS, (list(settings), list(settings.values())))


def _set_session(settings, deadline_seconds):
    """The pool's `configure` for a connection of its own: SET each setting."""

    def apply(conn):
        set_settings(conn, _applicable(settings, conn.info.server_version))

    def configure(conn):
        # Under the deadline too: a server that accepted the connection and then went silent
        # would otherwise hold one of the pool's few connecting threads for good.
        call_with_deadline(conn, deadline_seconds, apply)

    return configure


class RoleSettingsMissing(DatabaseUnavailable):
    """Behind a transaction pooler, the role lacks the session settings the receiver needs;
    the message has the statements that give it them."""


# Session settings a transaction pooler carries from one transaction to the next: PgBouncer keeps
# the values PostgreSQL reports (ParameterStatus) per client and sets them again on each server
# session it lends that client (client_encoding, DateStyle, TimeZone, standard_conforming_strings,
# application_name, whatever its version).
POOLER_TRACKED = {"TimeZone"}

# One round trip, where SET costs one per setting: pg_settings gives each value in its base
# unit (ms for the timeouts), as the role's `ALTER ROLE ... SET` stored it.
ROLE_SETTINGS = """
SELECT current_user, current_database(), name, setting
FROM pg_settings WHERE name = ANY(%s)
"""


def _check_role_settings(settings, deadline_seconds):
    """The pool's `configure` behind a transaction pooler. A SET changes whichever server
    session the pooler lent for that one statement, not the sessions this connection's later
    transactions run on; so the settings must come with every server session: the role's own,
    `ALTER ROLE ... IN DATABASE ... SET` (PgBouncer 1.18 does not forward the startup
    `options`). Checked on each connection the pool opens, the first at the worker's start; a
    role without them gets no connection (503, /readyz failing) rather than requests with no
    statement_timeout, and the log says what to run. TimeZone alone is SET: PostgreSQL reports
    it to the client (GUC_REPORT), and PgBouncer, which keeps each client's reported values,
    sets it again on every server session it lends this connection."""
    reported = {name: value for name, value in settings.items() if name in POOLER_TRACKED}
    wanted_of_role = {name: value for name, value in settings.items() if name not in reported}

    def check(conn):
        set_settings(conn, reported)
        wanted = _applicable(wanted_of_role, conn.info.server_version)
        rows = conn.execute(ROLE_SETTINGS, (list(wanted),)).fetchall()
        role, database = rows[0][:2] if rows else ("?", "?")
        found = {name.lower(): setting for _, _, name, setting in rows}
        wrong = {
            name: value
            for name, value in wanted.items()
            if (found.get(name.lower()) or "").lower() != value.lower()
        }
        if wrong:
            raise RoleSettingsMissing(_role_settings_message(role, database, wrong, found))

    def configure(conn):
        try:
            call_with_deadline(conn, deadline_seconds, check)
        except RoleSettingsMissing as error:
            logger.error("%s", error)
            raise

    return configure


def _role_settings_message(role, database, wrong, found) -> str:
    """What is wrong with the role's settings, and the statements that mend it."""
    differences = ", ".join(f"{name} is {found.get(name.lower())!r}" for name in wrong)
    role_sql = psycopg.sql.Identifier(role).as_string(None)
    database_sql = psycopg.sql.Identifier(database).as_string(None)
    fixes = " ".join(
        f"ALTER ROLE {role_sql} IN DATABASE {database_sql} SET {name} = '{value}';"
        for name, value in wrong.items()
    )
    return (
        f"RECEIVER_DATABASE_POOLER=transaction: the role's sessions lack the receiver's "
        f"settings ({differences}); run on PostgreSQL: {fixes} then reconnect the pooler's "
        f"server connections (PgBouncer: RECONNECT on its console)"
    )


# The readiness probe's own pool: one connection at most, so that probes (however many load
# balancers send them) never take one of the webhook's connections.
PROBE_POOL_SIZE = 1


def init_app(app, config):
    """Attach the pools, opened lazily, so each gunicorn worker opens its own after the fork:
    the webhook's, and the readiness probe's."""
    app.extensions["receiver.pool"] = make_pool(config)
    app.extensions["receiver.probe_pool"] = make_pool(
        config, name="receiver-probe", size=PROBE_POOL_SIZE
    )
    app.extensions["receiver.pool_lock"] = threading.Lock()


def get_pool(app=None, name="receiver.pool") -> ReceiverPool:
    """The app's pool (or the one named), opened on first use in this process."""
    app = app or current_app
    pool = app.extensions[name]
    if pool.closed:
        with app.extensions["receiver.pool_lock"]:
            if pool.closed:
                pool.open(wait=False)
    return pool


def get_probe_pool(app=None) -> ReceiverPool:
    """The readiness probe's pool, opened on first use in this process."""
    return get_pool(app, "receiver.probe_pool")


def close_pool(app):
    """Close this process's pools (gunicorn's worker_exit hook)."""
    for name in ("receiver.pool", "receiver.probe_pool", "receiver.feed_pool"):
        pool = app.extensions.get(name)
        if pool is not None and not pool.closed:
            pool.close(timeout=2)


def connect(
    url, application_name, lock_timeout_ms=None, statement_timeout_ms=None, jit=None
) -> psycopg.Connection:
    """A connection of its own for a command (not the request path), in autocommit.

    Autocommit, so that every `conn.transaction()` is a transaction of its own: without it the
    first statement opens an implicit transaction and each block is only a savepoint. With the
    pool's TCP keepalives and tcp_user_timeout (unless `url` sets its own): a dead network path
    under `maintain --every` or the workers' hourly upkeep is noticed in seconds, where the
    kernel's defaults left it blocked for hours. `statement_timeout_ms` bounds each statement
    on the server (None: the server's or role's own setting, as before); `jit` False turns
    PostgreSQL's JIT off for the session (None: the server's own setting)."""
    given = conninfo_to_dict(url)
    defaults = {**TCP_DEFAULTS, "connect_timeout": 5}
    options = {key: value for key, value in defaults.items() if key not in given}
    conn = psycopg.connect(url, autocommit=True, application_name=application_name, **options)
    settings = {"TimeZone": "UTC"}
    if lock_timeout_ms is not None:
        settings["lock_timeout"] = str(int(lock_timeout_ms))
    if statement_timeout_ms is not None:
        settings["statement_timeout"] = str(int(statement_timeout_ms))
    if jit is not None:
        settings["jit"] = "on" if jit else "off"
    set_settings(conn, settings)
    return conn


@contextmanager
def session_lock_if_free(conn, key):
    """Hold session advisory lock `key` for the block if no one else does; yield whether held."""
    held = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
    try:
        yield held
    finally:
        if held:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def delete_in_batches(conn, statement, horizon, batch=10_000) -> int:
    """Run a `DELETE ... LIMIT batch` statement (parameters: horizon, batch) until it deletes
    fewer than `batch` rows; each run is its own short transaction on an autocommit connection,
    so no lock is held for long. The number deleted."""
    total = 0
    while True:
        deleted = conn.execute(statement, (horizon, batch)).rowcount
        total += deleted
        if deleted < batch:
            return total


def run_on_connection(pool, work, pool_timeout=None, deadline_seconds=None, deadline=None):
    """Run `work(conn)` on an autocommit connection; return its result. `work` makes its
    writes atomic: one statement, or `with conn.transaction()`.

    The whole call, both attempts included, takes at most the pool's timeout plus its
    deadline (or the values given), and never runs past `deadline` (a Deadline: the request's,
    shared by all its calls). Raises DatabaseUnavailable for transient trouble. Content
    errors escape `work` only when it chose not to handle them, and are raised as they are (a
    bug, not the sender's problem)."""
    pool_timeout = pool.timeout if pool_timeout is None else pool_timeout
    if deadline_seconds is None:  # a plain pool (a command's, a test's) gets the default
        deadline_seconds = getattr(pool, "deadline_seconds", DEFAULT_DEADLINE_SECONDS)
    end = time.monotonic() + pool_timeout + deadline_seconds
    if deadline is not None:
        end = min(end, deadline.end)
    for attempt in range(ATTEMPTS):
        try:
            return _attempt(pool, work, pool_timeout, deadline_seconds, end)
        except psycopg_pool.PoolTimeout as error:
            raise DatabaseUnavailable(f"no database connection: {error}") from error
        except psycopg.Error as error:
            if is_content_error(error):
                raise
            retry = attempt + 1 < ATTEMPTS and end - time.monotonic() > 0.1
            if not retry or not _worth_retrying(error):
                raise DatabaseUnavailable(f"{type(error).__name__}: {error}") from error
    raise AssertionError("unreachable")


def _attempt(pool, work, pool_timeout, deadline_seconds, end):
    """One attempt: a connection within `pool_timeout`, `work` done within `deadline_seconds`
    or cut; neither past `end`."""
    wait = min(pool_timeout, end - time.monotonic())
    if wait <= 0:
        raise psycopg_pool.PoolTimeout("no time left to wait for a connection")
    conn = pool.getconn(timeout=wait)
    deadline = min(deadline_seconds, end - time.monotonic())
    try:
        return call_with_deadline(conn, deadline, lambda c: _work_then_idle(c, work))
    except psycopg.Error as error:
        if error.sqlstate == READ_ONLY:
            conn.close()  # this server will never take a write: the pool connects anew
        raise
    finally:
        pool.putconn(conn)  # a closed or broken connection is discarded and replaced


def _work_then_idle(conn, work):
    """`work(conn)`, then commit what it left open (as `pool.connection()` would: a pool not
    in autocommit), or roll back after a failure; here, under the deadline, not in the pool."""
    unreplicated = []
    handler = _collect_unreplicated(unreplicated)
    conn.add_notice_handler(handler)
    try:
        try:
            result = work(conn)
        except BaseException:
            if not conn.closed and _in_transaction(conn):
                conn.rollback()
            raise
        if _in_transaction(conn):
            conn.commit()  # before the answer: 200 means committed
    finally:
        conn.remove_notice_handler(handler)
    if unreplicated:
        # With synchronous replication, a commit whose wait for the standby was cancelled (the
        # statement timeout) is committed on this server only, and PostgreSQL reports success
        # with a WARNING. A 200 would promise what a failover could lose: answer 503 instead;
        # the sender's retry is a duplicate, stored once.
        raise DatabaseUnavailable(f"committed but not replicated: {unreplicated[0]}")
    return result


# PostgreSQL's warning when a commit stops waiting for its synchronous standby
# (SyncRepWaitForLSN in src/backend/replication/syncrep.c): its text is translated with the
# session's lc_messages, so it is recognised by what is not: the severity's untranslated name
# and the source file the server names in every notice. The English text stays as a fallback for
# a server or proxy that leaves the source fields out. The sqlstate cannot tell it alone: a user
# cancel's warning has none of its own (01000, any WARNING's), and the one on an administrator's
# shutdown (57P01) never reaches the client, whose connection is closed with it.
UNREPLICATED_SOURCE = "syncrep.c"
UNREPLICATED = "canceling wait for synchronous replication"


def is_unreplicated_warning(diagnostic) -> bool:
    """Whether a notice is PostgreSQL's "committed locally, not confirmed by the synchronous
    standby" warning, in whatever language the server speaks."""
    if (diagnostic.severity_nonlocalized or diagnostic.severity) != "WARNING":
        return False
    if diagnostic.source_file:
        return diagnostic.source_file.rsplit("/", 1)[-1] == UNREPLICATED_SOURCE
    return (diagnostic.message_primary or "").startswith(UNREPLICATED)


def _collect_unreplicated(found):
    """A notice handler that keeps PostgreSQL's "not replicated" warnings in `found`."""

    def handle(diagnostic):
        if is_unreplicated_warning(diagnostic):
            found.append(diagnostic.message_primary or UNREPLICATED)

    return handle


def _in_transaction(conn) -> bool:
    return conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE


def _worth_retrying(error) -> bool:
    """A dead connection, a deadlock (both OperationalError) or a server that is read-only
    after a failover may go away on the next try; a statement timeout or a missed deadline
    would only time out again."""
    if isinstance(error, psycopg.errors.QueryCanceled):
        return False
    return (
        isinstance(error, psycopg.OperationalError)
        or error.sqlstate == READ_ONLY
        or is_routing_race(error)
    )


# The request path's two statements (the digest lookup and the batch statement) go to libpq
# through psycopg's own connection (`Connection.pgconn`), prepared once per connection: psycopg's
# `execute` spends ~60 us of Python per call on a cursor, adaptation and its prepare bookkeeping,
# about what the rest of the database call costs (docs/benchmarks-history.md: #25). Everything
# else (the connection, the pool, notices, transactions, the watchdog's cut) stays psycopg's:
# libpq's blocking call releases the GIL and returns when the watchdog shuts the socket down,
# and its failures are raised as the psycopg exceptions `execute` would raise, so that a
# content error, a dead connection and a missed deadline are told apart as before.
BYTEA = 17
_OK = (ExecStatus.TUPLES_OK, ExecStatus.COMMAND_OK)
# {connection: names of the statements prepared on it}: a connection is a server session.
_prepared_on = weakref.WeakKeyDictionary()
_statements = {}  # {(query, param_types): (name, command, formats)}, built once per statement


def run_prepared(conn, query, params, param_types):
    """`query` (psycopg's %s placeholders) with `params` (bytes, text format unless their
    type in `param_types` is BYTEA, sent binary), through libpq; the PGresult, or raise.

    Prepared on the connection the first time it runs there, except behind a transaction
    pooler (prepare_threshold None: see make_pool), where every call is a one-off."""
    key = (query, param_types)
    statement = _statements.get(key)
    if statement is None:
        statement = _statements[key] = _compile(query, param_types)
    name, command, formats = statement
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    pgconn = conn.pgconn
    if conn.prepare_threshold is None:
        return _checked(conn, pgconn.exec_params(command, params, param_types, formats))
    prepared = _prepared_on.get(conn)
    if prepared is None:
        prepared = _prepared_on[conn] = set()
    if name not in prepared:
        _checked(conn, pgconn.prepare(name, command, param_types))
        prepared.add(name)
    return _checked(conn, pgconn.exec_prepared(name, params, formats))


def _compile(query, param_types):
    """(statement name, the query with $n placeholders, the parameters' formats)."""
    numbers = iter(range(1, len(param_types) + 1))
    command = re.sub(r"%%|%s", lambda m: "%" if m[0] == "%%" else f"${next(numbers)}", query)
    name = "receiver_" + hashlib.sha256(command.encode()).hexdigest()[:24]
    formats = [1 if oid == BYTEA else 0 for oid in param_types]
    return name.encode(), command.encode(), formats


def _checked(conn, result):
    """`result` when it succeeded; else the exception psycopg's `execute` would raise."""
    if result.status in _OK:
        return result
    if conn.pgconn.status == psycopg.pq.ConnStatus.BAD:
        # The connection died under the call (the server went away, or the watchdog cut it):
        # OperationalError, as psycopg says it, so the caller retries or answers 503.
        message = conn.pgconn.get_error_message() or result.get_error_message()
        raise psycopg.OperationalError(f"consuming input failed: {message}")
    raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
