"""Retention: whole months of events dropped, old resolved quarantine rows deleted, old status
changes that a later one supersedes deleted (receiver/storage/feed.py), and what Campaign sent
only before the horizon forgotten (receiver/storage/shapes.py).

A month's partition goes only once every event it can hold is older than the horizon, so what
is kept is never thinned. The horizon may not come closer than the sender's retry window plus a
margin: Campaign re-sends an event for up to three days after its creation, and a re-delivery
whose month was already dropped would be stored again, a second copy of an event we had.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from .. import durations
from ..storage import deliveries, feed, mailing_counts, partitions, quarantine, shapes

SENDER_RETRY_WINDOW = timedelta(days=3)
RETENTION_MARGIN = timedelta(days=4)
MINIMUM_RETENTION = SENDER_RETRY_WINDOW + RETENTION_MARGIN
SUB_DAY_UNITS = ("s", "m", "min", "h")


class RetentionError(ValueError):
    """A retention setting the receiver will not act on; the message says why."""


@dataclass
class PruneReport:
    """What a prune did (or would do, with dry_run)."""

    horizon: datetime
    dropped: list = field(default_factory=list)  # (partition name, bytes)
    default_rows_deleted: int = 0
    quarantine_rows_deleted: int = 0
    mailings_deleted: int = 0  # mailing_counts of mailings whose newest event was older
    status_changes_deleted: int = 0  # feed entries older, superseded by a later one
    deliveries_deleted: int = 0  # digests that may vouch for events just deleted
    shapes_forgotten: int = 0  # event_shapes rows last seen before the horizon
    leftovers_dropped: list = field(default_factory=list)  # tables an earlier prune detached
    kept: list = field(default_factory=list)  # (month, why): old enough, kept by `keep_month`
    bytes_before: int = 0
    bytes_after: int = 0
    dry_run: bool = False

    @property
    def bytes_freed(self) -> int:
        return sum(size for _, size in self.dropped)


def parse_duration(text: str) -> timedelta:
    """A retention as receiver.durations reads it (`400d`, `57w`, `13mo`, `1y`); units below a
    day are refused: `13m` meant 30-day months in earlier releases, and read as minutes it
    could silently shrink a retention (20000m: 1,600 years then, 14 days now)."""
    try:
        unit = durations.split_duration(text)[1].lower()
    except ValueError as error:
        raise RetentionError(str(error)) from None
    if unit in SUB_DAY_UNITS:
        raise RetentionError(
            f"{text!r}: a retention is counted in d, w, mo (30-day months) or y, not {unit!r} "
            "(m means minutes; for months write mo, e.g. 13mo)"
        )
    try:
        return durations.parse_duration(text)
    except ValueError as error:
        raise RetentionError(str(error)) from None


def horizon_for(keep: timedelta, now: datetime | None = None) -> datetime:
    """The instant before which events may go; refuses a retention shorter than allowed."""
    if keep < MINIMUM_RETENTION:
        raise RetentionError(
            f"refusing to keep less than {MINIMUM_RETENTION.days} days: Campaign re-sends events "
            f"for {SENDER_RETRY_WINDOW.days} days, and an event re-sent after its month was "
            "dropped would be stored a second time"
        )
    return (now or datetime.now(UTC)) - keep


def prune(conn, keep: timedelta, now=None, dry_run=False, keep_month=None) -> PruneReport:
    """Drop the months wholly older than the horizon, stray old rows of the default partition,
    and quarantine rows resolved before it. `conn` in autocommit. `keep_month(conn, month)`,
    if given, names a reason to keep a month (e.g. its export is not verified), or None.

    With `dry_run`, nothing changes and the report counts what the real run would delete, by
    the same conditions."""
    started = datetime.now(UTC)
    report = PruneReport(horizon_for(keep, now), dry_run=dry_run)
    report.bytes_before = events_bytes(conn)
    doomed = [
        (month, p)
        for month, p in partitions.monthly_partitions(conn).items()
        if partitions.add_months(month, 1) <= report.horizon
    ]
    kept_from = report.horizon
    if keep_month is not None:
        doomed, kept_from = spare_months(conn, doomed, report, keep_month)
    doomed = [p for _, p in doomed]
    report.dropped = [(p.name, p.bytes) for p in doomed]
    leftovers = [
        name for name in partitions.detached_leftovers(conn) if wholly_before(name, report.horizon)
    ]
    report.leftovers_dropped = leftovers
    if dry_run:
        count_what_would_go(conn, report, kept_from)
        report.bytes_after = report.bytes_before - report.bytes_freed
        return report
    for name in leftovers:  # a prune interrupted after DETACH
        partitions.drop_month(conn, name)
    for partition in doomed:
        partitions.drop_month(conn, partition.name)
    report.default_rows_deleted = partitions.delete_default_before(conn, kept_from)
    report.quarantine_rows_deleted = quarantine.delete_resolved_before(conn, report.horizon)
    report.mailings_deleted = mailing_counts.delete_before(conn, kept_from)
    report.status_changes_deleted = feed.compact_status_changes(conn, report.horizon)
    report.shapes_forgotten = shapes.forget_before(conn, report.horizon)
    if report.dropped or report.default_rows_deleted:
        # A digest vouches that its batch's events are stored; some of them may just have
        # gone. Without it, a body re-sent now is validated and its events stored again, where
        # the digest would have answered "duplicates" for events that no longer exist. Digests
        # are only a shortcut (the unique key decides): losing a few days of them costs nothing.
        report.deliveries_deleted = deliveries.delete_before(conn, started)
    report.bytes_after = events_bytes(conn)
    return report


def count_what_would_go(conn, report, kept_from) -> None:
    """Fill a dry run's counts: what each deleting step of the real run would delete."""
    report.default_rows_deleted = partitions.count_default_before(conn, kept_from)
    report.quarantine_rows_deleted = quarantine.count_resolved_before(conn, report.horizon)
    report.mailings_deleted = mailing_counts.count_before(conn, kept_from)
    report.status_changes_deleted = feed.count_compactable_status_changes(conn, report.horizon)
    report.shapes_forgotten = shapes.count_before(conn, report.horizon)
    if report.dropped or report.default_rows_deleted:
        report.deliveries_deleted = deliveries.count(conn)


def wholly_before(name: str, horizon: datetime) -> bool:
    """True if every event the monthly table `name` can hold is older than `horizon`."""
    month = partitions.month_of_name(name)
    return month is not None and partitions.add_months(month, 1) <= horizon


def spare_months(conn, doomed, report, keep_month):
    """Take the months `keep_month` keeps off `doomed` (into report.kept, with the reason);
    return the rest, and the instant before which the rest may go: the start of the first month
    kept (its stray rows in the default partition and its mailings' counts stay with it), or the
    horizon."""
    strays = [month for month, _ in partitions.default_months(conn) if month < report.horizon]
    reasons = {
        month: keep_month(conn, month) for month in sorted({m for m, _ in doomed} | set(strays))
    }
    report.kept = [(month, why) for month, why in reasons.items() if why]
    kept_from = min((month for month, _ in report.kept), default=report.horizon)
    return [(month, p) for month, p in doomed if not reasons[month]], kept_from


def events_bytes(conn) -> int:
    """Bytes on disk of every partition of `events`, indexes included."""
    return sum(p.bytes for p in partitions.list_partitions(conn))
