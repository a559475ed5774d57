"""The change feeds (receiver.storage.feed, migrations/008): what is an entry, paging, and no gap
and no repeat whatever order the writers commit in."""

import threading
import time

import orjson
import psycopg
import pytest

from receiver.storage import feed
from receiver.storage.events import INSERT_EVENTS
from receiver.storage.migrate import CREATE_LEDGER, apply_pending, load_migrations, migrate

from support import body, post, wait_until
from support.reporting import CLIENT, MINUTE, T0, deliver, status_event


@pytest.fixture
def conn(database_url):
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


def read_all(read, conn, after=None, limit=1000):
    """Every row after `after`, page by page: (rows, the last page's next cursor)."""
    rows, cursor = [], after
    while True:
        page = read(conn, cursor, limit)
        rows += page.rows
        cursor = page.next
        if not page.full:
            return rows, cursor


def settle(conn):
    """Wait until everything committed so far is below the horizon. The horizon is the oldest
    transaction running on the whole server, whatever its database: another test's (or
    anybody's) open transaction holds it back."""
    marker = conn.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0]
    wait_until(lambda: feed.horizon(conn) > marker, timeout=60)


def changes(conn, after=None):
    settle(conn)
    rows, _ = read_all(feed.read_status_changes, conn, after)
    return [(r["recipient_id"], r["previous_status"], r["status"]) for r in rows]


def store(conn, *events):
    """The batch statement itself, on `conn` (in its transaction, if it has one open)."""
    rows = [
        [e["id"], e["id"], CLIENT, e["type"], e["created"], e.get("mailingId"), None, None, e]
        for e in events
    ]
    conn.execute(INSERT_EVENTS, (orjson.dumps(rows).decode(),))


def test_each_change_of_status_is_one_entry_and_nothing_else_is(client, conn):
    deliver(client, status_event("doubleoptin", "r@x", T0, "o1"))
    deliver(client, status_event("open", "r@x", T0 + 1, "x1"))  # no status
    deliver(client, status_event("unsubscribe", "r@x", T0 + MINUTE, "u1"))
    deliver(client, status_event("unsubscribe", "r@x", T0 + MINUTE, "u1"))  # re-delivered
    deliver(client, status_event("unsubscribe", "r@x", T0 + 2 * MINUTE, "u2"))  # same status
    deliver(client, status_event("doubleoptin", "r@x", T0 - MINUTE, "o0"))  # older: loses
    deliver(client, status_event("confirmedoptin", "r@x", T0 + 3 * MINUTE, "o2"))  # re-opt-in
    assert changes(conn) == [
        ("r@x", None, "subscribed"),
        ("r@x", "subscribed", "unsubscribed"),
        ("r@x", "unsubscribed", "subscribed"),
    ]
    last = feed.read_status_changes(conn).rows[-1]
    assert (last["status_event_type"], last["status_event_key"]) == ("confirmedoptin", "o2")


def test_pages_of_any_size_give_every_row_once_even_within_one_transaction(client, conn):
    deliver(client, *(status_event("singleoptin", f"r{i}", T0 + i, f"o{i}") for i in range(23)))
    deliver(client, *(status_event("open", f"r{i}", T0 + i, f"x{i}") for i in range(17)))
    settle(conn)
    all_events, _ = read_all(feed.read_events, conn)
    all_changes, _ = read_all(feed.read_status_changes, conn)
    assert len(all_events) == 40 and len(all_changes) == 23
    for limit in (1, 3, 7, 40):
        events, _ = read_all(feed.read_events, conn, limit=limit)
        assert [e["event_key"] for e in events] == [e["event_key"] for e in all_events]
        entries, _ = read_all(feed.read_status_changes, conn, limit=limit)
        assert [c["id"] for c in entries] == [c["id"] for c in all_changes]


def test_a_cursor_resumes_after_what_it_has_seen(client, conn):
    deliver(client, status_event("singleoptin", "a", T0, "o1"))
    settle(conn)
    _, cursor = read_all(feed.read_events, conn)
    _, status_cursor = read_all(feed.read_status_changes, conn)
    deliver(client, status_event("unsubscribe", "a", T0 + 1, "u1"))
    settle(conn)
    page = feed.read_events(conn, str(cursor))
    assert [e["event_key"] for e in page.rows] == ["u1"]
    assert page.rows[0]["payload"]["recipientId"] == "a"
    assert changes(conn, str(status_cursor)) == [("a", "subscribed", "unsubscribed")]
    assert feed.read_events(conn, str(page.next)).rows == []


