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

Months that can still receive events are refused unless forced: Campaign re-sends an event for
three days after its creation, so a month is closed SETTLE after its end, the same margin
`receiver prune` keeps (an export is what prune may then be asked to check).
"""

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..maintenance import retention
from ..storage import partitions
from . import ExportError, parts, schema, source

FOLDER = "events"
SETTLE = retention.MINIMUM_RETENTION
DEFAULT_ROWS_PER_FILE = 1_000_000
PART = re.compile(r"part-(\d{5})\.parquet")
MANIFEST = re.compile(r"_part-(\d{5})\.json")
# Where the key columns are in a row of schema.NAMES.
KEY_AT = [schema.NAMES.index(name) for name in ("client_id", "type", "created_at", "event_key")]


@dataclass
class MonthResult:
    """What an export of one month did."""

    month: datetime
    parts: int = 0
    rows: int = 0
    written: list = field(default_factory=list)  # manifests of the parts written this run
    skipped: bool = False  # already exported and verified


@dataclass
class Check:
    """A verification of one month's (or the feed's) export."""

    name: str
    parts: int = 0
    rows: int = 0
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


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
    """Export `month` into `root`, continuing or correcting what is there; `on_part(manifest)`
    hears of each part written. `conn` in autocommit; the caller holds parts.locked(root)."""
    folder = folder_of(root, month)
    folder.mkdir(parents=True, exist_ok=True)
    parts.remove_temporaries(folder)
    start, end = month, partitions.add_months(month, 1)
    chain, problem = read_chain(folder, month)
    total = source.count(conn, start, end)
    result = MonthResult(month)
    if problem is None and sum(m["rows"] for m in chain) == total:
        result.parts, result.rows, result.skipped = len(chain), total, True
        return result
    keep = first_changed(conn, month, chain)
    for name in part_names(folder):
        if part_index(name) >= keep:
            parts.remove_part(folder, name)
    after = key_of(chain[keep - 1]["source"]["last"]) if keep else None
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
    result.rows = sum(m["rows"] for m in chain[:keep]) + sum(m["rows"] for m in result.written)
    return result


def write_part(conn, folder, month, index, after, rows_per_file, compression) -> dict:
    """Write and publish part `index`: up to `rows_per_file` rows after the key `after`."""
    name = f"part-{index:05d}.parquet"
    writer = parts.PartWriter(folder, name, compression)
    taken, last, final = 0, after, True
    try:
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
    except BaseException:
        writer.abort()
        raise
    origin = {
        "month": label(month),
        "order": ["client_id", "type", "created_at", "event_key"],
        "after": key_json(after),
        "last": key_json(last),
        "final": final,
    }
    return parts.publish(written, folder, name, origin, compression)


def read_chain(folder: Path, month: datetime) -> tuple[list[dict], str | None]:
    """The manifests of the month's good parts, from part 0 to the first that is not (missing,
    not matching its file, not following on from the one before), and what is wrong (None: the
    chain is whole, ends with the final part, and nothing else is in the folder)."""
    names = part_names(folder)
    chain, previous_last = [], None
    for index, name in enumerate(names):
        if part_index(name) != index:
            return chain, f"part-{index:05d}.parquet is missing"
        manifest, problem = parts.check(folder, name)
        if problem:
            return chain, problem
        origin = manifest["source"]
        if origin.get("month") != label(month) or origin.get("after") != previous_last:
            return chain, f"{name} does not follow on from the part before it"
        chain.append(manifest)
        if origin["final"]:
            if index + 1 < len(names):
                return chain, f"{names[index + 1]} comes after the final part"
            return chain, None
        previous_last = origin["last"]
    if not names:
        return chain, "not exported"
    return chain, f"the export ends at {names[-1]}, before the month's final part"


def first_changed(conn, month: datetime, chain: list[dict]) -> int:
    """The first part of `chain` whose key range no longer holds as many rows in the database
    (events that arrived after the export), or len(chain)."""
    start, end = month, partitions.add_months(month, 1)
    for index, manifest in enumerate(chain):
        origin = manifest["source"]
        last = None if origin["final"] else key_of(origin["last"])
        if source.count(conn, start, end, key_of(origin["after"]), last) != manifest["rows"]:
            return index
    return len(chain)


def verify_month(root: Path, month: datetime, conn=None) -> Check:
    """Check the month's export: every manifest against its file, the parts joined from the
    first to the final one, and with `conn`, their rows against the month's in the database."""
    check = Check(label(month))
    folder = folder_of(root, month)
    if not folder.is_dir():
        check.problem = f"not exported (no {folder})"
        return check
    chain, check.problem = read_chain(folder, month)
    check.parts, check.rows = len(chain), sum(m["rows"] for m in chain)
    if check.problem is None and conn is not None:
        stored = source.count(conn, month, partitions.add_months(month, 1))
        if stored != check.rows:
            check.problem = (
                f"{check.rows} rows exported, {stored} in the database (events arrived since "
                f"the export: run `receiver export --month {label(month)}` again)"
            )
    return check


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
