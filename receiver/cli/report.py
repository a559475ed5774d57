"""`receiver report ...`: the reporting views as tables on a terminal, CSV or JSON for scripts."""

import re
import sys
from datetime import UTC, datetime

import click
import orjson
import psycopg

from .. import durations
from ..reporting import output
from ..storage import db, reporting, shapes
from . import common
from .quarantine import Timestamp

# A report is a read; it never waits long for anything.
STATEMENT_TIMEOUT_MS = 60_000
# A number then letters is meant as a duration, never an ISO time: its error is the duration's.
_AGO = re.compile(r"\d+\s*[a-z]+", re.IGNORECASE)
STATUSES = ("subscribed", "unsubscribed", "hardbounced", "complained", "blocklisted")
# `report mailings` as a table: the columns that fit 120 terminal columns with 12-digit client
# and mailing ids and up to 9,999,999 sent. --wide, csv and json have every column.
MAILINGS_TABLE = (
    "client_id", "mailing_id", "first_event_at", "sent", "unique_opens", "unique_clicks",
    "open_rate", "click_rate", "bounce_rate",
)  # fmt: skip


class NotFound(Exception):
    """What the report is about does not exist; the message says what (exit status 1)."""


class Moment(Timestamp):
    """An ISO 8601 time (UTC unless it says otherwise), or a time ago (receiver.durations):
    10m, 2h, 30d, 6w, 3mo, 1y."""

    name = "TIME"

    def convert(self, value, param, ctx):
        if isinstance(value, str) and _AGO.fullmatch(value.strip()):
            try:
                return datetime.now(UTC) - durations.parse_duration(value)
            except ValueError as error:
                self.fail(str(error), param, ctx)
            except OverflowError:
                self.fail(f"{value!r} ago is before the year 1", param, ctx)
        return super().convert(value, param, ctx)


def client_option(function):
    return click.option("--client", type=int, help="Campaign client id (default: every client)")(
        function
    )


def format_option(function):
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(output.FORMATS),
        default="table",
        show_default=True,
        help="table for a terminal, csv or json (one object per line) for scripts",
    )(function)


def range_options(default_since):
    """--since/--until options; --since defaults to `default_since` ago, --until to now."""

    def decorate(function):
        function = click.option("--until", type=Moment(), help="end, exclusive (default: now)")(
            function
        )
        return click.option(
            "--since", type=Moment(), default=default_since, show_default=True, help="start"
        )(function)

    return decorate


@click.group(name="report")
def group():
    """Campaign reporting, recipient statuses and dispatch from the events (uses DATABASE_URL).

    Times are ISO 8601 (UTC unless they carry an offset) or a time ago: 90s, 10m or 10min
    (minutes), 2h, 30d, 6w, 3mo (30-day months), 1y (365 days)."""


@group.command(name="mailings")
@client_option
@range_options("30d")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option(
    "--wide", is_flag=True, help="every column in the table too (csv and json always have them)"
)
@format_option
def mailings_command(client, since, until, limit, wide, fmt):
    """One line per mailing that sent in the time range: the funnel and its rates.

    The table shows the main columns (time to the minute, UTC), to fit a terminal; --wide, csv
    and json show every one: each count and rate, first and last event times."""

    def work(conn):
        report = reporting.mailings(conn, since, _now(until), client, limit)
        if fmt != "table" or wide:
            return report
        return output.narrow(report, MAILINGS_TABLE, to_the_minute={"first_event_at"})

    return _run(fmt, work)


@group.command(name="mailing")
@click.argument("mailing_id", type=int)
@client_option
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@format_option
def mailing_command(mailing_id, client, limit, fmt):
    """One mailing: its summary, top links and opens by device (csv/json: the summary only).
    Exit status 1 if there is no such mailing (of that client)."""

    def work(conn):
        summary = reporting.mailing(conn, mailing_id, client)
        if not summary.rows:
            of_client = "" if client is None else f" of client {client}"
            raise NotFound(f"no mailing {mailing_id}{of_client}")
        if fmt != "table":
            return summary
        click.echo(output.vertical(summary), nl=False)
        click.echo("\ntop links")
        click.echo(output.table(reporting.links(conn, mailing_id, client, limit)), nl=False)
        click.echo("\nopens by device, operating system and browser")
        return reporting.devices(conn, mailing_id, client, limit)

    return _run(fmt, work)


