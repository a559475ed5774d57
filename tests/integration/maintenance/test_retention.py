"""`receiver prune`: whole old months dropped, nothing kept thinned, ingest never stopped."""

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from receiver.cli import main
from receiver.maintenance import retention
from receiver.storage import partitions

from support import body, event, post

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def millis(moment):
    return (moment - EPOCH) // timedelta(milliseconds=1)


@pytest.fixture
def months_of_events(client, database_url):
    """One event a day from 2025-09-01 to today, in partitions of their own."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        month = datetime(2025, 9, 1, tzinfo=UTC)
        while month <= NOW:
            partitions.create_month(conn, month)
            month = partitions.add_months(month, 1)
    day, events = datetime(2025, 9, 1, tzinfo=UTC), []
    while day <= NOW:
        events.append(event("sent", created=millis(day), id=f"day-{day:%Y-%m-%d}"))
        day += timedelta(days=1)
    for start in range(0, len(events), 100):
        assert post(client, body(*events[start : start + 100])).status_code == 200
    return len(events)


def test_prune_drops_only_months_wholly_older_than_the_horizon(months_of_events, database_url):
    keep = timedelta(days=400)  # horizon 2025-10-28 12:00
    with psycopg.connect(database_url, autocommit=True) as conn:
        report = retention.prune(conn, keep, now=NOW)
        remaining = conn.execute("SELECT min(created_at), count(*) FROM events").fetchone()
        names = {p.name for p in partitions.list_partitions(conn)}
    assert [name for name, _ in report.dropped] == ["events_2025_09"]
    assert "events_2025_09" not in names and "events_2025_10" in names
    # October straddles the horizon: kept whole, nothing thinned.
    assert remaining == (datetime(2025, 10, 1, tzinfo=UTC), months_of_events - 30)
    assert report.bytes_after < report.bytes_before


def test_dry_run_changes_nothing(months_of_events, database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        report = retention.prune(conn, timedelta(days=400), now=NOW, dry_run=True)
        count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    assert [name for name, _ in report.dropped] == ["events_2025_09"]
    assert count == months_of_events


def test_prune_deletes_old_stray_rows_and_old_resolved_quarantine_only(client, database_url, query):
    old = datetime(2001, 1, 1, tzinfo=UTC)
    post(client, body(event("sent", created=millis(old), id="stray-old")))
    post(client, body(event("sent", created=millis(NOW), id="kept")))
    post(client, b"not json at all")  # quarantined, unresolved: stays whatever its age
    post(client, b"resolved long ago")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE quarantine SET resolved_at = %s, resolution = 'x' WHERE content = %s",
            (datetime(2002, 1, 1, tzinfo=UTC), b"resolved long ago"),
        )
        report = retention.prune(conn, timedelta(days=400), now=NOW)
    assert (report.default_rows_deleted, report.quarantine_rows_deleted) == (1, 1)
    assert query("SELECT event_key FROM events") == [("kept",)]
    assert query("SELECT convert_from(content, 'UTF8') FROM quarantine") == [("not json at all",)]


def test_prune_deletes_the_counts_of_mailings_it_dropped(
    months_of_events, client, database_url, query
):
    def sent(day, key, mailing):
        return event("sent", created=millis(day), id=key, mailingId=mailing, recipientId="r1")

    old, kept = datetime(2025, 9, 15, tzinfo=UTC), datetime(2025, 11, 1, tzinfo=UTC)
    assert post(client, body(sent(old, "m1", 1), sent(kept, "m2", 2))).status_code == 200
    with psycopg.connect(database_url, autocommit=True) as conn:
        report = retention.prune(conn, timedelta(days=400), now=NOW)  # horizon 2025-10-28
    assert report.mailings_deleted == 1
    assert query("SELECT mailing_id, sent FROM mailing_summary") == [(2, 1)]


def test_prune_refuses_a_horizon_inside_the_retry_window(cli_env, capsys):
    assert main(["prune", "--older-than", "5d"]) == 2
    assert "refusing to keep less than 7 days" in capsys.readouterr().err


@pytest.fixture
def cli_env(monkeypatch, database_url):
    monkeypatch.setenv("DATABASE_URL", database_url)


def test_prune_command_reports_what_it_dropped(months_of_events, cli_env, capsys):
    # The command uses the real clock: everything before last year's month is older than 7d.
    assert main(["prune", "--older-than", "30d", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "prune: would drop events_2025_09" in out
    assert main(["partitions"]) == 0
    assert "events_2025_09" in capsys.readouterr().out  # a dry run dropped nothing


def test_prune_while_batches_arrive_fails_none_of_them(months_of_events, client, database_url):
    answers, stop = [], threading.Event()

    def send():
        n = 0
        while not stop.is_set():
            n += 1
            batch = body(
                *(event("sent", created=millis(NOW), id=f"live-{n}-{i}") for i in range(50))
            )
            answers.append(post(client, batch).status_code)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            report = retention.prune(conn, timedelta(days=60), now=NOW)
    finally:
        stop.set()
        sender.join()
    assert len(report.dropped) == 13  # 2025-09 .. 2026-09
    assert answers and set(answers) == {200}


def test_a_dry_run_counts_everything_the_real_run_deletes(client, database_url, query):
    old = datetime(2001, 1, 1, tzinfo=UTC)
    stray = event("sent", created=millis(old), id="stray-old", mailingId=5, recipientId="r1")
    post(client, body(stray))
    post(client, body(event("sent", created=millis(NOW), id="kept")))
    post(client, b"resolved long ago")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE quarantine SET resolved_at = %s, resolution = 'x'", (old,))
        conn.execute(  # a type last seen in 2001, and one seen now
            "INSERT INTO event_shapes (client_id, event_type, events, first_seen_at, last_seen_at)"
            " VALUES (1, 'gone', 1, %s, %s), (1, 'kept', 1, now(), now())",
            (old, old),
        )
        dry = retention.prune(conn, timedelta(days=400), now=NOW, dry_run=True)
        real = retention.prune(conn, timedelta(days=400), now=NOW)
    counted = (
        "default_rows_deleted",
        "quarantine_rows_deleted",
        "mailings_deleted",
        "status_changes_deleted",
        "deliveries_deleted",
        "shapes_forgotten",
    )
    assert {name: getattr(dry, name) for name in counted} == {
        name: getattr(real, name) for name in counted
    }
    assert (dry.default_rows_deleted, dry.quarantine_rows_deleted) == (1, 1)
    assert dry.mailings_deleted == 1 and dry.shapes_forgotten == 1
    assert dry.deliveries_deleted >= 1
    assert query("SELECT event_type FROM event_shapes") == [("kept",)]


def test_a_body_re_sent_after_its_events_were_pruned_is_stored_again(client, database_url):
    """The vendor's 2019 sample, pruned by RECEIVER_RETENTION=400d: the same POST again must
    not be answered "duplicates" by a digest that outlived its events."""
    sample = body(event("sent", created=millis(datetime(2019, 7, 31, tzinfo=UTC)), id="2019"))
    assert post(client, sample).json["stored"] == 1
    with psycopg.connect(database_url, autocommit=True) as conn:
        report = retention.prune(conn, timedelta(days=400))
    assert report.default_rows_deleted == 1 and report.deliveries_deleted >= 1
    again = post(client, sample)
    assert again.status_code == 200
    assert (again.json["stored"], again.json["duplicates"]) == (1, 0)


def test_prune_drops_only_the_tables_it_detached_itself(months_of_events, database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        # An operator archives September by hand; a prune was interrupted after detaching
        # October (its mark, as drop_month sets it in the DETACH's transaction).
        conn.execute("ALTER TABLE events DETACH PARTITION events_2025_09")
        conn.execute("ALTER TABLE events DETACH PARTITION events_2025_10")
        partitions.mark(conn, "events_2025_10", partitions.DETACHED_BY_PRUNE)
        report = retention.prune(conn, timedelta(days=365), now=NOW)  # horizon 2025-12-02
        remaining = {
            name: partitions.table_state(conn, name)
            for name in ("events_2025_09", "events_2025_10")
        }
        archived = conn.execute("SELECT count(*) FROM events_2025_09").fetchone()[0]
    assert report.leftovers_dropped == ["events_2025_10"]
    assert remaining == {"events_2025_09": partitions.FOREIGN, "events_2025_10": None}
    assert archived == 30
