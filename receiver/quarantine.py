"""`receiver quarantine`: what is quarantined and why, and replaying it after a fix.

Replay runs today's parsing and validation (the functions the webhook calls) over each row and
inserts what now passes with the webhook's own INSERT ... ON CONFLICT DO NOTHING: an event that is
already in `events` is a duplicate, never a second row, so replaying twice is harmless. Each row
is replayed in its own transaction together with the update of that row, so its events and its
resolution commit together or not at all, and a failure later on undoes nothing before it.
"""

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from psycopg.rows import dict_row

from . import jsoncodec, schemas, storage
from .config import ConfigError

DEFAULT_LIMIT = 100
REASON_WIDTH = 60  # characters of the reason on a `list` line; `show` prints it whole
LISTED_FAILURES = 5  # failed events named in a body row's reason; the rest are counted
# A replay waits at most this long for a row or key lock held by a live request (those finish
# within the receiver's statement timeout) and otherwise stops with an error, rather than hang.
LOCK_TIMEOUT_MS = 10_000

# The filters of `list`, written out in each statement: a NULL parameter means "no filter".
LIST_ROWS = """
SELECT id, kind, reason, times_received, received_at, last_received_at, resolved_at, resolution,
       octet_length(content) AS size,
       CASE WHEN %(with_content)s THEN content END AS content
FROM quarantine
WHERE (%(all)s OR resolved_at IS NULL)
  AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
  AND (%(since)s::timestamptz IS NULL OR last_received_at >= %(since)s::timestamptz)
ORDER BY id
LIMIT %(limit)s
"""

COUNT_BY_REASON = """
SELECT reason, count(*) AS rows
FROM quarantine
WHERE (%(all)s OR resolved_at IS NULL)
  AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
  AND (%(since)s::timestamptz IS NULL OR last_received_at >= %(since)s::timestamptz)
GROUP BY reason
ORDER BY count(*) DESC, reason
"""

GET_ROW = """
SELECT id, kind, reason, times_received, received_at, last_received_at, resolved_at, resolution,
       octet_length(content) AS size, content
FROM quarantine WHERE id = %s
"""

UNRESOLVED_IDS = "SELECT id FROM quarantine WHERE resolved_at IS NULL ORDER BY id"
EXISTING_IDS = "SELECT id FROM quarantine WHERE id = ANY(%s)"

# FOR UPDATE: an operator's UPDATE of the content, or a second replay, waits until this row's
# outcome is committed, so the row is resolved for exactly the content whose events were stored.
LOCK_ROW = "SELECT id, kind, content, resolved_at FROM quarantine WHERE id = %s FOR UPDATE"

# The reason is kept on a resolved row: it is the record of why the content was quarantined.
RESOLVE_ROW = "UPDATE quarantine SET resolved_at = now(), resolution = %s WHERE id = %s"
KEEP_ROW = "UPDATE quarantine SET reason = %s WHERE id = %s"

# Control and bidirectional-format characters are shown escaped: quarantined bytes come from the
# network, and raw escape sequences in them would drive the operator's terminal.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")


@dataclass
class Evaluation:
    """What today's parsing and validation make of one row's content."""

    items: int  # items the content holds (0 when it does not parse)
    events: list = field(default_factory=list)  # (typed fields, payload bytes) that are valid
    positions: dict = field(default_factory=dict)  # payload bytes -> item number, for messages
    failures: list = field(default_factory=list)  # (item number or None for all, reason)


@dataclass
class RowReplay:
    """The outcome of replaying one quarantine row."""

    id: int
    kind: str
    items: int = 0
    stored: int = 0
    duplicates: int = 0
    failures: list = field(default_factory=list)  # (item number or None, reason), as Evaluation
    already_resolved: bool = False

    @property
    def resolved(self) -> bool:
        return not self.already_resolved and not self.failures

    @property
    def partial(self) -> bool:
        """Some events of the row are stored, others still fail: the row stays."""
        return bool(self.failures) and self.stored + self.duplicates > 0

    def reason(self) -> str:
        """Today's reason for a row that stays in quarantine."""
        if self.kind == "event" or self.failures[0][0] is None:
            return self.failures[0][1]  # the webhook's own wording for the event or the body
        named = [f"event {number}: {reason}" for number, reason in self.failures[:LISTED_FAILURES]]
        if len(self.failures) > LISTED_FAILURES:
            named.append(f"and {len(self.failures) - LISTED_FAILURES} more")
        valid = self.stored + self.duplicates
        return f"{valid} of {self.items} events valid and stored; not stored: " + " | ".join(named)

    def resolution(self) -> str:
        """What the replay did, kept on a resolved row."""
        return f"replayed: {self.stored} stored, {self.duplicates} duplicates"


