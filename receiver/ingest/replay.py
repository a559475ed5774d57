"""Replaying quarantined content after a fix: today's parsing and validation, stored idempotently.

Replay runs the functions the webhook calls over each row and inserts what now passes with the
webhook's own INSERT ... ON CONFLICT DO NOTHING: an event that is already in `events` is a
duplicate, never a second row, so replaying twice is harmless. Each row is replayed in its own
transaction together with the update of that row, so its events and its resolution commit
together or not at all, and a failure later on undoes nothing before it.
"""

from dataclasses import dataclass, field

import psycopg

from ..storage import events, quarantine
from . import batch, jsoncodec, schemas

LISTED_FAILURES = 5  # failed events named in a body row's reason; the rest are counted
# A body row that starts with gzip's magic bytes was kept compressed (a corrupt one, or one
# quarantined before the webhook decompressed gzip): replay undoes it, up to this many bytes.
GZIP_MAGIC = b"\x1f\x8b"
REPLAY_MAX_BYTES = 64 * 1024 * 1024


@dataclass
class Evaluation:
    """What today's parsing and validation make of one row's content."""

    items: int  # items the content holds (0 when it does not parse)
    events: list = field(default_factory=list)  # schemas.ValidatedEvent, the valid ones
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


def evaluate(kind, content: bytes) -> Evaluation:
    """Today's parsing and validation of a row's content, as the webhook would do it now."""
    if kind == "event":
        # An event row holds one JSON value. Wrapped in a list, decode_batch returns exactly that
        # value even when it is a list (which it would unpack as a batch) or a number (which it
        # would refuse as a body), so validate_event gives the webhook's own reason for it.
        document = b"[" + content.removeprefix(jsoncodec.UTF8_BOM) + b"]"
    else:
        document = content
    if kind == "body" and content.startswith(GZIP_MAGIC):
        try:
            document = batch.decode_content(content, "gzip", REPLAY_MAX_BYTES)
        except (jsoncodec.BadBody, batch.DecodedTooLarge) as error:
            return Evaluation(0, failures=[(None, str(error))])
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
            event = schemas.validate_event(item)
        except schemas.InvalidEvent as error:
            evaluation.failures.append((number, str(error)))
            continue
        evaluation.events.append(event)
        evaluation.positions.setdefault(event.payload, number)
    return evaluation


def replay_row(conn, row_id, dry_run=False) -> RowReplay | None:
    """Replay one row in its own transaction (rolled back when dry_run); None if it is gone."""
    with conn.transaction() as transaction:
        row = quarantine.lock_row(conn, row_id)
        if row is None:
            return None
        outcome = RowReplay(row["id"], row["kind"])
        if row["resolved_at"] is not None:
            outcome.already_resolved = True
            return outcome
        evaluation = evaluate(row["kind"], row["content"])
        outcome.items = evaluation.items
        outcome.failures = list(evaluation.failures)
        # The webhook's own statement and per-event fallback, in this row's transaction: its
        # events and its resolution commit together or not at all.
        stored, refused = events.insert_events(conn, evaluation.events)
        # Valid but refused by PostgreSQL (a value too large for an index): still not an event.
        for item in refused:
            outcome.failures.append((evaluation.positions.get(item.content), item.reason))
        outcome.failures.sort(key=lambda failure: failure[0] or 0)
        outcome.stored = events.count_stored(stored)
        outcome.duplicates = len(evaluation.events) - outcome.stored - len(refused)
        if outcome.resolved:
            quarantine.resolve_row(conn, row_id, outcome.resolution())
        else:
            quarantine.update_reason(conn, row_id, outcome.reason())
        if dry_run:
            # The very statements a real replay runs, then undone: the counts are exact.
            raise psycopg.Rollback(transaction)
    return outcome


def replay_candidates(conn, ids=None) -> list[int]:
    """The given ids (LookupError if any does not exist), or every unresolved row, by id."""
    if not ids:
        return quarantine.unresolved_ids(conn)
    found = quarantine.existing_ids(conn, ids)
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
