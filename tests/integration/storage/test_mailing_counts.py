"""mailing_counts and mailing_responders (migrations/006): kept by the trigger on `events` for
every writer, exactly once under concurrency; backfilled, rolled up and pruned."""

import threading
from datetime import UTC, datetime, timedelta

import psycopg

from receiver.maintenance import tasks
from receiver.storage import mailing_counts, migrate

from support.reporting import CLIENT, MINUTE, T0, deliver, status_event

SUMMARY = (
    "SELECT client_id, mailing_id, sent, opens, unique_opens, clicks, unique_clicks, hard_bounces,"
    " soft_bounces, unsubscribes, spam_complaints, first_event_at, last_event_at"
    " FROM mailing_summary ORDER BY client_id, mailing_id"
)
# A hand-written insert, as a user's script or an older receiver would write one.
INSERT = """
INSERT INTO events (event_key, client_id, type, created_at, mailing_id, recipient_id, payload)
VALUES (%s, %s, %s, %s, %s, %s, '{}') ON CONFLICT DO NOTHING
"""


def at(ms):
    return datetime.fromtimestamp(ms / 1000, UTC)


def mailing_events(mailing, start=T0):
    """3 sent, r1 opening twice and clicking, r2 opening, a hard bounce, an unsubscribe."""

    def e(kind, recipient, offset, key, **fields):
        return status_event(kind, recipient, start + offset, f"{mailing}-{key}", mailing, **fields)

    return [
        *(e("sent", f"r{i}", i * 1000, f"s{i}") for i in range(1, 4)),
        e("open", "r1", MINUTE, "o1"),
        e("open", "r1", 2 * MINUTE, "o2"),
        e("open", "r2", MINUTE, "o3"),
        e("click", "r1", 3 * MINUTE, "c1"),
        e("bounce", "r3", 10_000, "b1", category="hardbounce"),
        e("unsubscribe", "r2", 4 * MINUTE, "u1"),
    ]


def deliver_in_batches(client, events, size):
    for start in range(0, len(events), size):
        deliver(client, *events[start : start + size])


def test_every_writer_is_counted_once(client, database_url, query):
    deliver(client, *mailing_events(1001))
    with psycopg.connect(database_url) as conn:
        for _ in range(2):  # the second time ON CONFLICT skips it: nothing more counted
            conn.execute(INSERT, ("hand-1", CLIENT, "open", at(T0 + 9 * MINUTE), 1001, "r3"))
    deliver(client, *mailing_events(1001))  # a re-delivery counts nothing
    [row] = query(SUMMARY)
    assert row[2:11] == (3, 4, 3, 1, 1, 1, 0, 1, 0)
    assert row[11:] == (at(T0 + 1000), at(T0 + 9 * MINUTE))


def forget_counts(database_url):
    """As a database stored before migration 006 looks once 006 is applied: no counts yet."""
    with psycopg.connect(database_url) as conn:
        conn.execute("TRUNCATE mailing_counts, mailing_responders")
        conn.execute("INSERT INTO mailing_counts_backfill VALUES (-1, -1)")


def test_the_backfill_counts_what_ingest_would_have(client, database_url, query):
    events = mailing_events(1001) + mailing_events(1002, start=T0 + 60 * MINUTE)
    deliver_in_batches(client, events, 3)
    deliver_in_batches(client, list(reversed(events)), 4)
    kept = query(SUMMARY)
    forget_counts(database_url)
    assert query(SUMMARY) == []
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert mailing_counts.backfill(conn) == 2
        assert mailing_counts.backfill(conn) == 0  # done: nothing left, nothing twice
    assert query(SUMMARY) == kept
    assert query("SELECT count(*) FROM mailing_counts") == [(2,)]
    assert query("SELECT count(*) FROM mailing_counts_backfill") == [(0,)]


def test_migrate_runs_the_backfill(client, database_url, query):
    deliver(client, *mailing_events(1001))
    kept = query(SUMMARY)
    forget_counts(database_url)
    migrate.migrate(database_url)
    assert query(SUMMARY) == kept