@dataclass
class ReplaySummary:
    """Totals over the replayed rows."""

    rows: list = field(default_factory=list)  # RowReplay, in id order
    dry_run: bool = False

    @property
    def examined(self) -> int:
        return len(self.rows)

    @property
    def stored(self) -> int:
        return sum(row.stored for row in self.rows)

    @property
    def duplicates(self) -> int:
        return sum(row.duplicates for row in self.rows)

    @property
    def resolved(self) -> int:
        return sum(row.resolved for row in self.rows)

    @property
    def still_quarantined(self) -> int:
        return sum(bool(row.failures) for row in self.rows)

    @property
    def partial(self) -> int:
        return sum(row.partial for row in self.rows)

    @property
    def already_resolved(self) -> int:
        return sum(row.already_resolved for row in self.rows)


def connect(url=None) -> psycopg.Connection:
    """A connection to `url` or DATABASE_URL; ConfigError when neither is set."""
    url = url or os.environ.get("DATABASE_URL")
    if not url:
        raise ConfigError("DATABASE_URL is not set")
    # Autocommit, so that every `conn.transaction()` below is a transaction of its own: without
    # it the first statement opens an implicit transaction and each block is only a savepoint.
    conn = psycopg.connect(
        url, autocommit=True, connect_timeout=5, application_name="receiver quarantine"
    )
    conn.execute(f"SET lock_timeout = {int(LOCK_TIMEOUT_MS)}")
    return conn


def list_rows(
    conn, kind=None, since=None, limit=DEFAULT_LIMIT, include_resolved=False, with_content=False
) -> list[dict]:
    """Quarantine rows in id order, unresolved only unless include_resolved."""
    params = _filters(kind, since, include_resolved) | {
        "limit": limit,
        "with_content": with_content,
    }
    return conn.cursor(row_factory=dict_row).execute(LIST_ROWS, params).fetchall()


def reason_counts(conn, kind=None, since=None, include_resolved=False) -> list[dict]:
    """Rows per reason under the same filters as `list_rows`, most frequent first."""
    params = _filters(kind, since, include_resolved)
    return conn.cursor(row_factory=dict_row).execute(COUNT_BY_REASON, params).fetchall()


def get_row(conn, row_id) -> dict | None:
    """One quarantine row with its content, or None."""
    return conn.cursor(row_factory=dict_row).execute(GET_ROW, (row_id,)).fetchone()


def _filters(kind, since, include_resolved) -> dict:
    return {"kind": kind, "since": since, "all": include_resolved}


def evaluate(kind, content: bytes) -> Evaluation:
    """Today's parsing and validation of a row's content, as the webhook would do it now."""
    if kind == "event":
        # An event row holds one JSON value. Wrapped in a list, decode_batch returns exactly that
        # value even when it is a list (which it would unpack as a batch) or a number (which it
        # would refuse as a body), so validate_event gives the webhook's own reason for it.
        document = b"[" + content.removeprefix(jsoncodec.UTF8_BOM) + b"]"
    else:
        document = content
    try:
        items = jsoncodec.decode_batch(document)
    except jsoncodec.BadBody as error:
        return Evaluation(0, failures=[(None, str(error))])
    if kind == "event" and len(items) != 1:
        return Evaluation(
            len(items), failures=[(None, f"content holds {len(items)} JSON values, not one event")]
        )
    evaluation = Evaluation(len(items))
    for number, item in enumerate(items, 1):
        try:
            data, payload = schemas.validate_event(item)
        except schemas.InvalidEvent as error:
            evaluation.failures.append((number, str(error)))
            continue
        evaluation.events.append((data, payload))
        evaluation.positions.setdefault(payload, number)
    return evaluation


def store_events(conn, events) -> tuple[int, list]:
    """Insert events inside the caller's transaction: (number stored, storage.Rejected refused).

    store_batch commits on a connection of its own; here a row's events must commit with the
    row's update, so the same statement and per-event fallback run through storage's helpers."""
    result = storage.BatchResult()
    stored = storage.insert_events(conn, events, result)
    return len(stored), result.rejected