@group.command(name="links")
@click.argument("mailing_id", type=int)
@client_option
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@format_option
def links_command(mailing_id, client, limit, fmt):
    """A mailing's clicked links: clicks and distinct clickers, most clicked first."""
    return _run(fmt, lambda conn: reporting.links(conn, mailing_id, client, limit))


@group.command(name="recipients")
@client_option
@click.option("--recipient", help="one recipient id")
@click.option("--status", type=click.Choice(STATUSES))
@click.option("--since", type=Moment(), help="status decided (event created) at or after")
@click.option("--until", type=Moment(), help="status decided before")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
@format_option
def recipients_command(client, recipient, status, since, until, limit, fmt):
    """Current statuses from recipient_status, by recipient id."""
    filters = {"recipient": recipient, "status": status, "since": since, "until": until}
    return _run(fmt, lambda conn: reporting.recipients(conn, client, limit=limit, **filters))


@group.command(name="suppressions")
@client_option
@click.option("--since", type=Moment(), required=True, help="changes that arrived since then")
@click.option("--until", type=Moment(), help="... and before then (default: now)")
@format_option
def suppressions_command(client, since, until, fmt):
    """Every recipient whose status changed in [--since, --until) by arrival: an ad-hoc window.

    Not for a sync: a batch in flight at --until can be in neither this window nor the next.
    A CRM sync reads `receiver feed status-changes`, which resumes from a cursor with no gap."""
    return _run(fmt, lambda conn: reporting.suppressions(conn, since, _now(until), client))


@group.command(name="dispatch")
@client_option
@click.option("--mailing", "mailing_id", type=int, help="one mailing")
@range_options("1h")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
@format_option
def dispatch_command(client, mailing_id, since, until, limit, fmt):
    """`sent` per minute with the arrival delay (p50, p95), after the time since each
    client's (or --client's) last `sent` (table format)."""

    def work(conn):
        if fmt == "table":
            click.echo(output.table(reporting.last_sent(conn, client)))
        return reporting.dispatch(conn, since, _now(until), client, mailing_id, limit)

    return _run(fmt, work)


# `report schema`: the columns of a shape, and of a change to review.
SHAPE_COLUMNS = (
    "client_id", "event_type", "field", "kind", "value", "events", "first_seen_at",
    "last_seen_at", "status",
)  # fmt: skip
CHANGE_COLUMNS = ("id", *SHAPE_COLUMNS)
EXPORT_COLUMNS = (
    "id", *SHAPE_COLUMNS, "documented", "change", "reviewed_at", "daily", "silent", "example"
)  # fmt: skip


