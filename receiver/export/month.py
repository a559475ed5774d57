"""A month of events as parts: `DIR/events/month=YYYY-MM/part-NNNNN.parquet` and manifests.

The month's rows, in the unique key's order (source.py), are cut into parts of `rows_per_file`
rows: part N holds the rows after part N-1's last key (kept in both manifests), up to its own.
The last part says `final`. So a part's rows are fixed by where it starts, and

- a re-run finds every part's manifest matching its file, the parts joined key to key up to a
  final one, and as many rows as the database has for the month: nothing to do;
- an interrupted run (a part without a valid manifest) continues after the last good part's
  key, under the same part number: the files come out as an uninterrupted run's would;
- events that arrived for the month after its export (a replay from quarantine, an export of a
  month still open with --force) change the count of the part whose key range they fall in: that
  part and the ones after it are written again, the ones before are kept.

An export never removes an event the database no longer has. Before a part with a manifest is
deleted to be written again, the database must still hold every row of it (its keys, read
from the file, are found one by one in the database's rows of its key range). Once a month is
pruned (`receiver prune` dropped its partition or deleted its stray rows), that fails: its parts
stay as they are for good, and the events stored for the month afterwards (a replay from
quarantine) go into late parts, numbered on after the final one (`"late": true` in their
manifests), each holding only events that no part of the month has. A month with late parts
was pruned; its parts are never written again, only added to. A part that no longer matches
its manifest, in a month pruned since, is refused, not rewritten: only a copy can restore it.

A month's export matches the database when both hold the same events. When the counts agree
and no row of the month was stored by a transaction newer than the newest in the files, they
do (the database only gains rows, until a prune; after one, new rows come with newer
transactions). Otherwise, if the database has fewer rows than the export (it was pruned), or
the month has late parts, they are compared key by key: every row the database has must be in
a part; the pruned ones are in the export only, which is the point of it.

Months that can still receive events are refused unless forced: Campaign re-sends an event for
three days after its creation, so a month is closed SETTLE after its end, the same margin
`receiver prune` keeps (an export is what prune may then be asked to check).
"""

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..maintenance import retention
from ..storage import partitions
from . import ExportError, parts, schema, source

FOLDER = "events"
SETTLE = retention.MINIMUM_RETENTION
DEFAULT_ROWS_PER_FILE = 1_000_000
PART = re.compile(r"part-(\d{5})\.parquet")
MANIFEST = re.compile(r"_part-(\d{5})\.json")
KEY_NAMES = ("client_id", "type", "created_at", "event_key")
# Where the key columns are in a row of schema.NAMES.
KEY_AT = [schema.NAMES.index(name) for name in KEY_NAMES]
XID_AT = schema.NAMES.index("xid")
ORDER = list(KEY_NAMES)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


@dataclass
class MonthResult:
    """What an export of one month did."""

    month: datetime
    parts: int = 0
    rows: int = 0
    written: list = field(default_factory=list)  # manifests of the parts written this run
    skipped: bool = False  # already exported and verified: nothing written
    stored: int | None = None  # the month's rows in the database
    pruned: bool = False  # the database no longer has every exported row: only late parts added


@dataclass
class Check:
    """A verification of one month's (or the feed's) export."""

    name: str
    parts: int = 0
    rows: int = 0
    problem: str | None = None
    note: str | None = None  # said of a good export (e.g. that its month was pruned)

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass
class Chain:
    """A month's folder as read_chain finds it."""

    parts: list  # manifests of the good parts from part 0 on, up to the final one at most
    late: list = field(default_factory=list)  # manifests of the good late parts after it
    names: list = field(default_factory=list)  # every part in the folder, by number
    problem: str | None = None  # the first thing wrong (None: the folder is whole)

    @property
    def complete(self) -> bool:
        return bool(self.parts) and self.parts[-1]["source"]["final"]

    @property
    def manifests(self) -> list:
        return self.parts + self.late

    @property
    def rows(self) -> int:
        return sum(m["rows"] for m in self.manifests)


def parse_month(text: str) -> datetime:
    """`2026-11` as the first instant of that month (UTC); ExportError otherwise."""
    match = re.fullmatch(r"(\d{4})-(\d{2})", text.strip())
    if not match or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 1:
        raise ExportError(f"--month {text!r} is not a month such as 2026-11")
    return datetime(int(match.group(1)), int(match.group(2)), 1, tzinfo=UTC)