def replay_row(conn, row_id, dry_run=False) -> RowReplay | None:
    """Replay one row in its own transaction (rolled back when dry_run); None if it is gone."""
    with conn.transaction() as transaction:
        row = conn.cursor(row_factory=dict_row).execute(LOCK_ROW, (row_id,)).fetchone()
        if row is None:
            return None
        outcome = RowReplay(row["id"], row["kind"])
        if row["resolved_at"] is not None:
            outcome.already_resolved = True
            return outcome
        evaluation = evaluate(row["kind"], row["content"])
        outcome.items = evaluation.items
        outcome.failures = list(evaluation.failures)
        stored, refused = store_events(conn, evaluation.events)
        # Valid but refused by PostgreSQL (a value too large for an index): still not an event.
        for item in refused:
            outcome.failures.append((evaluation.positions.get(item.content), item.reason))
        outcome.failures.sort(key=lambda failure: failure[0] or 0)
        outcome.stored = stored
        outcome.duplicates = len(evaluation.events) - stored - len(refused)
        if outcome.resolved:
            conn.execute(RESOLVE_ROW, (outcome.resolution(), row_id))
        else:
            conn.execute(KEEP_ROW, (outcome.reason(), row_id))
        if dry_run:
            # The very statements a real replay runs, then undone: the counts are exact.
            raise psycopg.Rollback(transaction)
    return outcome


def replay_candidates(conn, ids=None) -> list[int]:
    """The given ids (LookupError if any does not exist), or every unresolved row, by id."""
    if not ids:
        return [row[0] for row in conn.execute(UNRESOLVED_IDS)]
    found = {row[0] for row in conn.execute(EXISTING_IDS, (sorted(set(ids)),))}
    missing = sorted(set(ids) - found)
    if missing:
        raise LookupError("no quarantine row with id " + ", ".join(map(str, missing)))
    return sorted(found)


def replay_rows(conn, ids=None, dry_run=False):
    """Replay rows one by one, yielding each RowReplay once its transaction has ended."""
    for row_id in replay_candidates(conn, ids):
        outcome = replay_row(conn, row_id, dry_run)
        if outcome is not None:
            yield outcome


def replay(conn, ids=None, dry_run=False) -> ReplaySummary:
    """Replay the given rows, or every unresolved one, and return the totals."""
    return ReplaySummary(list(replay_rows(conn, ids, dry_run)), dry_run)


# --- The command line: `receiver quarantine list|show|replay` (registered in cli.py). ---


def add_parser(commands):
    """Register `quarantine` and its actions on the `receiver` command's subparsers."""
    parser = commands.add_parser(
        "quarantine",
        help="list, show and replay what could not be stored as events",
        description="Inspect quarantined content and replay it after a fix (uses DATABASE_URL).",
    )
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="one line per row, with counts by reason")
    listing.add_argument("--json", action="store_true", help="JSON lines with the content")
    listing.add_argument("--kind", choices=("body", "event"))
    listing.add_argument(
        "--since",
        type=_timestamp,
        metavar="ISO",
        help="only rows received (first or again) since this time; UTC unless it has an offset",
    )
    listing.add_argument(
        "--limit", type=_positive, default=DEFAULT_LIMIT, metavar="N", help="default %(default)s"
    )
    listing.add_argument("--all", action="store_true", help="include resolved rows")
    show = actions.add_parser("show", help="one row's full reason and content")
    show.add_argument("id", type=int)
    replaying = actions.add_parser("replay", help="store what passes today's validation")
    replaying.add_argument(
        "--id",
        dest="ids",
        type=int,
        nargs="+",
        action="extend",
        metavar="ID",
        help="only these rows (default: every unresolved row)",
    )
    replaying.add_argument("--dry-run", action="store_true", help="report, change nothing")
    return parser


def command(args) -> int:
    """Run `receiver quarantine ACTION`; the exit status (1 on a database error)."""
    action = {"list": list_command, "show": show_command, "replay": replay_command}[args.action]
    try:
        with connect() as conn:
            return action(conn, args)
    except psycopg.Error as error:
        print(f"receiver: quarantine {args.action}: database error: {error}", file=sys.stderr)
        return 1


def list_command(conn, args) -> int:
    """Print the reason counts and one line per row, or JSON lines with --json."""
    filters = {"kind": args.kind, "since": args.since, "include_resolved": args.all}
    rows = list_rows(conn, limit=args.limit, with_content=args.json, **filters)
    counts = reason_counts(conn, **filters)
    total = sum(count["rows"] for count in counts)
    if args.json:
        for row in rows:
            print(json.dumps(_as_json(row)))  # ASCII escapes: safe on any terminal
    else:
        state = "" if args.all else "unresolved "
        print(f"quarantine: {total} {state}row(s)")
        for count in counts:
            print(f"  {count['rows']:>6}  {_truncate(count['reason'], 2 * REASON_WIDTH)}")
        if rows:
            print(
                f"\n{'id':>8}  {'kind':<5}  {'times':>6}  {'first received':<20}  "
                f"{'last received':<20}  {'bytes':>8}  reason"
            )
        for row in rows:
            print(_list_line(row))
    if len(rows) < total:
        # On stderr with --json, so a script reading the lines never parses it.
        print(
            f"(first {len(rows)} of {total} rows; see --limit)",
            file=sys.stderr if args.json else sys.stdout,
        )
    return 0


