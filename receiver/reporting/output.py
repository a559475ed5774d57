"""Render a storage.reporting.Report as an aligned table, CSV or JSON lines."""

import csv
import io
import json
from datetime import datetime
from decimal import Decimal

FORMATS = ("table", "csv", "json")


def text(value) -> str:
    """A value as a table or CSV cell: empty for null, ISO 8601 for times."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


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
    cells = [[text(row[name]) for name in report.columns] for row in report.rows]
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


def as_csv(report) -> str:
    """A header line, then one line per row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(report.columns)
    writer.writerows([text(row[name]) for name in report.columns] for row in report.rows)
    return out.getvalue()


def as_json(report) -> str:
    """One JSON object per line (streams into jq and CRM importers alike)."""
    return "".join(
        json.dumps({name: jsonable(row[name]) for name in report.columns}) + "\n"
        for row in report.rows
    )


def render(report, fmt="table") -> str:
    """The report in one of FORMATS."""
    return {"table": table, "csv": as_csv, "json": as_json}[fmt](report)


def vertical(report) -> str:
    """One `column  value` line per column and row (for a single wide row: one mailing)."""
    if not report.rows:
        return "(no rows)\n"
    width = max(len(name) for name in report.columns)
    blocks = [
        "\n".join(f"{name.ljust(width)}  {text(row[name])}" for name in report.columns)
        for row in report.rows
    ]
    return "\n\n".join(blocks) + "\n"
