"""`events` partitioned by month (migration 003): every valid time stored once, months made
ahead, stray rows split out, and today's table migrated with its data."""

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from receiver.maintenance import tasks
from receiver.storage import migrate, partitions

from support import body, event, post, wait_until

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def millis(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


def where_stored(query, **match):
    """(partition, created_at) of the rows whose payload matches."""
    return query(
        "SELECT tableoid::regclass::text, created_at FROM events WHERE payload @> %s::jsonb",
        (psycopg.types.json.Jsonb(match),),
    )


NOW = datetime.now(UTC)
EDGES = {
    "year 1": datetime(1, 1, 1, tzinfo=UTC),
    "before 1970": datetime(1969, 7, 20, 20, 17, 40, tzinfo=UTC),
    "year 9999": datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
    "far future": datetime(2200, 1, 1, tzinfo=UTC),
    "3 days old": NOW - timedelta(days=3),
    "now": NOW,
    "next month": partitions.add_months(partitions.month_start(NOW), 1) + timedelta(hours=1),
}


@pytest.mark.parametrize("moment", EDGES.values(), ids=EDGES.keys())
@pytest.mark.parametrize("with_id", [True, False], ids=["with-id", "without-id"])
def test_an_event_at_any_time_is_stored_once(client, query, moment, with_id):
    fields = {"id": f"edge-{millis(moment)}"} if with_id else {"mailId": f"m-{millis(moment)}"}
    batch = body(event("sent", created=millis(moment), **fields))
    for _ in range(3):  # delivered three times
        answer = post(client, batch)
        assert answer.status_code == 200, answer.json
    (row,) = where_stored(query, **fields)
    partition, stored_at = row
    assert stored_at == moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    month = partitions.month_start(moment)
    # The months around today have partitions of their own; any other time is in the default.
    expected = partitions.partition_name(month)
    if month not in {partitions.add_months(partitions.month_start(NOW), k) for k in range(-1, 4)}:
        expected = partitions.DEFAULT_PARTITION
    assert partition == expected


def test_duplicates_across_a_month_boundary_are_one_row_each(client, query):
    boundary = partitions.add_months(partitions.month_start(NOW), 1)
    before, after = boundary - timedelta(milliseconds=1), boundary
    batch = body(
        event("open", created=millis(before), mailId="edge-before"),
        event("open", created=millis(after), mailId="edge-after"),
        event("sent", created=millis(before), id="same-id"),
        # The same id and type with another `created` is another event (documented).
        event("sent", created=millis(after), id="same-id"),
    )
    first = post(client, batch).json
    again = post(client, batch).json
    assert (first["stored"], again["stored"], again["duplicates"]) == (4, 0, 4)
    rows = query("SELECT tableoid::regclass::text, event_key FROM events ORDER BY created_at")
    assert [name for name, _ in rows] == [
        partitions.partition_name(partitions.month_start(before)),
        partitions.partition_name(partitions.month_start(before)),
        partitions.partition_name(boundary),
        partitions.partition_name(boundary),
    ]


def test_maintain_splits_stray_rows_into_their_month_and_keeps_them_unique(
    client, query, database_url
):
    stray = datetime(2030, 6, 15, tzinfo=UTC)
    batch = body(event("sent", created=millis(stray), id="stray-1"))
    post(client, batch)
    assert where_stored(query, id="stray-1")[0][0] == partitions.DEFAULT_PARTITION
    with psycopg.connect(database_url, autocommit=True) as conn:
        report = tasks.maintain(conn, now=datetime(2030, 1, 10, tzinfo=UTC))
    assert ("events_2030_06", 1) in report.split
    assert where_stored(query, id="stray-1")[0][0] == "events_2030_06"
    assert post(client, batch).json["duplicates"] == 1  # still a duplicate in its new home
    assert query("SELECT count(*) FROM events WHERE event_key = 'stray-1'") == [(1,)]


def test_maintain_twice_creates_nothing_the_second_time(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        later = datetime(2031, 3, 3, tzinfo=UTC)
        first = tasks.maintain(conn, now=later)
        second = tasks.maintain(conn, now=later)
    assert first.created == [f"events_2031_{m:02d}" for m in range(2, 7)]
    assert second.created == []


OLD_ROWS = """
INSERT INTO events (event_key, event_id, client_id, type, created_at, received_at, mailing_id,
                    recipient_id, payload)
SELECT 'old-' || g, 'old-' || g, 42, 'sent',
       timestamptz '2025-01-01' + g * interval '1 hour', now() - interval '1 day', 7,
       'r' || g, jsonb_build_object('id', 'old-' || g)
FROM generate_series(1, %s) g
"""


def test_migrating_a_table_with_data_keeps_every_row_once(database_at_version_2):
    with psycopg.connect(database_at_version_2, autocommit=True) as conn:
        conn.execute(OLD_ROWS, (2000,))  # 2025-01-01 to 2025-03-25
        before = conn.execute(
            "SELECT md5(string_agg(event_key || received_at, ',' ORDER BY event_key)) FROM events"
        ).fetchone()
    moved = []
    applied = migrate.migrate(database_at_version_2, progress=moved.append)
    assert applied[0].name == "partition_events"  # then 004 and any later files
    assert moved[-1] == 2000
    with psycopg.connect(database_at_version_2, autocommit=True) as conn:
        after = conn.execute(
            "SELECT md5(string_agg(event_key || received_at, ',' ORDER BY event_key)) FROM events"
        ).fetchone()
        placed = dict(
            conn.execute(
                "SELECT tableoid::regclass::text, count(*) FROM events GROUP BY 1"
            ).fetchall()
        )
        assert not partitions.old_table_exists(conn)
    assert after == before  # same keys, same arrival times
    assert placed == {"events_2025_01": 743, "events_2025_02": 672, "events_2025_03": 585}
    assert migrate.migrate(database_at_version_2) == []  # nothing left to do


def test_an_interrupted_migration_resumes_without_losing_or_doubling(database_at_version_2):
    with psycopg.connect(database_at_version_2, autocommit=True) as conn:
        conn.execute(OLD_ROWS, (1000,))
        conn.execute(migrate.load_migrations()[2].sql)  # the swap, as `migrate` would
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (3, 'partition_events')")
        partitions.ensure_months(conn, datetime(2025, 1, 5, tzinfo=UTC))
        assert partitions.move_old_rows(conn, batch=300) == 300  # then the process died
        # Meanwhile a re-delivery of a row still in the old table arrives at the new one.
        conn.execute(
            "INSERT INTO events (event_key, event_id, client_id, type, created_at, payload)"
            " SELECT event_key, event_id, client_id, type, created_at, payload"
            " FROM events_unpartitioned LIMIT 1"
        )
    migrate.migrate(database_at_version_2)
    with psycopg.connect(database_at_version_2) as conn:
        rows, keys = conn.execute(
            "SELECT count(*), count(DISTINCT event_key) FROM events"
        ).fetchone()
    assert (rows, keys) == (1000, 1000)


def test_partitions_counts_the_rows_of_a_month_never_analysed(database_url, monkeypatch, capsys):
    from receiver.cli import main

    with psycopg.connect(database_url, autocommit=True) as conn:
        partitions.create_month(conn, datetime(2031, 5, 1, tzinfo=UTC))
        conn.execute(
            "INSERT INTO events (event_key, client_id, type, created_at, payload) "
            "SELECT 'n' || g, 1, 'sent', timestamptz '2031-05-02' + g * interval '1 s', '{}' "
            "FROM generate_series(1, 2500) g"
        )
        analysed = conn.execute(
            "SELECT reltuples FROM pg_class WHERE relname = 'events_2031_05'"
        ).fetchone()[0]
    assert analysed < 0  # never analysed: the old listing said 0 rows

    def listed():
        monkeypatch.setenv("DATABASE_URL", database_url)
        assert main(["partitions"]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines() if "events_2031_05" in x)
        return int(line.split()[1].replace(",", ""))

    assert wait_until(lambda: listed() == 2500, timeout=10)
