"""`receiver feed ...`: rows after a cursor as CSV or JSON lines, the next cursor written only
once every row is out."""

import csv
import io
import json

import psycopg
import pytest

from receiver.cli import main
from receiver.storage import feed

from support import post, wait_until
from support.reporting import CLIENT, MINUTE, T0, deliver, status_event


@pytest.fixture
def run_feed(database_url, monkeypatch, capsys):
    """Run `receiver feed ARGS` on the test database; (exit status, stdout, stderr)."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:

        def run(*args):
            # Everything committed so far below the horizon (another test's transaction on
            # the same server holds it back for a moment).
            marker = conn.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0]
            wait_until(lambda: feed.horizon(conn) > marker, timeout=60)
            capsys.readouterr()  # the webhook's request log, from the batches delivered
            status = main(["feed", *args])
            captured = capsys.readouterr()
            return status, captured.out, captured.err

        yield run


def test_status_changes_as_csv_then_only_what_is_new(client, run_feed, tmp_path):
    deliver(client, status_event("singleoptin", "a@x", T0, "o1"))
    deliver(client, status_event("unsubscribe", "a@x", T0 + MINUTE, "u1"))
    cursor_file = tmp_path / "crm.cursor"
    status, out, err = run_feed("status-changes", "--next-cursor-file", str(cursor_file))
    assert status == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["previous_status"], r["status"], r["suppress"]) for r in rows] == [
        ("", "subscribed", "false"),
        ("subscribed", "unsubscribed", "true"),
    ]
    cursor = cursor_file.read_text().strip()
    assert err.strip() == f"next cursor: {cursor}"
    status, out, _ = run_feed("status-changes", "--after", cursor)
    assert (status, list(csv.DictReader(io.StringIO(out)))) == (0, [])
    assert out.startswith("position,id,client_id,recipient_id,status,previous_status,")  # a header
    deliver(client, status_event("doubleoptin", "a@x", T0 + 2 * MINUTE, "o2"))
    status, out, _ = run_feed("status-changes", "--after", cursor, "--format", "json")
    assert [json.loads(line)["status_event_key"] for line in out.splitlines()] == ["o2"]


def test_events_in_pages_across_runs_each_once(client, run_feed, tmp_path):
    deliver(client, *(status_event("open", f"r{i}", T0 + i, f"x{i}") for i in range(5)))
    cursor, seen = "", []
    for _ in range(4):
        status, out, err = run_feed("events", "--after", cursor, "--limit", "2", "--format", "json")
        assert status == 0
        seen += [json.loads(line) for line in out.splitlines()]
        cursor = err.strip().removeprefix("next cursor: ")
    assert [e["event_key"] for e in seen] == [f"x{i}" for i in range(5)]
    assert seen[0]["payload"]["recipientId"] == "r0"  # the payload as received, an object


def test_events_as_csv_carry_the_payload_as_json_text(client, run_feed):
    deliver(client, status_event("click", "r", T0, "c1", link="https://example.com/a,b"))
    status, out, _ = run_feed("events")
    assert status == 0
    (row,) = csv.DictReader(io.StringIO(out))
    assert (row["link"], json.loads(row["payload"])["id"]) == ("https://example.com/a,b", "c1")


def test_a_cursor_it_did_not_write_is_one_line_and_status_2(run_feed, tmp_path):
    cursor_file = tmp_path / "c"
    status, out, err = run_feed(
        "events", "--after", "nonsense", "--next-cursor-file", str(cursor_file)
    )
    assert (status, out) == (2, "")
    assert err.count("\n") == 1 and "not a cursor" in err
    assert not cursor_file.exists()


def test_a_payload_no_parser_here_would_read_is_printed_as_stored(client, run_feed):
    huge = "9" * 5000  # valid JSON; Python's int() refuses more than 4,300 digits
    batch = f'[{{"type":"open","id":"big","clientId":{CLIENT},"created":{T0},"n":{huge}}}]'
    assert post(client, batch.encode()).status_code == 200
    status, out, _ = run_feed("events", "--format", "json")
    assert status == 0
    assert f'"n":{huge}' in out.replace(" ", "")


def test_times_at_the_edge_of_the_range_read_back_in_any_server_time_zone(
    client, run_feed, database_url
):
    """Read in the server's zone, 9999-12-31T23:59:59.999Z is in year 10000: beyond Python's
    datetime. The receiver reads in UTC, so that event cannot stop the feed."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        name = conn.info.dbname
        conn.execute(f"ALTER DATABASE \"{name}\" SET timezone = 'Europe/Berlin'")
    deliver(client, status_event("unsubscribe", "edge", 253_402_300_799_999, "last-ms"))
    status, out, _ = run_feed("status-changes", "--format", "json")
    assert status == 0
    assert json.loads(out)["status_at"] == "9999-12-31T23:59:59.999000+00:00"


def test_a_cursor_ahead_of_the_database_is_one_line_and_status_2(run_feed, database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        ahead = feed.horizon(conn) + 1000
    status, out, err = run_feed("events", "--after", str(ahead))
    assert (status, out) == (2, "")
    assert "ahead of this database" in err and err.count("\n") == 1
