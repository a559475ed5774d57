"""`receiver maintain`, `receiver prune`, `receiver partitions`: keeping years of events."""

import time

import click

from ..maintenance import retention, tasks
from ..storage import db, partitions
from . import common


class Retention(click.ParamType):
    """How long to keep events: 400d, 57w, 13m or 1y, never less than the minimum."""

    name = "DURATION"

    def convert(self, value, param, ctx):
        try:
            keep = retention.parse_duration(value)
            retention.horizon_for(keep)  # refused here, before anything is touched
        except retention.RetentionError as error:
            self.fail(str(error), param, ctx)
        return keep


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
def maintain(retention, every):
    """Create the coming months' partitions, move stray events into their months, and apply
    the retention if one is set. Safe to run anywhere, any time: passes take turns."""
    while True:
        with connection() as conn:
            report = tasks.maintain(conn, keep=retention)
        print_maintenance(report)
        if not every:
            return 0
        time.sleep(every)


@click.command()
@click.option(
    "--older-than",
    "older_than",
    type=Retention(),
    required=True,
    help="drop what is older than this, e.g. 400d (at least 7d)",
)
@click.option("--dry-run", is_flag=True, help="say what would go, change nothing")
def prune(older_than, dry_run):
    """Drop whole months of events older than the horizon (and stray old events in the default
    partition), and quarantine rows resolved before it, without stopping ingest."""
    with connection() as conn:
        report = retention.prune(conn, older_than, dry_run=dry_run)
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
    return db.connect(common.database_url(), "receiver maintenance", lock_timeout_ms=1000)


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
    if report.pruned:
        print_prune(report.pruned)


def print_prune(report):
    verb = "would drop" if report.dry_run else "dropped"
    click.echo(f"prune: horizon {report.horizon:%Y-%m-%d %H:%M}Z")
    for name, nbytes in report.dropped:
        click.echo(f"prune: {verb} {name} ({size(nbytes)})")
    if not report.dropped:
        click.echo("prune: no month is wholly older than the horizon")
    if not report.dry_run:
        click.echo(
            f"prune: {report.default_rows_deleted} stray old event(s) deleted, "
            f"{report.quarantine_rows_deleted} resolved quarantine row(s) deleted, "
            f"counts of {report.mailings_deleted} mailing(s) deleted"
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
