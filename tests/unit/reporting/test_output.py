"""Rendering reports: control characters escaped on a terminal, formulas neutralised in CSV,
JSON exact, and a narrowed table."""

import csv
import io
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from receiver.reporting import output
from receiver.storage.reporting import Report

HOSTILE = {
    "esc": "\x1b[2J\x1b[31mred",
    "cr": "ok\rspoofed",
    "newline": "one\ntwo",
    "bidi": "invoice\u202efdp.exe",
    "isolate": "a\u2066b\u2069",
    "zero_width": "pay\u200bpal",
    "c1": "x\x9b31m",
    "tag": "hi\U000e0041",
}


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (HOSTILE["esc"], "\\x1b[2J\\x1b[31mred"),
        (HOSTILE["cr"], "ok\\x0dspoofed"),
        (HOSTILE["newline"], "one\\x0atwo"),
        (HOSTILE["bidi"], "invoice\\u202efdp.exe"),
        (HOSTILE["isolate"], "a\\u2066b\\u2069"),
        (HOSTILE["zero_width"], "pay\\u200bpal"),
        (HOSTILE["c1"], "x\\x9b31m"),
        (HOSTILE["tag"], "hi\\U000e0041"),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) — ünïcode ok", None),
    ],
)
def test_a_table_cell_shows_control_and_format_characters_escaped(value, shown):
    assert output.printable(value) == (value if shown is None else shown)


def test_no_control_or_format_character_reaches_a_table_or_the_vertical_view():
    report = Report(list(HOSTILE), [HOSTILE])
    for rendered in (output.table(report), output.vertical(report)):
        body = rendered.replace("\n", "")  # the renderer's own line ends
        assert body.isprintable(), repr(body)


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ('=HYPERLINK("http://evil.example","x")', '\'=HYPERLINK("http://evil.example","x")'),
        ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
        ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
        ("@SUM(1+1)", "'@SUM(1+1)"),
        ("\t=1+1", "'\t=1+1"),
        ("\r=1+1", "'\r=1+1"),
        ("https://example.com/a?x=-1", "https://example.com/a?x=-1"),
        ("+491701234567", "+491701234567"),  # a phone number as a recipient id is no formula
        ("-42", "-42"),
        ("-1.5e3", "-1.5e3"),
        (-42, "-42"),  # numbers are never text from a payload
        (Decimal("-0.5000"), "-0.5000"),
        (None, ""),
    ],
)
def test_a_csv_cell_that_a_spreadsheet_would_run_gets_an_apostrophe(value, cell):
    assert output.spreadsheet_safe(value) == cell


def test_spreadsheet_csv_neutralises_text_keeps_numbers_and_json_stays_exact():
    row = {"link": "=1+1", "recipient_id": "@x", "delta": -3, "rate": Decimal("-0.25")}
    report = Report(list(row), [row])
    [cells] = csv.DictReader(io.StringIO(output.render(report, "csv", spreadsheet=True)))
    assert cells == {"link": "'=1+1", "recipient_id": "'@x", "delta": "-3", "rate": "-0.25"}
    [exact] = csv.DictReader(io.StringIO(output.render(report, "csv")))  # for importers
    assert exact == {"link": "=1+1", "recipient_id": "@x", "delta": "-3", "rate": "-0.25"}
    hostile = Report(list(HOSTILE), [HOSTILE])
    assert json.loads(output.as_json(hostile)) == HOSTILE


def test_narrow_keeps_the_columns_named_and_times_to_the_minute_in_utc():
    at = datetime(2026, 1, 1, 10, 30, 59, 123000, tzinfo=timezone(timedelta(hours=1)))
    row = {"mailing_id": 1, "first_event_at": at, "last_event_at": at, "sent": 5}
    narrowed = output.narrow(Report(list(row), [row]), ["mailing_id", "first_event_at", "sent"],
                             to_the_minute={"first_event_at"})  # fmt: skip
    assert narrowed.columns == ["mailing_id", "first_event_at", "sent"]
    assert narrowed.rows == [{"mailing_id": 1, "first_event_at": "2026-01-01T09:30Z", "sent": 5}]
