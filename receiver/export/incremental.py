"""The events feed as parts: `DIR/events-feed/part-<from>-<to>.parquet`, a manifest each, and
`_cursor`, the position the next run starts from.

A part holds the feed's events at positions from <from> up to, not including, <to> (each a
position of receiver/storage/feed.py, 20 digits, so that names sort in feed order). Every
position below <to> is final when the part is written (<to> is at most the feed's horizon), so
the rows of a range never change: an interrupted part is written again over the same rows,
bytes for bytes, under the same name. A part ends at the horizon (the feed's `next`), or at the
first transaction boundary after `rows_per_file` rows: a transaction's events are never split,
so every boundary is a plain position, and a name needs no tie-break.

The order of a run: the part, durable; its manifest, durable; then `_cursor` moves to <to>.
The next run starts at `_cursor`: a part found there is the one an interruption left behind.
With a matching manifest it only needs the cursor moved; without, it is written again, from
<from> to the <to> in its name. No range is skipped, none exported twice. One with a manifest
that no longer matches its file is written again only if the database still has as many events
in its range as the manifest counts (a final range only loses events, to a prune): an export
never removes an event the database no longer has. A run that finds
nothing new leaves the cursor where it is, so that each part starts where the one before it
ended, from position 0 on: a gap between two parts is a loss `verify` can see.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..storage import feed
from . import ExportError, parts, schema
from .month import Check

FOLDER = "events-feed"
CURSOR = "_cursor"
PAGE_ROWS = 10_000
PART = re.compile(r"_?part-(\d{20})-(\d{20})\.(parquet|json)")
COUNT = (
    "SELECT count(*) FROM events WHERE xid >= %(start)s::text::xid8 AND xid < %(end)s::text::xid8"
)


@dataclass
class FeedResult:
    """What an export of the feed did."""

    start: int
    cursor: int = 0
    written: list = field(default_factory=list)  # manifests of the parts written this run
    rows: int = 0


def folder_of(root: Path) -> Path:
    return Path(root) / FOLDER


def part_name(start: int, end: int) -> str:
    return f"part-{start:020d}-{end:020d}.parquet"


def read_cursor(folder: Path) -> int:
    """The position the next part starts at (0, the beginning, without a cursor file)."""
    path = folder / CURSOR
    if not path.exists():
        return 0
    text = path.read_text().strip()
    try:
        cursor = feed.Cursor.parse(text, "event")
    except feed.BadCursor:
        cursor = None
    if cursor is None or cursor.tie is not None:
        raise ExportError(f"{path} does not hold a position this export wrote: {text[:80]!r}")
    return cursor.position


def export_feed(
    conn,
    root: Path,
    rows_per_file: int = 1_000_000,
    compression: str = "zstd",
    on_part=None,
    page_rows: int = PAGE_ROWS,
) -> FeedResult:
    """Export the feed's events from `_cursor` up to its horizon; `on_part(manifest)` hears of
    each part written. `conn` in autocommit; the caller holds parts.locked(root)."""
    folder = folder_of(root)
    folder.mkdir(parents=True, exist_ok=True)
    parts.remove_temporaries(folder)
    position = read_cursor(folder)
    result = FeedResult(position, position)
    while True:
        end, manifest, capped = _next_part(
            conn, folder, position, rows_per_file, compression, page_rows
        )
        if manifest is not None:
            result.written.append(manifest)
            result.rows += manifest["rows"]
            if on_part:
                on_part(manifest)
        if end > position:
            parts.write_durably(folder / CURSOR, f"{feed.Cursor(end)}\n")
            position = result.cursor = end
        if not capped:
            return result


def _next_part(conn, folder, start, rows_per_file, compression, page_rows):
    """The part that starts at `start`: (its end, the manifest written or None, whether more
    may follow). One left by an interrupted run is finished or redone over its own range."""
    found = parts_at(folder, start)
    if found is not None:
        name = part_name(start, found)
        manifest, problem = parts.check(folder, name)
        if problem is None:
            return found, None, True  # done before; only the cursor did not move
        refuse_shrinking(conn, folder, name, manifest, problem, start, found)
        parts.remove_part(folder, name)
        end, manifest, _ = write_part(
            conn, folder, start, found, rows_per_file, compression, page_rows
        )
        return end, manifest, True
    return write_part(conn, folder, start, None, rows_per_file, compression, page_rows)


def refuse_shrinking(conn, folder, name, manifest, problem, start, end) -> None:
    """ExportError unless the part `name` (found wrong: `problem`) may be written again: it was
    never finished (no manifest), or the database has as many events from `start` to `end` as
    it holds (its manifest says, or failing that its file)."""
    if not (folder / parts.manifest_name(name)).exists():
        return
    held = manifest.get("rows") if isinstance(manifest, dict) else None
    if not isinstance(held, int):
        try:
            held = pq.read_metadata(folder / name).num_rows
        except (OSError, pa.ArrowException):
            held = None
    if held is not None:
        stored = conn.execute(COUNT, {"start": str(start), "end": str(end)}).fetchone()[0]
        if stored >= held:
            return
    raise ExportError(
        f"{name}: {problem}; the database no longer has the events it holds (pruned since), so "
        "the export will not write it again: exported events are never removed (restore it "
        "from a copy)"
    )


def write_part(conn, folder, start, end, rows_per_file, compression, page_rows):
    """Write the events from position `start` up to `end` (None: up to the horizon or the first
    transaction boundary after `rows_per_file` rows) as a part: (end, manifest, whether the part
    was cut short of the horizon); (start, None, False) when there were no events."""
    with parts.PartWriter(folder, f"part-{start:020d}", compression) as writer:
        taken, boundary, capped = 0, None, False
        cursor, stop = feed.Cursor(start), False
        while not stop:
            page = feed.read_events(conn, cursor, page_rows, payload="text")
            rows = []
            for row in page.rows:
                if end is not None and row["xid"] >= end:
                    stop = True
                    break
                if boundary is not None and row["xid"] != boundary:
                    # The rows_per_file-th row's transaction is complete: cut here.
                    end, capped, stop = boundary + 1, True, True
                    break
                rows.append(row)
                taken += 1
                if end is None and boundary is None and taken >= rows_per_file:
                    boundary = row["xid"]
            writer.add(schema.batch_from_dicts(rows))
            if not stop and not page.full:
                # Everything below the horizon is read: the part ends there (the feed's next).
                end = end if end is not None else page.next.position
                stop = True
            cursor = page.next
        if not writer.rows:
            # Nothing new: the cursor stays, and the next part covers this empty range too, so
            # that the parts follow on from each other and a gap between two is a loss.
            writer.abort()
            return start, None, False
        written = writer.close()
    name = part_name(start, end)
    origin = {"feed": "events", "from": str(feed.Cursor(start)), "to": str(feed.Cursor(end))}
    return end, parts.publish(written, folder, name, origin, compression), capped


def parts_at(folder: Path, start: int) -> int | None:
    """The end of the part on disk that starts at `start` (Parquet or manifest), if any."""
    for path in folder.iterdir():
        match = PART.fullmatch(path.name)
        if match and int(match.group(1)) == start:
            return int(match.group(2))
    return None


def verify_feed(root: Path) -> Check:
    """Check the feed's export: every manifest against its file, each part starting where the one
    before it ended, none past the cursor."""
    check = Check("feed")
    folder = folder_of(root)
    if not folder.is_dir():
        check.problem = f"not exported (no {folder})"
        return check
    cursor = read_cursor(folder)
    ranges = sorted(
        {
            (int(m.group(1)), int(m.group(2)))
            for p in folder.iterdir()
            if (m := PART.fullmatch(p.name))
        }
    )
    previous = None
    for start, end in ranges:
        name = part_name(start, end)
        manifest, problem = parts.check(folder, name)
        if problem is None and previous is not None and start != previous:
            problem = f"{name} does not start where the part before it ended ({previous})"
        if problem is None and end > cursor:
            problem = f"{name} ends after the cursor ({cursor})"
        if problem:
            check.problem = problem
            return check
        check.parts, check.rows, previous = check.parts + 1, check.rows + manifest["rows"], end
    return check
