"""One maintenance pass: partitions ahead, stray rows into their months, mailing counts
rolled up, expired delivery digests deleted, what Campaign sends learned, retention if set.

Run by `receiver maintain` (a systemd timer, or a Procfile process with --every), and, for the
partitions alone, by every web worker in the background (receiver.maintenance.background), so a
deployment that runs nothing else still gets its coming months. A session advisory lock makes
concurrent passes (two hosts, two workers) take turns instead of racing on the same DDL.
"""

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg

from ..storage import db, deliveries, mailing_counts, partitions, shapes
from . import retention

logger = logging.getLogger("receiver.maintenance")
# One maintenance pass at a time (a different lock from partitions.PARTITIONS_LOCK_ID, which
# each partition change takes for itself inside the pass).
MAINTENANCE_LOCK_ID = 0x7265636569766574
# Stray rows of months up to this far ahead get a partition of their own; later ones (a clock
# set to 9999) stay in the default partition rather than create hundreds of empty months.
SPLIT_MONTHS_AHEAD = 12
# A statement of a maintenance pass that runs longer than this is cancelled, and its step fails
# and says so: each statement is a short batch (10,000 rows deleted, a range compacted, a month
# attached under its own 5 s cap), so ten minutes means something is wrong, and a pass under
# `--every` or a worker's hourly upkeep must end rather than hang.
STATEMENT_TIMEOUT_MS = 600_000
# How long a pass learns what Campaign sends (receiver.storage.shapes) before it goes on: the
# workers learn every minute too, so this only matters for a backlog (after an upgrade).
LEARN_BUDGET_SECONDS = 300


@dataclass
class MaintenanceReport:
    created: list = field(default_factory=list)  # partitions created
    split: list = field(default_factory=list)  # (partition, rows moved out of the default)
    moved_old_rows: int = 0
    rolled_up: int = 0  # mailings whose mailing_counts rows were summed into one
    deliveries_deleted: int = 0  # digests of re-deliverable batches past their lifetime
    learned: shapes.LearnReport | None = None  # what Campaign sends, learned since the last pass
    pruned: retention.PruneReport | None = None
    skipped: bool = False  # another pass held the lock
    failed: list = field(default_factory=list)  # (step, error message): steps that failed

    @property
    def ok(self) -> bool:
        return not self.failed


def maintain(conn, keep=None, now=None, keep_month=None) -> MaintenanceReport:
    """One pass on an autocommit connection; `keep` (a timedelta) enables retention, and
    `keep_month` (see retention.prune) spares the months it names a reason for.

    Every step runs even when an earlier one failed: a month that cannot be attached must not
    hold back retention or the digests' expiry. Failures are in `report.failed`."""
    report = MaintenanceReport()
    if keep is not None:
        retention.horizon_for(keep, now)  # refuse a bad retention before touching anything
    steps = [
        ("partitions", "created", lambda: partitions.ensure_months(conn, now)),
        ("stray events", "split", lambda: split_default(conn, keep, now, report.failed)),
        ("old table", "moved_old_rows", lambda: partitions.move_old_table(conn)),
        ("mailing counts", "rolled_up", lambda: mailing_counts.roll_up(conn)),
        ("delivery digests", "deliveries_deleted", lambda: expire_deliveries(conn, now)),
        ("campaign shapes", "learned", lambda: shapes.learn(conn, LEARN_BUDGET_SECONDS)),
    ]
    if keep is not None:
        steps.append(
            ("retention", "pruned", lambda: retention.prune(conn, keep, now, keep_month=keep_month))
        )
    with db.session_lock_if_free(conn, MAINTENANCE_LOCK_ID) as held:
        if not held:
            report.skipped = True
            return report
        for step, attribute, work in steps:
            run_step(conn, report, step, lambda a=attribute, w=work: setattr(report, a, w()))
    return report


def run_step(conn, report, step, work) -> None:
    """`work()`; a database error is logged and noted in `report.failed`, and the pass goes on.
    A connection that broke ends the pass: every later step would fail the same way."""
    try:
        work()
    except psycopg.Error as error:
        if conn.closed:
            raise
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.rollback()  # an explicit transaction the step left open
        report.failed.append((step, one_line(error)))
        logger.warning("maintenance step failed", extra={"fields": {"step": step}}, exc_info=True)


def one_line(error) -> str:
    """An error's first line, with its SQLSTATE when it has one."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    sqlstate = getattr(error, "sqlstate", None)
    return f"{text} (SQLSTATE {sqlstate})" if sqlstate else text


def split_default(conn, keep=None, now=None, failed=None) -> list[tuple[str, int]]:
    """Give each month with rows in the default partition its own partition (rows moved),
    from the retention horizon up to SPLIT_MONTHS_AHEAD months ahead. A month that cannot be
    split (noted in `failed`, if given, else raised) does not stop the others."""
    now = now or datetime.now(UTC)
    latest = partitions.add_months(partitions.month_start(now), SPLIT_MONTHS_AHEAD)
    earliest = retention.horizon_for(keep, now) if keep is not None else None
    split = []
    for month, rows in partitions.default_months(conn):
        if month > latest or (earliest is not None and partitions.add_months(month, 1) <= earliest):
            continue
        name = partitions.partition_name(month)
        try:
            if partitions.create_month(conn, month):
                split.append((name, rows))
        except psycopg.Error as error:
            if failed is None or conn.closed:
                raise
            failed.append((f"stray events of {name}", one_line(error)))
            logger.warning("could not split a month", extra={"fields": {"partition": name}})
    return split


def expire_deliveries(conn, now=None) -> int:
    """Delete the delivery digests older than their lifetime (receiver.storage.deliveries):
    past the sender's retry window nobody re-sends those bodies, and without this the table
    would grow by a row per batch for ever."""
    return deliveries.delete_before(conn, (now or datetime.now(UTC)) - deliveries.LIFETIME)


def ensure_ahead_quietly(connect) -> None:
    """Make sure the coming months have partitions and expired delivery digests are gone; log,
    never raise (for background use)."""
    try:
        created = []
        with connect() as conn, db.session_lock_if_free(conn, MAINTENANCE_LOCK_ID) as held:
            if held:
                created = partitions.ensure_months(conn)
                expire_deliveries(conn)
        if created:
            logger.info("partitions created", extra={"fields": {"created": created}})
    except Exception:  # the next round tries again; events are safe in events_default meanwhile
        logger.warning("could not check the coming months' partitions", exc_info=True)
