"""`receiver maintain`, `receiver prune`, `receiver partitions`: keeping years of events."""

import time
from pathlib import Path

import click
import psycopg

from ..config import ConfigError
from ..maintenance import retention, tasks
from ..reporting import output
from ..storage import db, partitions
from . import common


class Retention(click.ParamType):
    """How long to keep events: 400d, 57w, 13mo or 1y, never less than the minimum."""

    name = "DURATION"

    def convert(self, value, param, ctx):
        try:
            keep = retention.parse_duration(value)
            retention.horizon_for(keep)  # refused here, before anything is touched
        except retention.RetentionError as error:
            self.fail(str(error), param, ctx)
        return keep


def require_export_option(function):
    return click.option(
        "--require-export",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="RECEIVER_PRUNE_REQUIRE_EXPORT",
        metavar="DIR",
        help="drop a month only if its `receiver export --month` in DIR is verified: every "
        "checksum, and every row the database has for it (default $RECEIVER_PRUNE_REQUIRE_EXPORT)",
    )(function)


@click.command()
@click.option(
    "--retention",
    type=Retention(),
    envvar="RECEIVER_RETENTION",
    help="drop months of events older than this, e.g. 400d (default "
    "$RECEIVER_RETENTION; unset keeps everything)",
)
@click.option(
    "--every",
    type=click.IntRange(min=60),
    metavar="SECONDS",
    help="run again every SECONDS, forever (a Procfile process); default once",
)
@require_export_option
def maintain(retention, every, require_export):
    """Create the coming months' partitions, move stray events into their months, and apply
    the retention if one is set. Safe to run anywhere, any time: passes take turns.

    Every step runs even if another fails; the exit status is then 1, naming the failed steps.
    With --every, a pass that fails (the database away, say) is reported and the next one
    comes on time: the process keeps going, as a timer would."""
    keep_month = export_guard(require_export)
    while True:
        if not every:
            return run_pass(retention, keep_month)
        try:
            run_pass(retention, keep_month)
        except (psycopg.OperationalError, common.CommandError) as error:
            # The database away (at connect: CommandError, one line already) is a pass that
            # failed, not a reason for the process to end: the next one comes on time.
            reason = tasks.one_line(error)
            click.echo(f"maintain: pass failed, next in {every} s: {reason}", err=True)
        time.sleep(every)


def run_pass(retention, keep_month) -> int:
    """One maintenance pass, printed; 0 if every step succeeded, else 1."""
    with connection() as conn:
        report = tasks.maintain(conn, keep=retention, keep_month=keep_month)
    print_maintenance(report)
    return 0 if report.ok else 1


@click.command()
@click.option(
    "--older-than",
    "older_than",
    type=Retention(),
    required=True,
    help="drop what is older than this, e.g. 400d (at least 7d)",
)
@click.option("--dry-run", is_flag=True, help="say what would go, change nothing")
@require_export_option
def prune(older_than, dry_run, require_export):
    """Drop whole months of events older than the horizon (and stray old events in the default
    partition), and quarantine rows resolved before it, without stopping ingest."""
    keep_month = export_guard(require_export)
    with connection() as conn:
        report = retention.prune(conn, older_than, dry_run=dry_run, keep_month=keep_month)
    print_prune(report)
    return 0


@click.command(name="partitions")
def list_partitions():
    """List the partitions of `events` with their sizes."""
    with connection() as conn:
        rows = partitions.list_partitions(conn)
    click.echo(f"{'partition':<16}  {'rows (est.)':>12}  {'size':>10}  {'indexes':>10}  range")
    for p in rows:
        click.echo(
            f"{p.name:<16}  {max(p.estimated_rows, 0):>12,}  {size(p.bytes):>10}  "
            f"{size(p.index_bytes):>10}  {p.bound}"
        )
    return 0


def connection():
    return db.connect(
        common.database_url(),
        "receiver maintenance",
        lock_timeout_ms=1000,
        statement_timeout_ms=tasks.STATEMENT_TIMEOUT_MS,
    )


def export_guard(directory):
    """With an export folder: `keep_month(conn, month)` for retention.prune, the reason a month's
    export there is not verified (None: it is). Without one: None, prune as ever."""
    if directory is None:
        return None
    from ..export import ExportError, require_pyarrow

    try:
        require_pyarrow()
    except ExportError as error:
        raise ConfigError(f"--require-export: {error}") from None
    from ..export import month as exported

    def keep_month(conn, month):
        check = exported.verify_month(directory, month, conn)
        return None if check.ok else f"export not verified: {check.problem}"

    return keep_month


def print_maintenance(report):
    if report.skipped:
        click.echo("maintain: another maintenance pass is running; nothing done")
        return
    created = ", ".join(report.created) or "none"
    click.echo(f"maintain: partitions created: {created}")
    for name, rows in report.split:
        click.echo(f"maintain: {rows} event(s) moved from events_default into {name}")
    if report.moved_old_rows:
        click.echo(f"maintain: {report.moved_old_rows} event(s) moved from events_unpartitioned")
    if report.rolled_up:
        click.echo(f"maintain: mailing_counts of {report.rolled_up} mailing(s) rolled up")
    if report.deliveries_deleted:
        click.echo(f"maintain: {report.deliveries_deleted} expired delivery digest(s) deleted")
    if report.learned and report.learned.events:
        print_shapes(report.learned)
    if report.pruned:
        print_prune(report.pruned)
    for step, error in report.failed:
        click.echo(f"maintain: FAILED {step}: {error}", err=True)


def print_shapes(report):
    behind = "" if report.caught_up else " (more to count: the next pass goes on)"
    click.echo(f"maintain: {report.events} event(s) counted into what Campaign sends{behind}")
    for change in report.changes:
        where = ".".join(filter(None, (change["type"], change["field"])))
        what = f" {change['kind']}" if change["change"] == "kind_changed" else ""
        value = f" {change['value']!r}" if change["value"] is not None else ""
        # Type and field names come from the network: escaped for the terminal.
        line = f"{change['change']} {where}{what}{value} (client {change['client_id']}"
        click.echo(
            f"maintain: Campaign change: {output.printable(line)}; `receiver report schema`)"
        )


def print_prune(report):
    verb = "would drop" if report.dry_run else "dropped"
    click.echo(f"prune: horizon {report.horizon:%Y-%m-%d %H:%M}Z")
    for name in report.leftovers_dropped:
        click.echo(f"prune: {verb} {name} (detached by an earlier, interrupted prune)")
    for name, nbytes in report.dropped:
        click.echo(f"prune: {verb} {name} ({size(nbytes)})")
    for month, why in report.kept:
        click.echo(f"prune: kept {month:%Y-%m}: {why}")
    if not report.dropped and not report.kept:
        click.echo("prune: no month is wholly older than the horizon")
    deleted = "would delete" if report.dry_run else "deleted"
    click.echo(
        f"prune: {deleted} {report.default_rows_deleted} stray old event(s), "
        f"{report.quarantine_rows_deleted} resolved quarantine row(s), "
        f"the counts of {report.mailings_deleted} mailing(s), "
        f"{report.status_changes_deleted} superseded status change(s), "
        f"{report.deliveries_deleted} delivery digest(s), "
        f"{report.shapes_forgotten} shape(s) of what Campaign sent only before it"
    )
    click.echo(f"prune: events take {size(report.bytes_before)} -> {size(report.bytes_after)}")


def size(nbytes: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(nbytes) < 1024 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} TB"


def register(group):
    for command in (maintain, prune, list_partitions):
        group.add_command(command)
