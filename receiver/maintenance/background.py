"""The web worker's own upkeep, in threads: hourly, the coming months' partitions and the
expired digests of re-deliverable batches (receiver.storage.deliveries); every minute, the WAL
kept by the database's replication slots, and what Campaign sends (receiver.storage.shapes:
learned by one worker at a time, read by each), for /metrics."""

import logging
import threading
from datetime import timedelta

from ..observability import metrics
from ..storage import db, replication, shapes
from . import tasks

INTERVAL_SECONDS = 3600
SLOTS_INTERVAL_SECONDS = 60
# A minutely pass learns for at most this long (a backlog, e.g. after an upgrade, is caught up
# over several minutes rather than holding a connection and the database for long).
LEARN_BUDGET_SECONDS = 20
# ... and one pass a minute in all: each worker tries every minute; the first to come does it.
LEARN_EVERY = timedelta(seconds=55)
logger = logging.getLogger("receiver.maintenance")


def start(config, interval=INTERVAL_SECONDS, slots_interval=SLOTS_INTERVAL_SECONDS):
    """Start the daemon threads (gunicorn's post_worker_init); each works at once, then every
    `interval` (partitions) or `slots_interval` (slots). Returns the partitions' thread, whose
    `stop` event ends both; `slots` is the other. None when the upkeep is off: behind a pooler
    in transaction mode with no RECEIVER_MAINTENANCE_DATABASE_URL."""
    if config.upkeep_database_url is None:
        logger.warning(
            "the workers' upkeep is off: DATABASE_URL is a pooler in transaction mode; set "
            "RECEIVER_MAINTENANCE_DATABASE_URL to PostgreSQL itself, or run `receiver maintain`"
        )
        return None

    def connect():
        # A connection of its own, never one of the pool's: the request path keeps all of them.
        return db.connect(
            config.upkeep_database_url,
            "receiver maintenance",
            lock_timeout_ms=1000,
            statement_timeout_ms=tasks.STATEMENT_TIMEOUT_MS,
        )

    stop = threading.Event()

    def run():
        while True:
            tasks.ensure_ahead_quietly(connect)
            if stop.wait(interval):
                return

    def sample():
        failing = shapes_failing = False
        while True:
            failing = sample_slots_quietly(connect, failing)
            shapes_failing = watch_shapes_quietly(connect, config.learn_shapes, shapes_failing)
            if stop.wait(slots_interval):
                return

    thread = threading.Thread(target=run, name="receiver-partitions", daemon=True)
    thread.stop = stop
    thread.slots = threading.Thread(target=sample, name="receiver-slots", daemon=True)
    thread.start()
    thread.slots.start()
    return thread


def sample_slots_quietly(connect, failing=False) -> bool:
    """Set the slot gauge from one query; log the first failure of a run of them, never raise
    (for background use). Whether this one failed."""
    try:
        with connect() as conn:
            retained = replication.retained_by_slot(conn)
        metrics.observe_replication_slots(retained)
    except Exception:  # the database is down or busy: /metrics keeps the last sample
        if not failing:
            logger.warning("could not read the replication slots", exc_info=True)
        return True
    return False


def watch_shapes_quietly(connect, learn=True, failing=False, every=LEARN_EVERY) -> bool:
    """Learn what Campaign sent since the last pass (if `learn`, no other pass runs and none
    ran this minute), then set the change gauges from the tables, also when the pass failed (an
    accepted change must leave the gauge though learning is stuck); log the first failure of a
    run of them, never raise (for background use). Whether this one failed. `every`: the least
    time between two passes (None: none)."""
    failed = False
    try:
        with connect() as conn:
            if learn:
                try:
                    shapes.learn(conn, LEARN_BUDGET_SECONDS, min_interval=every)
                except Exception:  # the pass; the gauges are still read below
                    if not failing:
                        logger.warning("could not learn what Campaign sends", exc_info=True)
                    failed = True
            metrics.observe_campaign_changes(shapes.signals(conn), shapes.learned_until(conn))
    except Exception:  # the database is down or busy: the next minute tries again
        if not failing and not failed:
            logger.warning("could not read what Campaign sends", exc_info=True)
        return True
    return failed