def show_command(conn, args) -> int:
    """Print one row's details, full reason and content."""
    row = get_row(conn, args.id)
    if row is None:
        print(f"receiver: no quarantine row with id {args.id}", file=sys.stderr)
        return 1
    content = bytes(row["content"])
    try:
        text, note = content.decode("utf-8"), ""
    except UnicodeDecodeError:
        text = content.decode("utf-8", "backslashreplace")
        note = ", not valid UTF-8: invalid bytes shown as \\xNN"
    resolved = "no"
    if row["resolved_at"] is not None:
        resolved = f"{_when(row['resolved_at'])} ({row['resolution']})"
    print(f"id:             {row['id']}")
    print(f"kind:           {row['kind']}")
    print(f"times received: {row['times_received']}")
    print(f"first received: {_when(row['received_at'])}")
    print(f"last received:  {_when(row['last_received_at'])}")
    print(f"resolved:       {resolved}")
    print(f"reason:         {_printable(row['reason'])}")
    print(f"content ({row['size']} bytes{note}):")
    print(_printable(text, keep_newlines=True))
    return 0


def replay_command(conn, args) -> int:
    """Replay and print one line per row and the totals; 1 when a database error stopped it."""
    summary = ReplaySummary(dry_run=args.dry_run)
    try:
        for outcome in replay_rows(conn, args.ids, args.dry_run):
            summary.rows.append(outcome)
            print(_outcome_line(outcome, args.dry_run))
    except LookupError as error:
        print(f"receiver: {error}", file=sys.stderr)
        return 1
    except psycopg.Error as error:
        print(_summary_line(summary))
        done = "nothing was changed" if args.dry_run else "the rows above are committed"
        print(
            f"receiver: quarantine replay stopped by a database error: {error}\n"
            f"  {done}; run the replay again to continue",
            file=sys.stderr,
        )
        return 1
    print(_summary_line(summary))
    return 0


def _outcome_line(outcome: RowReplay, dry_run) -> str:
    head = f"#{outcome.id} {outcome.kind}:"
    if outcome.already_resolved:
        return f"{head} already resolved, skipped"
    stored = "to store" if dry_run else "stored"
    counts = f"{outcome.stored} {stored}, {outcome.duplicates} duplicates"
    if outcome.resolved:
        return f"{head} {counts} -> {'would be resolved' if dry_run else 'resolved'}"
    stays = "would stay in quarantine" if dry_run else "still quarantined"
    reason = _printable(outcome.reason())
    if outcome.partial:
        failed = len(outcome.failures)
        return f"{head} {counts}, {failed} not storable -> {stays} (partially replayed): {reason}"
    return f"{head} {stays}: {reason}"


def _summary_line(summary: ReplaySummary) -> str:
    head = "replay --dry-run (nothing changed)" if summary.dry_run else "replay"
    would = "would be " if summary.dry_run else ""
    line = (
        f"{head}: {summary.examined} rows examined, {summary.stored} events {would}stored, "
        f"{summary.duplicates} duplicates, {summary.resolved} rows {would}resolved, "
        f"{summary.still_quarantined} still quarantined ({summary.partial} partially replayed)"
    )
    if summary.already_resolved:
        line += f", {summary.already_resolved} already resolved"
    return line


def _list_line(row) -> str:
    reason = _truncate(row["reason"], REASON_WIDTH)
    if row["resolved_at"] is not None:
        reason = "[resolved] " + reason
    return (
        f"{row['id']:>8}  {row['kind']:<5}  {row['times_received']:>6}  "
        f"{_when(row['received_at']):<20}  {_when(row['last_received_at']):<20}  "
        f"{row['size']:>8}  {reason}"
    )


def _as_json(row) -> dict:
    return {
        "id": row["id"],
        "kind": row["kind"],
        "reason": row["reason"],
        "times_received": row["times_received"],
        "received_at": row["received_at"].astimezone(UTC).isoformat(),
        "last_received_at": row["last_received_at"].astimezone(UTC).isoformat(),
        "resolved_at": row["resolved_at"] and row["resolved_at"].astimezone(UTC).isoformat(),
        "resolution": row["resolution"],
        "size": row["size"],
        "content": bytes(row["content"]).decode("utf-8", "replace"),
    }


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _truncate(text: str, width: int) -> str:
    text = _printable(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def _printable(text: str, keep_newlines=False) -> str:
    text = _UNPRINTABLE.sub(lambda match: repr(match.group())[1:-1], text)
    if keep_newlines:
        return text
    # One row, one line: a reason or listed content never breaks the layout.
    return text.replace("\n", "\\n").replace("\t", "\\t")


def _timestamp(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value
