"""`receiver report ...` against a database with hand-built events: tables, CSV and JSON."""

import csv
import io
import json
from datetime import UTC, datetime

import pytest

from receiver.cli import main

from support.reporting import CLIENT, MINUTE, T0, deliver, status_event


@pytest.fixture
def report(database_url, monkeypatch, capsys):
    """Run `receiver report ARGS` on the test database; (exit status, stdout)."""
    monkeypatch.setenv("DATABASE_URL", database_url)

    def run(*args):
        status = main(["report", *args])
        return status, capsys.readouterr().out

    return run


def mailing(client):
    deliver(
        client,
        *(status_event("sent", f"r{i}", T0 + i, f"s{i}") for i in range(4)),
        status_event("open", "r1", T0 + MINUTE, "o1", device="mobile", browser="Safari"),
        status_event("click", "r1", T0 + MINUTE, "c1", link="https://example.com/a"),
        status_event("unsubscribe", "r2", T0 + 2 * MINUTE, "u1"),
        status_event("doubleoptin", "r3", T0, "d1"),
    )


def test_mailing_prints_summary_links_and_devices(client, report):
    mailing(client)
    status, out = report("mailing", "1001", "--client", str(CLIENT))
    assert status == 0
    assert "sent                4" in out and "open_rate           0.2500" in out
    assert "https://example.com/a" in out and "mobile" in out


def test_mailings_in_csv_for_a_time_range(client, report):
    mailing(client)
    status, out = report(
        "mailings", "--since", "2025-12-31", "--until", "2026-01-02", "--format", "csv"
    )
    rows = list(csv.DictReader(io.StringIO(out)))
    assert status == 0
    assert [(r["mailing_id"], r["sent"], r["unique_opens"]) for r in rows] == [("1001", "4", "1")]


def test_suppressions_since_exports_changes_by_arrival_as_json(client, report):
    before = datetime.now(UTC).isoformat()
    mailing(client)
    status, out = report("suppressions", "--since", before, "--format", "json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert status == 0
    assert [(r["recipient_id"], r["status"], r["suppress"]) for r in rows] == [
        ("r2", "unsubscribed", True),
        ("r3", "subscribed", False),
    ]  # one batch, one arrival time: then by client and recipient
    status, later = report("suppressions", "--since", "1m", "--until", before, "--format", "json")
    assert (status, later) == (0, "")


def test_recipients_filters_by_status(client, report):
    mailing(client)
    status, out = report("recipients", "--status", "unsubscribed", "--format", "csv")
    assert status == 0
    assert [row["recipient_id"] for row in csv.DictReader(io.StringIO(out))] == ["r2"]


def test_dispatch_and_links_in_tables(client, report):
    now = int(datetime.now(UTC).timestamp() * 1000)
    deliver(client, status_event("sent", "r1", now - MINUTE, "s1"))
    status, out = report("dispatch", "--client", str(CLIENT), "--since", "10m")
    assert status == 0
    assert "seconds_since_last_sent" in out and "delay_p95_s" in out
    mailing(client)
    status, out = report("links", "1001")
    assert status == 0 and out.splitlines()[0].split() == [
        "client_id", "mailing_id", "link", "clicks", "unique_clickers",
    ]  # fmt: skip


def test_an_empty_report_says_so(report):
    assert report("links", "999", "--client", "1") == (0, "(no rows)\n")