def test_a_change_committed_across_a_read_is_in_the_next_read(client, conn, database_url):
    """The issue's reproduction: the unsubscribe of a recipient whose status row another
    transaction holds commits after run 1 read; run 2, from run 1's cursor, has it."""
    deliver(client, status_event("doubleoptin", "r@x", T0, "o1"))
    settle(conn)
    _, start = read_all(feed.read_status_changes, conn)
    answers = []
    with psycopg.connect(database_url) as holder:
        holder.execute(
            "SELECT * FROM recipient_status WHERE recipient_id = 'r@x' FOR UPDATE"
        ).fetchall()
        batch = body(status_event("unsubscribe", "r@x", T0 + MINUTE, "u1"))
        sender = threading.Thread(target=lambda: answers.append(post(client, batch)))
        sender.start()
        # The batch has stored its event and waits for the status row.
        wait_until(lambda: waiting_for_lock(conn), timeout=5)
        run1, cursor1 = read_all(feed.read_status_changes, conn, start)
        time.sleep(1.5)
        holder.rollback()
    sender.join()
    assert answers[0].status_code == 200
    assert run1 == []
    assert changes(conn, cursor1) == [("r@x", "subscribed", "unsubscribed")]


def waiting_for_lock(conn, statement="INSERT INTO events") -> bool:
    found = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
        (f"%{statement}%",),
    )
    return found.fetchone()[0] > 0


def test_a_later_change_by_an_older_transaction_comes_after_in_the_feed(database_url, conn):
    """A (older xid) changes R after B (newer xid) did and committed: the feed must put A's
    entry after B's, or a reader applying it in order would end with B's status."""
    with psycopg.connect(database_url) as older:
        older.execute("SELECT pg_current_xact_id()")  # A's id, before B's
        with psycopg.connect(database_url, autocommit=True) as newer:
            store(newer, status_event("unsubscribe", "r@x", T0, "u1"))
        store(older, status_event("doubleoptin", "r@x", T0 + MINUTE, "o1"))
        older.commit()
    settle(conn)
    entries = feed.read_status_changes(conn).rows
    assert [(e["status"], e["status_event_key"]) for e in entries] == [
        ("unsubscribed", "u1"),
        ("subscribed", "o1"),
    ]
    assert entries[0]["position"] == entries[1]["position"]  # A took B's place, after it


def test_nothing_at_or_after_a_running_transaction_is_returned(database_url, conn, client):
    deliver(client, status_event("singleoptin", "a", T0, "o1"))
    settle(conn)
    with psycopg.connect(database_url) as running:
        store(running, status_event("unsubscribe", "b", T0, "u1"))
        deliver(client, status_event("unsubscribe", "a", T0 + 1, "u2"))  # commits after it
        page = feed.read_status_changes(conn)
        assert [r["recipient_id"] for r in page.rows] == ["a"]  # not a's newer change yet
        running.commit()
    assert changes(conn, str(page.next)) == [
        ("b", None, "unsubscribed"),
        ("a", "subscribed", "unsubscribed"),
    ]


def test_a_cursor_ahead_of_the_database_is_refused(conn):
    """A restored database, or a promoted replica that had not all of the primary's
    transactions, hands out positions again that a reader has passed: refused, not skipped."""
    ahead = feed.horizon(conn) + 1000
    for read, cursor in ((feed.read_events, f"{ahead}"), (feed.read_status_changes, f"{ahead}:3")):
        with pytest.raises(feed.CursorAhead, match="ahead of this database"):
            read(conn, cursor)


def test_a_cursor_this_feed_did_not_write_is_refused():
    for text in ("x", "-1", "1:x", "1:2:3", "9" * 30, "1:" + "A" * 10):
        with pytest.raises(feed.BadCursor):
            feed.Cursor.parse(text, "event" if text.startswith("1:A") else "id")
    assert str(feed.Cursor.parse("12:34")) == "12:34"
    tie = (1, "open", 1_700_000_000_000_000, "k:é")
    assert feed.Cursor.parse(str(feed.Cursor(5, tie)), "event") == feed.Cursor(5, tie)