@group.command(name="schema")
@client_option
@click.option(
    "--since", type=Moment(), help="only what was first seen since then (and silent types)"
)
@click.option("--accept", is_flag=True, help="mark the changes and silent types shown as reviewed")
@format_option
def schema_command(client, since, accept, fmt):
    """What Campaign sends, learned from the stored events: per client, each event type, its
    top-level fields with their JSON kinds, and the values of the enumerations the reports
    use (bounce category and reason, mediaType, device), with counts and first and last
    arrival. First the changes to review (new type, new field, kind changed, new value; each
    with a masked example event) and the types that stopped arriving.

    --accept marks exactly those shown as reviewed: the receiver_campaign_changes series go
    back to 0 within a minute. A change noticed later is shown (and alerts) on its own."""

    def work(conn):
        rows, pending = _schema_rows(conn, client, since)
        if accept:
            # Exactly those shown: a change noticed after this read is not accepted unseen.
            accepted = shapes.accept(conn, [r["id"] for r in pending])
            click.echo(
                f"schema: {len(accepted)} change(s) and silent type(s) marked reviewed", err=True
            )
            rows, pending = _schema_rows(conn, client, since)  # as they stand now
        if fmt != "table":
            for row in rows:
                if fmt == "csv" and row["example"] is not None:
                    row["example"] = orjson.dumps(row["example"]).decode()
            return reporting.Report(list(EXPORT_COLUMNS), rows)
        pending = [row for row in pending if not _part_of_a_new_type(row)]
        _print_schema_header(conn, pending)
        for row in pending:
            if row["example"] is not None:
                example = orjson.dumps(row["example"]).decode()
                click.echo(output.printable(f"  example of {row['id']} (masked): {example}"))
        # One client (the usual deployment): said once above the table, not on every line.
        clients = {row["client_id"] for row in rows}
        columns = SHAPE_COLUMNS[1:] if len(clients) == 1 else SHAPE_COLUMNS
        of_client = f" (client {next(iter(clients))})" if len(clients) == 1 else ""
        click.echo(f"\nwhat Campaign sends{of_client}")
        return output.narrow(
            reporting.Report(list(SHAPE_COLUMNS), rows),
            columns,
            to_the_minute={"first_seen_at", "last_seen_at"},
        )

    return _run(fmt, work)


def _schema_rows(conn, client, since):
    """The shapes, each with its status, and those to review (a new type's fields are part of
    it: reviewed with it, listed under it in the table below)."""
    rows = shapes.report_rows(conn, client, since)
    for row in rows:
        row["status"] = _shape_status(row)
    return rows, [r for r in rows if (r["change"] and not r["reviewed_at"]) or r["silent"]]


def _part_of_a_new_type(row) -> bool:
    return row["change"] == "new_type" and row["field"] is not None


def _shape_status(row) -> str:
    """What a shape is, in a word: a change (to review or reviewed), silent, or known."""
    if row["silent"]:
        return "silent"
    if row["change"]:
        return row["change"] + (" (reviewed)" if row["reviewed_at"] else "")
    return "documented" if row["documented"] else "baseline"


def _print_schema_header(conn, pending):
    """When the shapes were last learned, then the changes and silent types to review."""
    learned = shapes.learned_until(conn)
    when = f"{learned:%Y-%m-%d %H:%M:%S}Z" if learned else "never (no pass has run yet)"
    click.echo(f"learned from the stored events up to {when}")
    if not pending:
        click.echo("nothing to review")
        return
    click.echo(
        f"\nto review ({len(pending)}): `receiver report schema --accept` marks them reviewed"
    )
    report = reporting.Report(list(CHANGE_COLUMNS), pending)
    click.echo(
        output.table(output.narrow(report, report.columns, {"first_seen_at", "last_seen_at"})),
        nl=False,
    )


def _now(until):
    return until or datetime.now(UTC)


def _run(fmt, work) -> int:
    """Run `work(conn)` on a fresh connection and print its report; 1 on a database error or
    if what it reports on does not exist."""
    try:
        url = common.database_url()
        # JIT off: it spends seconds compiling aggregates that run in milliseconds to seconds.
        with db.connect(
            url, "receiver report", statement_timeout_ms=STATEMENT_TIMEOUT_MS, jit=False
        ) as conn:
            # color=True: written as rendered. Tables escape control characters themselves;
            # click's stripping of ANSI codes when piped would silently alter CSV values.
            # A report's CSV is opened in spreadsheets: formulas from payloads neutralised.
            text = output.render(work(conn), fmt, spreadsheet=True)
            click.echo(text, nl=False, color=True)
    except psycopg.Error as error:
        print(f"receiver: report: database error: {error}", file=sys.stderr)
        return 1
    except NotFound as missing:
        print(f"receiver: report: {missing}", file=sys.stderr)
        return 1
    return 0


def register(group_):
    group_.add_command(group)
