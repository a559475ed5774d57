"""`receiver report ...` against a database with hand-built events: tables, CSV and JSON."""

import csv
import io
import json
from datetime import UTC, datetime

import pytest

from receiver.cli import main

from support.reporting import CLIENT, MINUTE, OTHER_CLIENT, T0, deliver, status_event


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


def test_dispatch_for_one_client_lists_only_that_clients_last_sent(client, report):
    now = int(datetime.now(UTC).timestamp() * 1000)
    deliver(client, status_event("sent", "r1", now - MINUTE, "s1"))
    deliver(client, status_event("sent", "r1", now - MINUTE, "s2", client_id=OTHER_CLIENT))
    status, out = report("dispatch", "--client", str(OTHER_CLIENT), "--since", "10m")
    last_sent = out.split("\n\n")[0].splitlines()
    assert status == 0
    assert [line.split()[0] for line in last_sent[1:]] == [str(OTHER_CLIENT)]
    status, out = report("dispatch", "--since", "10m")
    last_sent = out.split("\n\n")[0].splitlines()
    assert [line.split()[0] for line in last_sent[1:]] == [str(CLIENT), str(OTHER_CLIENT)]


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_an_unknown_mailing_is_an_error_on_stderr(client, database_url, monkeypatch, capsys, fmt):
    monkeypatch.setenv("DATABASE_URL", database_url)
    mailing(client)
    capsys.readouterr()  # the webhook's request log
    assert main(["report", "mailing", "999", "--format", fmt]) == 1
    assert capsys.readouterr() == ("", "receiver: report: no mailing 999\n")
    assert main(["report", "mailing", "1001", "--client", str(OTHER_CLIENT), "--format", fmt]) == 1
    missing = f"receiver: report: no mailing 1001 of client {OTHER_CLIENT}\n"
    assert capsys.readouterr() == ("", missing)