def migrate_to_007(url):
    """A database as the receiver left it before 008, with January 2026's partition."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(CREATE_LEDGER)
        for migration in load_migrations():
            if migration.version < 8:
                conn.execute(migration.sql)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
        conn.execute("CREATE TABLE events_2026_01 PARTITION OF events"
                     " FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')")  # fmt: skip


def test_statuses_decided_before_the_feed_existed_are_its_first_entries(empty_database):
    """An upgrade: statuses stored under 007 get one entry each, by `receiver migrate`."""
    migrate_to_007(empty_database)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        store(conn, *(status_event("singleoptin", f"r{i:02}", T0, f"o{i}") for i in range(12)))
        store(conn, status_event("unsubscribe", "r03", T0 + 1, "u3"))
        newer = [m.version for m in load_migrations() if m.version >= 8]
        assert [m.version for m in migrate(empty_database)] == newer
        seeded = changes(conn)
        assert seeded == [
            (f"r{i:02}", None, "unsubscribed" if i == 3 else "subscribed") for i in range(12)
        ]
        store(conn, status_event("unsubscribe", "r05", T0 + 1, "u5"))
        assert changes(conn)[-1] == ("r05", "subscribed", "unsubscribed")
        assert conn.execute("SELECT count(*) FROM status_changes_seed").fetchone()[0] == 0
        assert migrate(empty_database) == [] and len(changes(conn)) == 13  # seeded once


def test_a_change_committed_while_the_seed_waits_for_it_is_logged_once(empty_database):
    """A batch holds r5's status row when the seed reaches it, then commits its change: r5's
    one entry is the batch's (the seed sees it once it has the row), never a second one."""
    migrate_to_007(empty_database)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        store(conn, *(status_event("singleoptin", f"r{i}", T0, f"o{i}") for i in range(9)))
        apply_pending(empty_database)  # 008, without the seed
        with psycopg.connect(empty_database) as batch:
            store(batch, status_event("unsubscribe", "r5", T0 + 1, "u5"))
            seeder = psycopg.connect(empty_database, autocommit=True)
            seeding = threading.Thread(target=feed.seed_status_changes, args=(seeder, 4))
            seeding.start()
            wait_until(lambda: waiting_for_lock(conn, "FROM recipient_status"), timeout=5)
            batch.commit()
        seeding.join()
        seeder.close()
        entries = changes(conn)
    assert sorted(entries) == sorted(
        [(f"r{i}", None, "subscribed") for i in range(9) if i != 5]
        + [("r5", "subscribed", "unsubscribed")]
    )


def test_events_stored_before_the_feed_existed_have_no_position(empty_database):
    with psycopg.connect(empty_database, autocommit=True) as conn:
        migrate(empty_database)
        conn.execute("ALTER TABLE events ALTER COLUMN xid DROP DEFAULT")
        store(conn, status_event("open", "a", T0, "x1"))
        conn.execute("ALTER TABLE events ALTER COLUMN xid SET DEFAULT pg_current_xact_id()")
        store(conn, status_event("open", "a", T0, "x2"))
        settle(conn)
        assert [e["event_key"] for e in feed.read_events(conn).rows] == ["x2"]


def test_compaction_keeps_each_recipients_latest_change_whatever_its_age(client, conn):
    deliver(client, status_event("singleoptin", "a", T0, "o1"))
    deliver(client, status_event("unsubscribe", "a", T0 + 1, "u1"))
    deliver(client, status_event("singleoptin", "b", T0, "o2"))
    conn.execute("UPDATE status_changes SET changed_at = changed_at - interval '400 days'")
    deliver(client, status_event("doubleoptin", "a", T0 + 2, "o3"))
    before = changes(conn)
    horizon = conn.execute("SELECT now() - interval '30 days'").fetchone()[0]
    assert feed.compact_status_changes(conn, horizon, batch=2) == 2  # a's first two
    assert changes(conn) == [("b", None, "subscribed"), before[-1]]
    assert feed.compact_status_changes(conn, horizon) == 0
