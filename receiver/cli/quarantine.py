"""`receiver quarantine list|show|replay`: what could not be stored as events, and replaying it."""

import json
import re
import sys
from datetime import UTC, datetime
from types import SimpleNamespace

import click
import psycopg

from ..ingest import replay
from ..storage import db, quarantine
from . import common

DEFAULT_LIMIT = 100
REASON_WIDTH = 60  # characters of the reason on a `list` line; `show` prints it whole
# The counts block's reason lines fit 120 columns: 12 for the indent and the count.
COUNTED_REASON_WIDTH = 120 - 12
CATEGORY_WIDTH = max(map(len, quarantine.CATEGORIES))
# A replay waits at most this long for a row or key lock held by a live request (those finish
# within the receiver's statement timeout) and otherwise stops with an error, rather than hang.
LOCK_TIMEOUT_MS = 10_000

# Control and bidirectional-format characters are shown escaped: quarantined bytes come from the
# network, and raw escape sequences in them would drive the operator's terminal.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")


class Timestamp(click.ParamType):
    """An ISO 8601 time; UTC unless it carries an offset."""

    name = "ISO"

    def convert(self, value, param, ctx):
        if isinstance(value, datetime):
            return value
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"not an ISO 8601 time: {value!r}", param, ctx)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@click.group(name="quarantine")
def group():
    """List, show and replay what could not be stored as events (uses DATABASE_URL)."""


@group.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="JSON lines with the content")
@click.option("--kind", type=click.Choice(["body", "event"]))
@click.option(
    "--category",
    type=click.Choice(quarantine.CATEGORIES),
    help="only rows of this category (docs/operations.md: Quarantine categories)",
)
@click.option("--since", type=Timestamp(), help="only rows received (first or again) since then")
@click.option("--limit", type=click.IntRange(min=1), default=DEFAULT_LIMIT, show_default=True)
@click.option("--all", "include_resolved", is_flag=True, help="include resolved rows")
def list_command(as_json, kind, category, since, limit, include_resolved):
    """One line per row, with counts by category and reason."""
    args = SimpleNamespace(
        json=as_json,
        kind=kind,
        category=category,
        since=since,
        limit=limit,
        all=include_resolved,
    )
    return _run("list", _list, args)


@group.command(name="show")
@click.argument("row_id", metavar="ID", type=int)
def show_command(row_id):
    """One row's full reason and content."""
    return _run("show", _show, SimpleNamespace(id=row_id))


@group.command(name="replay")
@click.option("--id", "ids", type=int, multiple=True, help="only this row (repeatable)")
@click.option("--dry-run", is_flag=True, help="report, change nothing")
def replay_command(ids, dry_run):
    """Store what passes today's validation; resolve rows whose events are all stored."""
    return _run("replay", _replay, SimpleNamespace(ids=list(ids), dry_run=dry_run))


def _run(action, work, args) -> int:
    """Run one action on a fresh connection; 1 on a database error."""
    try:
        with db.connect(common.database_url(), "receiver quarantine", LOCK_TIMEOUT_MS) as conn:
            return work(conn, args)
    except psycopg.Error as error:
        print(f"receiver: quarantine {action}: database error: {error}", file=sys.stderr)
        return 1


def _list(conn, args) -> int:
    """Print the counts by category and reason and one line per row, or JSON lines with --json."""
    filters = {"kind": args.kind, "since": args.since, "include_resolved": args.all}
    counts = quarantine.reason_counts(conn, **filters)
    for count in counts:
        count["category"] = quarantine.category(count["reason"])
    reasons = None
    if args.category:
        # The category is read from the reason: its rows are those with one of its reasons.
        counts = [count for count in counts if count["category"] == args.category]
        reasons = [count["reason"] for count in counts]
    rows = []
    if reasons is None or reasons:
        rows = quarantine.list_rows(
            conn, limit=args.limit, with_content=args.json, reasons=reasons, **filters
        )
    total = sum(count["rows"] for count in counts)
    if args.json:
        for row in rows:
            print(json.dumps(_as_json(row)))  # ASCII escapes: safe on any terminal
    else:
        state = "" if args.all else "unresolved "
        shown = f" of category {args.category}" if args.category else ""
        print(f"quarantine: {total} {state}row(s){shown}")
        _print_counts(counts)
        if rows:
            print(
                f"\n{'id':>8}  {'kind':<5}  {'times':>6}  {'first received':<20}  "
                f"{'last received':<20}  {'bytes':>8}  {'category':<{CATEGORY_WIDTH}}  reason"
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


def _print_counts(counts):
    """Rows per category (most first), each followed by its rows per reason, most first."""
    by_category = {}
    for count in counts:  # most frequent reason first, as reason_counts orders them
        by_category.setdefault(count["category"], []).append(count)
    totals = {name: sum(c["rows"] for c in found) for name, found in by_category.items()}
    for name in sorted(totals, key=lambda n: (-totals[n], quarantine.CATEGORIES.index(n))):
        # `other` is what no rule recognises: a new kind of refusal, said so on its line.
        note = "  (not a known kind of refusal: read its reasons)" if name == "other" else ""
        print(f"  {name}: {totals[name]}{note}")
        for count in by_category[name]:
            reason = _truncate(count["reason"], COUNTED_REASON_WIDTH)
            print(f"    {count['rows']:>6}  {reason}")


def _show(conn, args) -> int:
    """Print one row's details, full reason and content."""
    row = quarantine.get_row(conn, args.id)
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
    print(f"category:       {quarantine.category(row['reason'])}")
    print(f"reason:         {_printable(row['reason'])}")
    print(f"content ({row['size']} bytes{note}):")
    print(_printable(text, keep_newlines=True))
    return 0


def _replay(conn, args) -> int:
    """Replay and print one line per row and the totals; 1 when a database error stopped it."""
    summary = replay.ReplaySummary(dry_run=args.dry_run)
    try:
        for outcome in replay.replay_rows(conn, args.ids, args.dry_run):
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


def _outcome_line(outcome: replay.RowReplay, dry_run) -> str:
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


def _summary_line(summary: replay.ReplaySummary) -> str:
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
        f"{row['size']:>8}  {quarantine.category(row['reason']):<{CATEGORY_WIDTH}}  {reason}"
    )


def _as_json(row) -> dict:
    return {
        "id": row["id"],
        "kind": row["kind"],
        "reason": row["reason"],
        "category": quarantine.category(row["reason"]),
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


def register(group_):
    group_.add_command(group)