def label(month: datetime) -> str:
    return f"{month:%Y-%m}"


def folder_of(root: Path, month: datetime) -> Path:
    return Path(root) / FOLDER / f"month={label(month)}"


def exported_months(root: Path) -> list[datetime]:
    """The months with a folder in the export, oldest first."""
    found = []
    for path in sorted((Path(root) / FOLDER).glob("month=*")):
        try:
            found.append(parse_month(path.name.removeprefix("month=")))
        except ExportError:
            continue
    return found


def refuse_open(month: datetime, now: datetime | None = None) -> None:
    """ExportError if events of `month` may still arrive."""
    closes = partitions.add_months(month, 1) + SETTLE
    if (now or datetime.now(UTC)) < closes:
        raise ExportError(
            f"{label(month)} may still receive events until {closes:%Y-%m-%d} (Campaign "
            f"re-sends events for {retention.SENDER_RETRY_WINDOW.days} days); export it "
            "after that, or now with --force and again after that"
        )


def export_month(
    conn,
    root: Path,
    month: datetime,
    rows_per_file: int = DEFAULT_ROWS_PER_FILE,
    compression: str = "zstd",
    on_part=None,
) -> MonthResult:
    """Export `month` into `root`, continuing or correcting what is there, never removing an
    event the database no longer has; `on_part(manifest)` hears of each part written. `conn` in
    autocommit; the caller holds parts.locked(root)."""
    folder = folder_of(root, month)
    folder.mkdir(parents=True, exist_ok=True)
    parts.remove_temporaries(folder)
    chain = remove_unfinished(folder, month)
    result = MonthResult(month)
    result.stored = source.count(conn, month, partitions.add_months(month, 1))
    if chain.late:  # pruned after its export: only added to from now on
        return add_late(conn, folder, month, chain, result, rows_per_file, compression, on_part)
    if (
        chain.problem is None
        and result.stored == chain.rows
        and not newer_in_database(conn, folder, month, chain)
    ):
        result.parts, result.rows, result.skipped = len(chain.parts), chain.rows, True
        return result
    keep = first_changed(conn, month, chain.parts)
    doomed = [name for name in chain.names if part_index(name) >= keep]
    held = next((name for name in doomed if not rewritable(conn, folder, month, name)), None)
    if held is None:
        if not (chain.complete and keep == len(chain.parts)):
            return rewrite(
                conn, folder, month, chain, keep, result, rows_per_file, compression, on_part
            )
        if doomed:  # after the final part, and the database has their rows: not this export's
            for name in doomed:
                parts.remove_part(folder, name)
            return export_month(conn, root, month, rows_per_file, compression, on_part)
    # A part holds rows the database no longer has (or the rows differ, their count alike):
    # the month was pruned since its export.
    return add_late(conn, folder, month, chain, result, rows_per_file, compression, on_part, held)


def rewrite(conn, folder, month, chain, keep, result, rows_per_file, compression, on_part):
    """Write the month again from part `keep` on (the database has every row of the parts
    removed)."""
    for name in chain.names:
        if part_index(name) >= keep:
            parts.remove_part(folder, name)
    after = key_of(chain.parts[keep - 1]["source"]["last"]) if keep else None
    index = keep
    while True:
        manifest = write_part(conn, folder, month, index, after, rows_per_file, compression)
        result.written.append(manifest)
        if on_part:
            on_part(manifest)
        if manifest["source"]["final"]:
            break
        after, index = key_of(manifest["source"]["last"]), index + 1
    result.parts = index + 1
    kept = sum(m["rows"] for m in chain.parts[:keep])
    result.rows = kept + sum(m["rows"] for m in result.written)
    return result


