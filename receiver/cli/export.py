"""`receiver export`: the events as Parquet for a warehouse (receiver/export/), and `verify`.

Needs pyarrow (`pip install 'receiver[export]'`); the export modules are imported only once it
is known to be there, so that every other command works without it.
"""

from pathlib import Path

import click
import psycopg

from ..export import ExportBusy, ExportError, require_pyarrow
from ..storage import db
from . import common

# A month's count or a part's read of a large month takes seconds to minutes; a statement that
# takes longer than this is a server in trouble.
STATEMENT_TIMEOUT_MS = 600_000


def directory_option(function):
    return click.option(
        "--dir",
        "directory",
        type=click.Path(file_okay=False, path_type=Path),
        help="the export's folder (events/ and events-feed/ are made in it)",
    )(function)


@click.group(name="export", invoke_without_command=True)
@directory_option
@click.option("--month", "months", multiple=True, metavar="YYYY-MM", help="a month (repeatable)")
@click.option("--feed", "incremental", is_flag=True, help="what is new since the last --feed run")
@click.option(
    "--rows-per-file",
    type=click.IntRange(min=1),
    default=1_000_000,
    show_default=True,
    help="rows per Parquet file (a --feed file ends at a transaction boundary after them)",
)
@click.option(
    "--compression",
    type=click.Choice(("zstd", "snappy", "gzip", "none")),
    default="zstd",
    show_default=True,
)
@click.option(
    "--force",
    is_flag=True,
    help="export a month that may still receive events (export it again once it is closed)",
)
@click.pass_context
def group(ctx, directory, months, incremental, rows_per_file, compression, force):
    """Write the events as Parquet files for a warehouse (uses DATABASE_URL).

    --month YYYY-MM: the month's events in DIR/events/month=YYYY-MM/ (months that may still
    receive events, until 7 days after their end, need --force). --feed: the events stored since
    the last --feed run, in DIR/events-feed/. Either way a re-run finishes an interrupted one and
    does nothing else; each Parquet file is done once its _part-….json manifest is there."""
    ctx.obj = directory
    if ctx.invoked_subcommand:
        return 0
    try:
        if directory is None:
            raise ExportError("give --dir DIR")
        if bool(months) == incremental:
            raise ExportError("give --month YYYY-MM or --feed (one of them)")
        require_pyarrow()
        from ..export import month as monthly

        chosen = sorted({monthly.parse_month(text) for text in months})
        if not force:
            for month in chosen:
                monthly.refuse_open(month)
        return _export(directory, chosen, rows_per_file, compression)
    except ExportError as error:
        return refuse(str(error))


def _export(directory, months, rows_per_file, compression) -> int:
    from ..export import incremental, month, parts

    try:
        with connection() as conn, parts.locked(directory):
            if not months:
                result = incremental.export_feed(
                    conn, directory, rows_per_file, compression, on_part=print_part
                )
                click.echo(
                    f"export: feed: {len(result.written)} part(s), {result.rows:,} rows; "
                    f"cursor {result.start} -> {result.cursor}"
                )
            for chosen in months:
                result = month.export_month(
                    conn, directory, chosen, rows_per_file, compression, on_part=print_part
                )
                click.echo(
                    f"export: {month.label(chosen)}: {done(result)}: {result.parts} part(s), "
                    f"{result.rows:,} rows"
                )
    except ExportBusy as error:
        click.echo(f"receiver: export: {error}; nothing done", err=True)
        return 1
    except psycopg.Error as error:
        click.echo(f"receiver: export: database error: {error}", err=True)
        return 1
    return 0


@group.command(name="verify")
@directory_option
@click.option("--month", "months", multiple=True, metavar="YYYY-MM", help="only this month")
@click.option(
    "--database",
    "against_database",
    is_flag=True,
    help="also compare each month's rows with the database's (what prune --require-export does)",
)
@click.pass_obj
def verify_command(parent_directory, directory, months, against_database):
    """Check the export in DIR: each manifest's sha256 and rows against its Parquet file, the
    parts of each month joined from the first to the final one, the feed's parts end to end.
    Exit status 1 if anything is wrong."""
    directory = directory or parent_directory
    try:
        if directory is None:
            raise ExportError("give --dir DIR")
        require_pyarrow()
        from ..export import incremental, month

        chosen = sorted({month.parse_month(text) for text in months}) or month.exported_months(
            directory
        )
        feed_there = not months and incremental.folder_of(directory).is_dir()
        if not chosen and not feed_there:
            raise ExportError(f"no export in {directory}")
        checks = []
        if chosen:
            if against_database:
                with connection() as conn:
                    checks += [month.verify_month(directory, m, conn) for m in chosen]
            else:
                checks += [month.verify_month(directory, m) for m in chosen]
        if feed_there:
            checks.append(incremental.verify_feed(directory))
    except ExportError as error:
        return refuse(str(error))
    except psycopg.Error as error:
        click.echo(f"receiver: export: database error: {error}", err=True)
        return 1
    for check in checks:
        if check.ok:
            note = f" ({check.note})" if check.note else ""
            click.echo(f"verify: {check.name} ok: {check.parts} part(s), {check.rows:,} rows{note}")
        else:
            click.echo(f"verify: {check.name} FAILED: {check.problem}")
    return 0 if all(check.ok for check in checks) else 1


def done(result) -> str:
    """What an export of a month did, for its line."""
    if not result.pruned:
        return "already exported and verified" if result.skipped else "exported"
    pruned = f"pruned since its export, {result.stored:,} of its events left in the database"
    if result.skipped:
        return f"already exported ({pruned}; none missing from the export)"
    added = sum(m["rows"] for m in result.written)
    return f"{pruned}: {added:,} of them added in late part(s), the other parts unchanged"


def print_part(manifest):
    click.echo(
        f"export: wrote {manifest['file']} ({manifest['rows']:,} rows, "
        f"{manifest['bytes'] / 1e6:.1f} MB)"
    )


def refuse(message) -> int:
    """A user's mistake: one line, exit status 2."""
    click.echo(f"receiver: export: {message}", err=True)
    return 2


def connection():
    return db.connect(
        common.database_url(), "receiver export", statement_timeout_ms=STATEMENT_TIMEOUT_MS
    )


def register(group_):
    group_.add_command(group)
