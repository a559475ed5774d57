"""An upgrade from 002 or older: migration 004's recipient_status backfill runs after the
migrations' transaction, in short ranges, while batches go on being answered 200."""

import threading

import psycopg

from receiver.storage import migrate, recipient_status

from support import body, event, post

# 002's events table: statuses of 3,000 recipients over 12,000 events, spread over three months
# of 2025, every fourth recipient's last word an unsubscribe.
OLD_STATUS_EVENTS = """
INSERT INTO events (event_key, event_id, client_id, type, created_at, received_at, recipient_id,
                    category, payload)
SELECT 'old-' || g, 'old-' || g, 42,
       CASE WHEN g % 4 = 0 THEN 'unsubscribe' ELSE 'doubleoptin' END,
       timestamptz '2025-01-01' + g * interval '10 minutes', now() - interval '1 day',
       'r' || g % 3000, NULL, jsonb_build_object('id', 'old-' || g)
FROM generate_series(1, 12000) g
"""
# What the batch insert would have decided, from scratch, for the same events.
DECIDED = """
SELECT DISTINCT ON (recipient_id) recipient_id, event_status(type, category, threshold_exceeded)
FROM events WHERE client_id = 42
ORDER BY recipient_id, created_at DESC, status_rank(event_status(type, category,
         threshold_exceeded)) DESC, event_key COLLATE "C" DESC
"""


def statuses(conn) -> dict:
    rows = conn.execute("SELECT recipient_id, status FROM recipient_status WHERE client_id = 42")
    return dict(rows.fetchall())


def test_the_migrations_transaction_leaves_the_backfill_to_its_own_batches(
    database_at_version_2,
):
    with psycopg.connect(database_at_version_2, autocommit=True) as conn:
        conn.execute(OLD_STATUS_EVENTS)
    migrate.apply_pending(database_at_version_2)  # what the upgrade holds its locks for
    with psycopg.connect(database_at_version_2, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM recipient_status").fetchone() == (0,)
        assert conn.execute("SELECT * FROM recipient_status_backfill").fetchall() == [(None, 0)]
    migrate.migrate(database_at_version_2)  # the moves and backfills, each in short steps
    with psycopg.connect(database_at_version_2, autocommit=True) as conn:
        assert statuses(conn) == dict(conn.execute(DECIDED).fetchall())
        assert len(statuses(conn)) == 3000
        assert conn.execute("SELECT count(*) FROM recipient_status_backfill").fetchone() == (0,)


def test_batches_during_the_backfill_are_answered_and_their_statuses_win(
    database_at_version_2, make_client
):
    with psycopg.connect(database_at_version_2, autocommit=True) as conn:
        conn.execute(OLD_STATUS_EVENTS)
    migrate.apply_pending(database_at_version_2)
    with psycopg.connect(database_at_version_2, autocommit=True) as conn:
        migrate.partitions.ensure_months(conn)
        migrate.partitions.move_old_table(conn)
        recipient_status.backfill(conn, blocks=4, ranges=3)  # then interrupted
    client = make_client(database_url=database_at_version_2)
    # Newer than every old event: r0..r99 unsubscribe now, whatever the backfill decides.
    later = event("unsubscribe", clientId=42, created=1_800_000_000_000)
    answers = []

    def send():
        for n in range(20):
            batch = [dict(later, id=f"new-{n}-{i}", recipientId=f"r{n * 5 + i}") for i in range(5)]
            answers.append(post(client, body(*batch)).status_code)

    sender = threading.Thread(target=send)
    sender.start()
    with psycopg.connect(database_at_version_2, autocommit=True) as conn:
        recipient_status.backfill(conn, blocks=4)  # resumed, in ranges of 4 blocks
    sender.join()
    assert answers == [200] * 20
    with psycopg.connect(database_at_version_2, autocommit=True) as conn:
        decided = statuses(conn)
        assert decided == dict(conn.execute(DECIDED).fetchall())
    assert {decided[f"r{n}"] for n in range(100)} == {"unsubscribed"}