def add_late(conn, folder, month, chain, result, rows_per_file, compression, on_part, held=None):
    """The month was pruned after its export (`held`: a part whose rows the database no longer
    has all of): add the events the database has and the export has not as late parts, leaving
    every part there as it is; refuse if the export is not whole (the database no longer has
    the events to finish or mend it)."""
    result.pruned = True
    if chain.problem is not None:
        why = (
            f"{held} holds events the database no longer has"
            if held
            else "the month was pruned after its export (it has late parts)"
        )
        raise ExportError(
            f"{label(month)}: {chain.problem}; {why}, so the export will not write its parts "
            f"again: exported events are never removed (restore {folder} from a copy)"
        )
    new = unexported(conn, folder, month, chain, result.stored)
    index = len(chain.names)
    for offset in range(0, len(new), rows_per_file):
        manifest = write_late_part(
            conn, folder, month, index, new[offset : offset + rows_per_file], compression
        )
        if manifest is None:
            continue
        result.written.append(manifest)
        index += 1
        if on_part:
            on_part(manifest)
    result.parts = len(chain.manifests) + len(result.written)
    result.rows = chain.rows + sum(m["rows"] for m in result.written)
    result.skipped = not result.written
    return result


def write_part(conn, folder, month, index, after, rows_per_file, compression) -> dict:
    """Write and publish part `index`: up to `rows_per_file` rows after the key `after`."""
    name = f"part-{index:05d}.parquet"
    taken, last, final = 0, after, True
    with parts.PartWriter(folder, name, compression) as writer:
        # One row more than the part takes says whether another part follows.
        end = partitions.add_months(month, 1)
        with source.month_rows(conn, month, end, after, rows_per_file + 1) as chunks:
            for chunk in chunks:
                if taken + len(chunk) > rows_per_file:
                    chunk, final = chunk[: rows_per_file - taken], False
                if chunk:
                    writer.add(schema.batch_from_tuples(chunk))
                    taken, last = taken + len(chunk), row_key(chunk[-1])
        written = writer.close()
    origin = {
        "month": label(month),
        "order": ORDER,
        "after": key_json(after),
        "last": key_json(last),
        "final": final,
    }
    return parts.publish(written, folder, name, origin, compression)


def write_late_part(conn, folder, month, index, keys, compression) -> dict | None:
    """Write and publish late part `index`: the rows with these keys (None if the database
    has none of them any more)."""
    name = f"part-{index:05d}.parquet"
    first = last = None
    with parts.PartWriter(folder, name, compression) as writer:
        end = partitions.add_months(month, 1)
        for offset in range(0, len(keys), source.CHUNK_ROWS):
            rows = source.rows_by_keys(conn, month, end, keys[offset : offset + source.CHUNK_ROWS])
            if rows:
                writer.add(schema.batch_from_tuples(rows))
                first, last = first or row_key(rows[0]), row_key(rows[-1])
        if not writer.rows:
            writer.abort()
            return None
        written = writer.close()
    origin = {
        "month": label(month),
        "order": ORDER,
        "late": True,
        "first": key_json(first),
        "last": key_json(last),
    }
    return parts.publish(written, folder, name, origin, compression)


def read_chain(folder: Path, month: datetime) -> Chain:
    """The month's good parts: from part 0 to the first that is not (missing, not matching its
    file, not following on from the one before), and after the final part its good late parts;
    and what is wrong (None: the parts run from 0 to the final one, then late parts only)."""
    chain = Chain([], names=part_names(folder))
    previous_last = None
    for index, name in enumerate(chain.names):
        if part_index(name) != index:
            chain.problem = (
                f"{name} comes after the final part"
                if chain.complete and not chain.late
                else f"part-{index:05d}.parquet is missing"
            )
            return chain
        manifest, problem = parts.check(folder, name)
        if problem:
            chain.problem = problem
            return chain
        origin = manifest["source"]
        if chain.complete:
            if origin.get("month") != label(month) or origin.get("late") is not True:
                chain.problem = f"{name} comes after the final part"
                return chain
            chain.late.append(manifest)
            continue
        if (
            origin.get("month") != label(month)
            or origin.get("late")
            or origin.get("after") != previous_last
        ):
            chain.problem = f"{name} does not follow on from the part before it"
            return chain
        chain.parts.append(manifest)
        previous_last = origin["last"]
    if not chain.names:
        chain.problem = "not exported"
    elif not chain.complete:
        chain.problem = f"the export ends at {chain.names[-1]}, before the month's final part"
    return chain


