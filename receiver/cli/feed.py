"""`receiver feed ...`: the change feeds (receiver/storage/feed.py) from a cursor, for scripts.

A run prints everything after --after up to the feed's horizon (or --limit rows), then the
cursor to resume from. The cursor goes to --next-cursor-file, written only once every row is
out, so that a script moves its cursor only after its import succeeded: a failed import runs
again from the same place, and no change is lost or applied twice by the feed.
"""

import os
import sys
import tempfile
from pathlib import Path

import click
import orjson
import psycopg

from ..config import ConfigError
from ..reporting import output
from ..storage import db, feed, reporting
from . import common

# A feed read is an index range scan; a page that takes longer than this is a server in trouble.
STATEMENT_TIMEOUT_MS = 60_000
PAGE = 1000


@click.group(name="feed")
def group():
    """Stored events and status changes from a cursor: no gap and no repeat (uses DATABASE_URL).

    Each run prints what is new since --after (default: the beginning) and ends with the next
    cursor (on stderr, and in --next-cursor-file). Pass that cursor as the next run's --after."""


def feed_options(function):
    options = [
        click.option("--after", "after", metavar="CURSOR", help="the previous run's next cursor"),
        click.option("--client", type=int, help="one Campaign client id (default: every client)"),
        click.option(
            "--limit",
            type=click.IntRange(min=1),
            help="at most this many rows this run (default: everything up to the horizon)",
        ),
        click.option(
            "--format",
            "fmt",
            type=click.Choice(("csv", "json")),
            default="csv",
            show_default=True,
            help="csv (a header line, then one line per row) or json (one object per line)",
        ),
        click.option(
            "--next-cursor-file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="write the next cursor here (atomically) once every row is printed",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@group.command(name="status-changes")
@feed_options
def status_changes_command(after, client, limit, fmt, next_cursor_file):
    """Every change of a recipient's status, in the order it happened.

    One row per change: the new status and the one before (empty for a new recipient), the
    deciding event, `suppress` (true: stop mailing). A CRM applies them in order."""
    return _run(feed.read_status_changes, "id", after, client, limit, fmt, next_cursor_file)


@group.command(name="events")
@feed_options
def events_command(after, client, limit, fmt, next_cursor_file):
    """Every stored event, each exactly once, the payload as received (JSON).

    Events stored before this receiver had the feed (migration 008) are not in it:
    `receiver export --month` has them."""
    return _run(feed.read_events, "event", after, client, limit, fmt, next_cursor_file)


def _run(read, tie, after, client, limit, fmt, next_cursor_file) -> int:
    """Print pages from `after` until the horizon or `limit`; write the next cursor."""
    try:
        cursor = feed.Cursor.parse(after, tie)
    except feed.BadCursor as error:
        raise ConfigError(f"--after: {error}") from None
    printed, header = 0, fmt == "csv"
    try:
        url = common.database_url()
        with db.connect(url, "receiver feed", statement_timeout_ms=STATEMENT_TIMEOUT_MS) as conn:
            while True:
                size = PAGE if limit is None else min(PAGE, limit - printed)
                page = _read(read, conn, cursor, size, client)
                _print(page, fmt, header)
                printed, header, cursor = printed + len(page.rows), False, page.next
                if not page.full or (limit is not None and printed >= limit):
                    break
    except feed.CursorAhead as error:
        raise ConfigError(f"--after: {error}") from None
    except psycopg.Error as error:
        print(f"receiver: feed: database error: {error}", file=sys.stderr)
        return 1
    sys.stdout.flush()
    if next_cursor_file:
        write_atomically(next_cursor_file, f"{cursor}\n")
    click.echo(f"next cursor: {cursor}", err=True)
    return 0


def _read(read, conn, cursor, size, client):
    if read is feed.read_events:
        # As its JSON text, never parsed: an integer beyond 64 bits (or 4,300 digits) is a
        # valid payload that a parser here could refuse, and that event would stop the feed.
        return read(conn, cursor, size, client, payload="text")
    page = read(conn, cursor, size, client)
    for row in page.rows:
        row["suppress"] = row["status"] != "subscribed"
    page.columns = (*page.columns, "suppress")
    return page


def _print(page, fmt, header):
    rows = page.rows
    if fmt == "json":
        # One object per line; the payload embedded as the JSON text it is stored as.
        for row in rows:
            if "payload" in row:
                row["payload"] = orjson.Fragment(row["payload"])
            sys.stdout.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE).decode())
        return
    if not rows and not header:
        return
    # The header even without rows: an importer reads a file of no changes as such.
    text = output.render(reporting.Report(list(page.columns), rows), fmt)
    if fmt == "csv" and not header:
        text = text.partition("\n")[2]
    sys.stdout.write(text)


def write_atomically(path: Path, text: str):
    """Replace `path` with `text` so that a reader sees the old file or the new, never half."""
    path = Path(path)
    fd, temporary = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def register(group_):
    group_.add_command(group)
