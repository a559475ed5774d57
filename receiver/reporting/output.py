"""Render a storage.reporting.Report as an aligned table, CSV or JSON lines."""

import csv
import dataclasses
import io
import json
import re
from datetime import UTC, datetime
from decimal import Decimal

FORMATS = ("table", "csv", "json")
# Payload text (device, browser, link, recipient, ...) comes from the network. On a terminal its
# control characters (ESC sequences, CR, C1) and Unicode format characters (bidi overrides,
# zero-width, line separators) would move the cursor, recolour or reorder what the operator
# reads, so a table shows them escaped (as Python writes them; a backslash itself stays as is).
_UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff"
    "\ufff9-\ufffb\U000e0000-\U000e007f]"
)
# OWASP CSV injection: a spreadsheet runs a cell that starts with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# ... but a plain number (a negative count, a +49... phone number as a recipient id) is no
# formula, and an apostrophe in front would change the value a CRM imports.
_PLAIN_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?([eE][+-]?\d+)?", re.ASCII)


def text(value) -> str:
    """A value as a table or CSV cell: empty for null, ISO 8601 for times."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def printable(value) -> str:
    """A cell for a terminal: control and format characters as escapes (\\x1b, \\u202e)."""
    return _UNPRINTABLE.sub(_escape, text(value))


def _escape(match) -> str:
    """The matched character as Python writes it in a string literal."""
    code = ord(match.group())
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def spreadsheet_safe(value) -> str:
    """A CSV cell: text that a spreadsheet would run as a formula gets a leading apostrophe.

    Only text (what payloads carry): numbers, times and booleans are never formulas."""
    cell = text(value)
    formula = cell.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(cell)
    return "'" + cell if isinstance(value, str) and formula else cell


def jsonable(value):
    """A value for JSON: numbers stay numbers (Decimal rates become floats)."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def table(report) -> str:
    """Columns aligned, numbers right-aligned; '(no rows)' for an empty report."""
    if not report.rows:
        return "(no rows)\n"
    cells = [[printable(row[name]) for name in report.columns] for row in report.rows]
    widths = [
        max(len(name), *(len(line[i]) for line in cells)) for i, name in enumerate(report.columns)
    ]
    numeric = [all(_is_number(row[name]) for row in report.rows) for name in report.columns]
    lines = [
        "  ".join(name.ljust(w) for name, w in zip(report.columns, widths, strict=True)).rstrip()
    ]
    for line in cells:
        parts = [
            cell.rjust(w) if right else cell.ljust(w)
            for cell, w, right in zip(line, widths, numeric, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines) + "\n"


def _is_number(value) -> bool:
    if isinstance(value, bool):
        return False
    return value is None or isinstance(value, int | float | Decimal)


def as_csv(report, spreadsheet=False) -> str:
    """A header line, then one line per row; with `spreadsheet`, text that a spreadsheet would
    run as a formula neutralised (spreadsheet_safe), else every value exact."""
    cell = spreadsheet_safe if spreadsheet else text
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(report.columns)
    writer.writerows([cell(row[name]) for name in report.columns] for row in report.rows)
    return out.getvalue()


def as_json(report) -> str:
    """One JSON object per line (streams into jq and CRM importers alike)."""
    return "".join(
        json.dumps({name: jsonable(row[name]) for name in report.columns}) + "\n"
        for row in report.rows
    )


def render(report, fmt="table", spreadsheet=False) -> str:
    """The report in one of FORMATS; `spreadsheet`: CSV for people to open (as_csv)."""
    if fmt == "csv":
        return as_csv(report, spreadsheet)
    return {"table": table, "json": as_json}[fmt](report)


def vertical(report) -> str:
    """One `column  value` line per column and row (for a single wide row: one mailing)."""
    if not report.rows:
        return "(no rows)\n"
    width = max(len(name) for name in report.columns)
    blocks = [
        "\n".join(f"{name.ljust(width)}  {printable(row[name])}" for name in report.columns)
        for row in report.rows
    ]
    return "\n\n".join(blocks) + "\n"


def narrow(report, columns, to_the_minute=()):
    """The report with only `columns`, for a table that fits a terminal; the times in
    `to_the_minute` shortened to 2026-01-01T09:30Z (UTC)."""
    rows = [
        {name: _minute(row[name]) if name in to_the_minute else row[name] for name in columns}
        for row in report.rows
    ]
    return dataclasses.replace(report, columns=list(columns), rows=rows)


def _minute(value):
    """A time as 2026-01-01T09:30Z (UTC, to the minute); anything else as it is."""
    if not isinstance(value, datetime):
        return value
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")
