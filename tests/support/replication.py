"""Logical replication between two clusters of a test's own (tests/system/storage/
test_logical_replication.py): a publisher at wal_level = logical, and waiting for a subscription
to have applied everything the publisher has written.

The clusters are support.OwnedPostgres (pgserver's binaries, whatever server TEST_DATABASE_URL
names): the machine's own PostgreSQL may run at wal_level = replica, and changing that needs a
restart nobody else's tests should see.
"""

import threading

import psycopg
import psycopg.sql
from psycopg.conninfo import make_conninfo

from . import OwnedPostgres, wait_until


def set_standby_names(url, value):
    """Make commits on `url` wait for the standby named `value` (synchronous replication)."""
    with psycopg.connect(url, autocommit=True) as conn:
        statement = psycopg.sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}")
        conn.execute(statement.format(psycopg.sql.Literal(value)))
        conn.execute("SELECT pg_reload_conf()")


WAITING_FOR_STANDBY = "SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep'"


def cancel_waiting(url):
    """Cancel the first backend seen waiting for the synchronous standby on `url`."""
    with psycopg.connect(url, autocommit=True) as conn:
        (pid,) = wait_until(lambda: conn.execute(WAITING_FOR_STANDBY).fetchone(), timeout=5)
        conn.execute("SELECT pg_cancel_backend(%s)", (pid,))


def post_then_cancel_its_wait(url, send):
    """Run `send()` (a POST whose commit waits for a standby that never answers) in a thread,
    cancel that wait on `url`, and return what `send()` answered."""
    answers = []
    sender = threading.Thread(target=lambda: answers.append(send()))
    sender.start()
    cancel_waiting(url)
    sender.join(timeout=10)
    (answer,) = answers
    return answer


def start_publisher(data_dir, replication_slots=4, wal_senders=4) -> OwnedPostgres:
    """A cluster that can publish: wal_level = logical (a restart). One subscription takes a
    slot and a walsender, and each table it is copying at first one more of each (two at a
    time by default, max_sync_workers_per_subscription)."""
    postgres = OwnedPostgres(data_dir)
    settings = {
        "wal_level": "logical",
        "max_replication_slots": str(replication_slots),
        "max_wal_senders": str(wal_senders),
    }
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        for name, value in settings.items():
            statement = psycopg.sql.SQL("ALTER SYSTEM SET {} = {}")
            conn.execute(statement.format(psycopg.sql.Identifier(name), psycopg.sql.Literal(value)))
    postgres.stop()
    postgres.start()
    return postgres


def conninfo_from(postgres: OwnedPostgres, dbname="postgres") -> str:
    """What a subscriber on the same host connects to `postgres` with (its Unix socket)."""
    info = postgres.info
    host = info.socket_dir if info.socket_dir is not None else info.hostname
    return make_conninfo(host=str(host), port=info.port or 5432, user="postgres", dbname=dbname)


def subscription_errors(subscriber_url, subscription):
    """Apply and initial-copy errors of the subscription so far (pg_stat_subscription_stats)."""
    with psycopg.connect(subscriber_url) as conn:
        row = conn.execute(
            "SELECT apply_error_count + sync_error_count FROM pg_stat_subscription_stats "
            "WHERE subname = %s",
            (subscription,),
        ).fetchone()
    return row[0] if row else 0


def wait_until_applied(publisher, subscriber, subscription, timeout=20.0):
    """Wait until the subscription has copied its tables and applied every change the
    publisher had written when called; fail at once, with the subscriber's log, on an apply
    error (a duplicate key here would be an event delivered twice)."""
    with psycopg.connect(publisher.url) as conn:
        target = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]

    def applied():
        if subscription_errors(subscriber.url, subscription):
            log = (subscriber.info.pgdata / "log").read_text(errors="replace")
            raise AssertionError("the subscription failed to apply:\n" + log[-6000:])
        with psycopg.connect(subscriber.url) as conn:
            copying = conn.execute(
                "SELECT count(*) FROM pg_subscription_rel r JOIN pg_subscription s "
                "ON s.oid = r.srsubid WHERE s.subname = %s AND r.srsubstate <> 'r'",
                (subscription,),
            ).fetchone()[0]
        if copying:
            return False
        with psycopg.connect(publisher.url) as conn:
            # The apply position the subscriber reports: its last applied commit, or all it
            # received when nothing is pending.
            return conn.execute(
                "SELECT coalesce(bool_or(replay_lsn >= %s::pg_lsn), false) "
                "FROM pg_stat_replication WHERE application_name = %s",
                (target, subscription),
            ).fetchone()[0]

    wait_until(applied, timeout=timeout, interval=0.1)