def test_a_recount_waits_for_the_batches_in_flight(client, database_url, query):
    deliver(client, *mailing_events(1001))
    in_flight = psycopg.connect(database_url)
    in_flight.execute(INSERT, ("late-open", CLIENT, "open", at(T0 + 9 * MINUTE), 1001, "r9"))
    done = threading.Event()

    def recount():
        with psycopg.connect(database_url) as conn:
            conn.execute("SELECT recount_mailing(%s, 1001)", (CLIENT,))
        done.set()

    thread = threading.Thread(target=recount)
    thread.start()
    assert not done.wait(0.5)  # LOCK waits for the uncommitted batch
    in_flight.commit()
    in_flight.close()
    thread.join(10)
    assert done.is_set()
    [row] = query(SUMMARY)
    assert row[2:5] == (3, 4, 3)  # the late open counted once, not by both
    assert query("SELECT count(*) FROM mailing_counts") == [(1,)]


def test_roll_up_sums_a_mailings_rows_into_one(client, database_url, query):
    deliver_in_batches(client, mailing_events(1001) + mailing_events(1002), 2)
    kept = query(SUMMARY)
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert mailing_counts.roll_up(conn, above=1) == 2
        assert mailing_counts.roll_up(conn, above=1) == 0  # nothing left to roll up
    assert query(SUMMARY) == kept
    assert query("SELECT mailing_id, count(*) FROM mailing_counts GROUP BY 1 ORDER BY 1") == [
        (1001, 1),
        (1002, 1),
    ]


def test_a_maintenance_pass_rolls_up(client, database_url, query):
    deliver_in_batches(client, mailing_events(1001) * 20, 1)  # 180 posts, 9 distinct events
    with psycopg.connect(database_url, autocommit=True) as conn:
        report = tasks.maintain(conn)
    assert report.rolled_up == 0  # 9 rows: under the threshold
    deliver_in_batches(client, [status_event("open", f"x{i}", T0, f"x{i}") for i in range(60)], 1)
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert tasks.maintain(conn).rolled_up == 1
    [row] = query(SUMMARY)
    assert row[2:5] == (3, 63, 62)


def concurrent_opens(database_url, first_commits):
    """Two transactions each store an open of r1 for mailing 1001 (different events); the
    second waits on the first's responder row. The first commits or rolls back."""
    first = psycopg.connect(database_url)
    first.execute(INSERT, ("open-a", CLIENT, "open", at(T0), 1001, "r1"))
    done = threading.Event()

    def second():
        with psycopg.connect(database_url) as conn:
            conn.execute(INSERT, ("open-b", CLIENT, "open", at(T0 + 1000), 1001, "r1"))
        done.set()

    thread = threading.Thread(target=second)
    thread.start()
    assert not done.wait(0.5)  # waiting for the first transaction's responder
    first.commit() if first_commits else first.rollback()
    first.close()
    thread.join(10)
    assert done.is_set()


def test_concurrent_opens_of_one_recipient_count_one_unique(database_url, query):
    concurrent_opens(database_url, first_commits=True)
    assert query("SELECT opens, unique_opens FROM mailing_summary") == [(2, 1)]


def test_a_rolled_back_responder_is_counted_by_the_other_transaction(database_url, query):
    concurrent_opens(database_url, first_commits=False)
    assert query("SELECT opens, unique_opens FROM mailing_summary") == [(1, 1)]
    assert query("SELECT recipient_id FROM mailing_responders") == [("r1",)]


def test_delete_before_removes_mailings_wholly_older_than_the_horizon(client, database_url, query):
    old, recent = T0, T0 + 40 * 24 * 60 * MINUTE
    deliver(client, *mailing_events(1001, start=old), *mailing_events(1002, start=recent))
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert mailing_counts.delete_before(conn, at(old) + timedelta(days=1)) == 1
    assert [row[1] for row in query(SUMMARY)] == [1002]
    assert query("SELECT DISTINCT mailing_id FROM mailing_responders") == [(1002,)]


def test_a_recount_holds_back_no_other_mailing(client, database_url, query):
    deliver(client, *mailing_events(1001))
    with psycopg.connect(database_url) as recount:
        recount.execute("SELECT recount_mailing(%s, 1001)", (CLIENT,))  # not committed yet
        deliver(client, *mailing_events(1002))  # stored meanwhile: nothing to wait for
    assert [row[1:3] for row in query(SUMMARY)] == [(1001, 3), (1002, 3)]
