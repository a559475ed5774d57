"""Change data capture through the publication `receiver` (migrations/009_cdc_publication.sql):
a PostgreSQL subscriber, the simplest consumer of it, gets every event exactly once, while
`receiver maintain` moves rows between partitions and `receiver prune` drops months here.

Two clusters of the test's own (pgserver's binaries): a publisher at wal_level = logical,
migrated and fed by the real receiver under gunicorn, and a subscriber migrated with the same
`receiver migrate` (what a user would do: the same tables, its `events` partitioned too).
"""

import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import psycopg.sql
import pytest

from receiver.cli import main
from receiver.maintenance import retention
from receiver.storage import partitions
from receiver.storage.migrate import migrate

from support import Gunicorn, OwnedPostgres, body, event
from support.replication import conninfo_from, start_publisher, wait_until_applied

pytestmark = pytest.mark.slow

SUBSCRIPTION = "receiver_copy"
EVENT_ORDER = "client_id, type, created_at, event_key"


@pytest.fixture
def clusters():
    """(publisher, subscriber), stopped and deleted afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="receiver-logical-"))
    started = []
    try:
        started.append(start_publisher(directory / "publisher"))
        started.append(OwnedPostgres(directory / "subscriber"))
        yield tuple(started)
    finally:
        for postgres in started:
            postgres.close()
        shutil.rmtree(directory, ignore_errors=True)


def published_tables(url):
    with psycopg.connect(url) as conn:
        return [
            table
            for (table,) in conn.execute(
                "SELECT tablename FROM pg_publication_tables WHERE pubname = 'receiver' "
                "AND pubname IN (SELECT pubname FROM pg_publication WHERE NOT pubdelete "
                "AND NOT pubtruncate AND pubinsert AND pubupdate AND pubviaroot) ORDER BY 1"
            )
        ]


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def status_event(kind, recipient, created, event_id, **fields):
    return event(kind, id=event_id, recipientId=recipient, created=created, mailingId=77, **fields)


def rows(url, table, order):
    with psycopg.connect(url) as conn:
        statement = psycopg.sql.SQL("SELECT * FROM {} ORDER BY {}").format(
            psycopg.sql.Identifier(table), psycopg.sql.SQL(order)
        )
        return conn.execute(statement).fetchall()


def value(url, query, params=None):
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchone()[0]


def deliver(server, *events):
    answer = server.post(body(*events))
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_subscriber_gets_every_event_once_across_partition_moves_and_retention(
    clusters, monkeypatch
):
    publisher, subscriber = clusters
    migrate(publisher.url)
    assert published_tables(publisher.url) == ["events", "recipient_status", "status_changes"]
    # The same tables there (its own months, triggers and publication): what a user would do.
    migrate(subscriber.url)
    # At wal_level = replica (the subscriber's, PostgreSQL's default) the publication is made
    # all the same, with one WARNING in the server log; without a slot nothing keeps WAL for it.
    assert value(subscriber.url, "SHOW wal_level") == "replica"
    assert published_tables(subscriber.url) == ["events", "recipient_status", "status_changes"]
    assert value(subscriber.url, "SELECT count(*) FROM pg_replication_slots") == 0
    warning = "wal_level is insufficient to publish logical changes"
    assert (subscriber.info.pgdata / "log").read_text().count(warning) == 1

    now = datetime.now(UTC)
    t0 = ms(now) - 600_000  # the current month, or the previous one in a month's first minutes
    # A month without a partition (migrate makes the previous month to three ahead): its
    # events land in events_default until `receiver maintain` gives it one.
    old_month = partitions.add_months(partitions.month_start(now), -6)
    old_name = partitions.partition_name(old_month)
    t_old = ms(old_month + timedelta(days=3))

    server = Gunicorn({"DATABASE_URL": publisher.url}, workers=1)
    try:
        # Stored before the subscription exists: they come over with its initial copy.
        first = [
            status_event("doubleoptin", "r1", t0, "e-1"),
            event("sent", id="e-2", recipientId="r1", created=t0 + 1, mailingId=77),
            event("open", recipientId="r1", created=t0 + 2, mailingId=77),  # no id: hashed key
        ]
        assert deliver(server, *first)["stored"] == 3

        with psycopg.connect(subscriber.url, autocommit=True) as conn:
            statement = psycopg.sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION receiver")
            conn.execute(
                statement.format(
                    psycopg.sql.Identifier(SUBSCRIPTION),
                    psycopg.sql.Literal(conninfo_from(publisher)),
                )
            )
        wait_until_applied(publisher, subscriber, SUBSCRIPTION)

        second = [
            status_event("unsubscribe", "r1", t0 + 10_000, "e-3"),  # r1's status: an UPDATE
            status_event("spamcomplaint", "r3", t0 + 11_000, "e-4"),
            event("click", id="e-5", recipientId="r3", created=t0 + 12_000, mailingId=77),
        ]
        assert deliver(server, *second)["stored"] == 3
        # The same body again (Campaign missed our 200): answered from its digest, nothing new.
        again = server.post(body(*second))
        assert again.status_code == 200 and again.json()["stored"] == 0
        # Old and new events mixed: the old ones are duplicates, stored once.
        mixed = [*first[1:], event("open", id="e-6", recipientId="r3", created=t0 + 13_000)]
        assert (deliver(server, *mixed)["stored"], deliver(server, *mixed)["stored"]) == (1, 0)

        # Six months back, no partition: events_default.
        stray = [
            status_event("bounce", "r2", t_old, "o-1", category="hardbounce"),
            event("sent", id="o-2", recipientId="r2", created=t_old + 1, mailingId=77),
            event("open", id="o-3", recipientId="r4", created=t_old + 2, mailingId=77),
        ]
        assert deliver(server, *stray)["stored"] == 3
        assert value(publisher.url, "SELECT count(*) FROM events_default") == 3

        # `receiver maintain`: the month gets its partition, its rows move out of the default
        # one (DELETE ... RETURNING into a table attached afterwards).
        monkeypatch.setenv("DATABASE_URL", publisher.url)
        monkeypatch.setenv("RECEIVER_RETENTION", "")
        assert main(["maintain"]) == 0
        assert value(publisher.url, "SELECT count(*) FROM events_default") == 0
        moved = psycopg.sql.SQL("SELECT count(*) FROM {}").format(psycopg.sql.Identifier(old_name))
        assert value(publisher.url, moved) == 3

        # Into the new partition, made after the publication: published with no action.
        later = [
            status_event("doubleoptin", "r2", t_old + 60_000, "o-4"),  # r2 resubscribes
            event("open", id="o-5", recipientId="r2", created=t_old + 61_000, mailingId=77),
        ]
        assert deliver(server, *later)["stored"] == 2
        assert deliver(server, *stray, *later)["stored"] == 0  # re-sent after the move
        assert value(publisher.url, moved) == 5
    finally:
        server.stop()

    wait_until_applied(publisher, subscriber, SUBSCRIPTION)
    events = rows(publisher.url, "events", EVENT_ORDER)
    assert len(events) == 12
    # Every event once, column for column (xid and received_at included); the subscriber's
    # unique key would have stopped the subscription on a second copy.
    assert rows(subscriber.url, "events", EVENT_ORDER) == events
    statuses = rows(publisher.url, "recipient_status", "client_id, recipient_id")
    assert [(r[1], r[2]) for r in statuses] == [
        ("r1", "unsubscribed"),
        ("r2", "subscribed"),
        ("r3", "complained"),
    ]
    assert rows(subscriber.url, "recipient_status", "client_id, recipient_id") == statuses
    # The subscriber's own triggers do not fire for replicated rows (the apply worker runs with
    # session_replication_role = replica): status_changes is the publisher's, not doubled;
    # mailing_counts (a trigger on events, not published) stays empty there.
    changes = rows(publisher.url, "status_changes", "id")
    assert [(c[3], c[4], c[5]) for c in changes] == [
        ("r1", "subscribed", None),
        ("r1", "unsubscribed", "subscribed"),
        ("r3", "complained", None),
        ("r2", "hardbounced", None),
        ("r2", "subscribed", "hardbounced"),
    ]
    assert rows(subscriber.url, "status_changes", "id") == changes
    assert value(publisher.url, "SELECT count(*) FROM mailing_counts") > 0
    assert value(subscriber.url, "SELECT count(*) FROM mailing_counts") == 0
    # On the subscriber the old month is in its default partition (it has no such month).
    assert value(subscriber.url, "SELECT count(*) FROM events_default") == 5

    # Retention here (DETACH and DROP: DDL, not replicated) keeps the history downstream.
    with psycopg.connect(publisher.url, autocommit=True) as conn:
        pruned = retention.prune(conn, timedelta(days=60))
    assert old_name in [name for name, _ in pruned.dropped]
    assert value(publisher.url, "SELECT count(*) FROM events") == 7
    wait_until_applied(publisher, subscriber, SUBSCRIPTION)
    assert rows(subscriber.url, "events", EVENT_ORDER) == events