def remove_unfinished(folder: Path, month: datetime) -> Chain:
    """Delete the parts an interrupted run left after the good ones, if none of them has a
    manifest (none was finished); the chain that is left."""
    chain = read_chain(folder, month)
    good = len(chain.manifests)
    tail = [name for name in chain.names if part_index(name) >= good]
    if not tail or any((folder / parts.manifest_name(name)).exists() for name in tail):
        return chain
    for name in tail:
        parts.remove_part(folder, name)
    return read_chain(folder, month)


def first_changed(conn, month: datetime, chain: list[dict]) -> int:
    """The first part of `chain` whose key range no longer holds as many rows in the database
    (events that arrived after the export, or a prune), or len(chain)."""
    start, end = month, partitions.add_months(month, 1)
    for index, manifest in enumerate(chain):
        origin = manifest["source"]
        last = None if origin["final"] else key_of(origin["last"])
        if source.count(conn, start, end, key_of(origin["after"]), last) != manifest["rows"]:
            return index
    return len(chain)


def rewritable(conn, folder: Path, month: datetime, name: str) -> bool:
    """Whether part `name` may be deleted and its rows written again from the database: it has
    no manifest (it was never finished), or the database still has every row it holds. A part
    that cannot be read is judged by its manifest: as many rows left in its key range."""
    if not (folder / parts.manifest_name(name)).exists():
        return True
    try:
        return all_in_database(conn, month, folder / name)
    except (OSError, pa.ArrowException):
        pass
    try:
        manifest = json.loads((folder / parts.manifest_name(name)).read_text())
        origin, rows = manifest["source"], manifest["rows"]
        after, last = key_of(origin["after"]), None if origin["final"] else key_of(origin["last"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    end = partitions.add_months(month, 1)
    return source.count(conn, month, end, after, last) >= rows


def all_in_database(conn, month: datetime, path: Path) -> bool:
    """Whether the database has a row with each key of the Parquet file at `path`. The file's
    rows are in the database's order: one pass over both, the database's rows from the file's
    first key to its last."""
    data = key_reader(path)
    groups = data.metadata.num_row_groups
    if not data.metadata.num_rows:
        return True
    first = data.read_row_group(0, columns=KEY_NAMES).slice(0, 1).to_pylist()[0]
    group = data.read_row_group(groups - 1, columns=KEY_NAMES)
    last = group.slice(group.num_rows - 1).to_pylist()[0]
    end = partitions.add_months(month, 1)
    bounds = {"first": source.Key(**first), "last": source.Key(**last)}
    with source.month_keys(conn, month, end, **bounds) as chunks:
        stored = (compared(row) for chunk in chunks for row in chunk)
        for key in file_keys(data):
            # The database's rows go by until this one: it comes later in the same order.
            if not any(found == key for found in stored):
                return False
    return True


def unexported(conn, folder: Path, month: datetime, chain: Chain, stored: int) -> list[tuple]:
    """The keys of the month's rows in the database that no part of the export has, in the
    database's order. One part's key range at a time: the database's keys in it (in memory:
    few, in a pruned month), then the part's keys struck off."""
    if not stored:
        return []
    start, end = month, partitions.add_months(month, 1)
    new = []
    for manifest in chain.parts:
        origin = manifest["source"]
        last = None if origin["final"] else key_of(origin["last"])
        with source.month_keys(conn, start, end, key_of(origin["after"]), last) as chunks:
            here = {compared(row): tuple(row) for chunk in chunks for row in chunk}
        if here:
            _strike(here, folder / manifest["file"])
            new += here.values()
    if new and chain.late:
        here = {compared(row): row for row in new}
        for manifest in chain.late:
            _strike(here, folder / manifest["file"])
        new = list(here.values())
    return new


def _strike(keys: dict, path: Path) -> None:
    """Take the keys of the Parquet file at `path` off `keys`."""
    for key in file_keys(key_reader(path)):
        keys.pop(key, None)
        if not keys:
            return


def newer_in_database(conn, folder: Path, month: datetime, chain: Chain) -> bool:
    """Whether a row of the month was stored by a transaction newer than any row of the export:
    then the database has a row the export has not, whatever the counts say."""
    newest = source.newest_xid(conn, month, partitions.add_months(month, 1))
    if newest is None:
        return False
    exported = [x for m in chain.manifests if (x := newest_in_file(folder / m["file"])) is not None]
    return not exported or newest > max(exported)


def newest_in_file(path: Path) -> int | None:
    """The largest xid in a Parquet file, from its row groups' statistics."""
    metadata = pq.read_metadata(path)
    found = None
    for group in range(metadata.num_row_groups):
        statistics = metadata.row_group(group).column(XID_AT).statistics
        if statistics is not None and statistics.has_min_max:
            found = statistics.max if found is None else max(found, statistics.max)
    return found


def key_reader(path: Path) -> pq.ParquetFile:
    """A Parquet file opened to read a few columns, a page at a time (not the whole row group's
    column chunks at once)."""
    return pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 16)


def file_keys(data: pq.ParquetFile):
    """The keys of a Parquet file's rows as `compared` gives them, in its order, a few thousand
    at a time."""
    batches = data.iter_batches(batch_size=source.CHUNK_ROWS, columns=KEY_NAMES, use_threads=False)
    for batch in batches:
        columns = [batch.column(name) for name in KEY_NAMES]
        columns[2] = columns[2].cast(pa.int64())  # microseconds since 1970, UTC
        yield from zip(*(column.to_pylist() for column in columns), strict=True)


def compared(key: tuple) -> tuple:
    """A key (client_id, type, created_at, event_key) with created_at in microseconds since
    1970: as the file's keys are read (datetimes from Parquet are much slower to make)."""
    client_id, kind, created_at, event_key = key
    return client_id, kind, (created_at - EPOCH) // MICROSECOND, event_key


def verify_month(root: Path, month: datetime, conn=None) -> Check:
    """Check the month's export: every manifest against its file, the parts joined from the
    first to the final one (then late parts only), and with `conn`, that the database has no
    row of the month the export has not, and, unless the month was pruned, no fewer."""
    check = Check(label(month))
    folder = folder_of(root, month)
    if not folder.is_dir():
        check.problem = f"not exported (no {folder})"
        return check
    chain = read_chain(folder, month)
    check.parts, check.rows, check.problem = len(chain.manifests), chain.rows, chain.problem
    if check.problem is None and conn is not None:
        compare(conn, folder, month, chain, check)
    return check


def compare(conn, folder: Path, month: datetime, chain: Chain, check: Check) -> None:
    """Set check.problem (or note) from the month's rows in the database."""
    stored = source.count(conn, month, partitions.add_months(month, 1))
    again = f"`receiver export --month {label(month)}`"
    if not chain.late and stored == chain.rows:
        if not newer_in_database(conn, folder, month, chain):
            return
    elif not chain.late and stored > chain.rows:
        check.problem = (
            f"{chain.rows} rows exported, {stored} in the database (events arrived since the "
            f"export: run {again} again)"
        )
        return
    new = unexported(conn, folder, month, chain, stored)
    if new:
        check.problem = (
            f"{len(new)} event(s) in the database are in no part of the export: stored since "
            f"the month was pruned ({chain.rows} rows exported, {stored} in the database); "
            f"{again} adds them in a part of their own, the parts there stay as they are"
        )
    elif stored < chain.rows:
        check.note = f"pruned: {stored:,} of its events left in the database"


def part_names(folder: Path) -> list[str]:
    """The part files in the folder, Parquet or manifest, by number."""
    numbers = set()
    for path in folder.iterdir() if folder.is_dir() else ():
        match = PART.fullmatch(path.name) or MANIFEST.fullmatch(path.name)
        if match:
            numbers.add(int(match.group(1)))
    return [f"part-{number:05d}.parquet" for number in sorted(numbers)]


def part_index(name: str) -> int:
    return int(PART.fullmatch(name).group(1))


def row_key(row: tuple) -> source.Key:
    return source.Key(*(row[i] for i in KEY_AT))


def key_json(key: source.Key | None):
    if key is None:
        return None
    moment = key.created_at.astimezone(UTC).isoformat(timespec="microseconds")
    return [key.client_id, key.type, moment, key.event_key]


def key_of(value) -> source.Key | None:
    if value is None:
        return None
    client_id, kind, created_at, event_key = value
    return source.Key(client_id, kind, datetime.fromisoformat(created_at), event_key)
