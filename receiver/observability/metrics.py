"""Every Prometheus metric the receiver exports, declared here with its help text.

Under gunicorn the workers are separate processes; with PROMETHEUS_MULTIPROC_DIR set (the
gunicorn config sets and wipes it) each writes its own files and /metrics sums them.
"""

import logging
import os
import tempfile
import time

logger = logging.getLogger("receiver.metrics")


def _check_multiprocess_dir():
    """Make sure the multiprocess directory is usable before prometheus_client reads it.

    Metrics must never stop events from being stored: if the directory cannot be written (disk
    read-only, wrong permissions), this process falls back to its own in-memory metrics (a
    scrape then sees one worker) and says so loudly, instead of failing every request."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
        # The files are sparse and mmapped: on a full disk the first write to a new page is a
        # SIGBUS that kills the worker, every time it is restarted. Check for room first.
        if not has_room(directory):
            raise OSError("less than 4 MiB free")
    except OSError as error:
        logger.error("metrics directory %s unusable (%s): per-process metrics", directory, error)
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        # prometheus_client picks its value class when first imported, which may have been
        # in gunicorn's master (child_exit) before this worker forked: pick again. A worker
        # that fails to boot makes gunicorn stop the whole server.
        from prometheus_client import values

        values.ValueClass = values.get_value_class()


def has_room(directory, needed=4 * 1024 * 1024) -> bool:
    """Whether the filesystem of `directory` has `needed` bytes free (for mmapped files)."""
    stats = os.statvfs(directory)
    return stats.f_bavail * stats.f_frsize >= needed


_check_multiprocess_dir()

from flask import Response  # noqa: E402 (after the directory check, which decides the mode)
from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from .metricfiles import WorkerFilesCollector  # noqa: E402

PREFIX = "receiver"

REQUESTS = Counter(
    f"{PREFIX}_requests",
    "Webhook requests by outcome and HTTP status.",
    ["outcome", "status"],
)
EVENTS = Counter(
    f"{PREFIX}_events",
    "Events received, by event type and outcome (stored, duplicate, quarantined).",
    ["type", "outcome"],
)
BODIES_QUARANTINED = Counter(
    f"{PREFIX}_bodies_quarantined",
    "Request bodies kept in quarantine because they were not a JSON list or object.",
)
# kind: the quarantine row's (body, event); category: receiver.storage.quarantine.CATEGORIES, a
# fixed set whatever the reason's text, so `other` growing is a new kind of refusal to look at.
QUARANTINED = Counter(
    f"{PREFIX}_quarantined",
    "Things kept in quarantine by kind (body, event) and category, counted per delivery (a "
    "retried body counts each time, like receiver_events_total).",
    ["kind", "category"],
)
AUTH_FAILURES = Counter(
    f"{PREFIX}_auth_failures",
    "Refused requests by reason (missing, malformed, invalid, source_denied).",
    ["reason"],
)
BATCH_SIZE = Histogram(
    f"{PREFIX}_batch_size_events",
    "Events per accepted request.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200),
)
REQUEST_SECONDS = Histogram(
    f"{PREFIX}_request_duration_seconds",
    "Time from reading the request to the answer, by outcome.",
    ["outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DATABASE_SECONDS = Histogram(
    f"{PREFIX}_database_duration_seconds",
    "Time spent in the batch's database transaction, commit included.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
# Upper bounds of the lag histogram's buckets; PostgreSQL counts a batch's events into them
# (receiver.storage.events.LAG_BUCKET), so they are one list for both.
LAG_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600, 3 * 24 * 3600)
EVENT_LAG_SECONDS = Histogram(
    f"{PREFIX}_event_lag_seconds",
    "Receive time minus the event's `created`: how late Campaign delivers (stored events).",
    buckets=LAG_BUCKETS,
)
LAST_STORED = Gauge(
    f"{PREFIX}_last_stored_event_timestamp_seconds",
    "Unix time at which an event was last stored.",
    multiprocess_mode="max",
)
# Per client, so that a stopped `sent` flow of one client shows while others go on. Labels:
# client_id (a deployment serves a handful of Campaign clients; capped below all the same) and
# kind, `sent` or `other` (not the event type: newer types must not add series).
CLIENT_LAST_STORED = Gauge(
    f"{PREFIX}_client_last_stored_timestamp_seconds",
    "Unix time at which an event of the client was last stored, by kind (sent, other).",
    ["client_id", "kind"],
    multiprocess_mode="max",
)
# Unlisted client ids that get a series, per process, first come: a flood of made-up ids (a
# test tool, a typo'd setup) must not flood Prometheus. The ids of RECEIVER_METRICS_CLIENT_IDS
# always get theirs and take none of these places, so no flood before a real client's first
# batch can leave it without the series its alert needs.
MAX_CLIENT_SERIES = 50
_listed_clients = frozenset()  # RECEIVER_METRICS_CLIENT_IDS, set by init_app
_clients_seen = set()  # unlisted ids with series
_client_gauges = {}  # (client_id, kind): its CLIENT_LAST_STORED child
_cap_reported = False
POOL_CONNECTIONS = Gauge(
    f"{PREFIX}_pool_connections",
    "Database connections of the workers' pools, by state (in_use, idle, waiting requests).",
    ["state"],
    multiprocess_mode="livesum",
)
# The change feed over HTTP (receiver.web.feed), apart from the webhook's series: its requests
# long-poll for up to 30 s and must not move the webhook's outcomes or latencies.
FEED_REQUESTS = Counter(
    f"{PREFIX}_feed_requests",
    "Change feed requests (GET /feed/...), by feed (status-changes, events) and outcome (ok, "
    "bad_request, unauthorized, not_enabled, too_many_requests, too_many_waiting, unavailable).",
    ["feed", "outcome"],
)
FEED_ROWS = Counter(
    f"{PREFIX}_feed_rows",
    "Rows answered by the change feed, by feed (status-changes, events).",
    ["feed"],
)
FEED_WAITING = Gauge(
    f"{PREFIX}_feed_waiting_requests",
    "Change feed requests long-polling right now (at most RECEIVER_FEED_MAX_WAITING a worker).",
    multiprocess_mode="livesum",
)


def observe_buckets(histogram, counts, total):
    """As many `histogram.observe()` calls as `counts` says, already bucketed: {bucket index
    (bisect_left in the histogram's bounds, +Inf last): how many amounts}, their sum `total`.
    One write per bucket touched: a batch's 100 event lags are otherwise 100 locked writes to
    mmapped files, and 100 bisects in Python that PostgreSQL does in the batch statement.

    Writes the Histogram's own bucket and sum values (prometheus_client 0.20-0.26, pinned in
    setup.cfg; tests/unit/test_metrics.py compares the result with observe())."""
    histogram._raise_if_not_observable()
    if counts:
        histogram._sum.inc(total)
    for index, count in counts.items():
        histogram._buckets[index].inc(count)


def observe_pool(pool):
    """Copy the pool's counters into the gauges (after each request; a dict read, no I/O),
    writing only the ones that changed since this process last wrote them: most requests find
    the pool as the one before left it, and each write is a locked write to a metrics file."""
    stats = pool.get_stats()
    size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
    for state, value in zip(
        _POOL_STATES, (size - idle, idle, stats.get("requests_waiting", 0)), strict=True
    ):
        if _pool_written.get(state) != value:
            _pool_written[state] = value
            POOL_CONNECTIONS.labels(state).set(value)


_POOL_STATES = ("in_use", "idle", "waiting")
_pool_written = {}  # state: the value this process last wrote to POOL_CONNECTIONS


def observe_stored_clients(pairs):
    """Set the per-client gauges for one batch's stored (client_id, type) pairs."""
    now = time.time()
    for client, kind in {(client, "sent" if kind == "sent" else "other") for client, kind in pairs}:
        gauge = _client_gauges.get((client, kind))
        if gauge is None:
            if not _admit_client(client):
                continue
            # Kept: labels() validates and looks the child up under a lock, every batch.
            gauge = _client_gauges[(client, kind)] = CLIENT_LAST_STORED.labels(str(client), kind)
        gauge.set(now)


def _admit_client(client) -> bool:
    """Whether `client` may have series: listed, already has one, or a place is left."""
    global _cap_reported
    if client in _listed_clients or client in _clients_seen:
        return True
    if len(_clients_seen) < MAX_CLIENT_SERIES:
        _clients_seen.add(client)
        return True
    if not _cap_reported:
        # Once per process: the series a real client lacks is otherwise lost without a word.
        _cap_reported = True
        logger.warning(
            "client %s gets no metric series: %d other client ids took the places; list your "
            "clients in RECEIVER_METRICS_CLIENT_IDS (they always get theirs)",
            client,
            MAX_CLIENT_SERIES,
        )
    return False


def set_listed_clients(client_ids):
    """The client ids that always get their series (RECEIVER_METRICS_CLIENT_IDS)."""
    global _listed_clients
    _listed_clients = frozenset(client_ids)


def render_metrics():
    """The exposition text: summed over all workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        WorkerFilesCollector(registry)
    else:
        from prometheus_client import REGISTRY as registry
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def init_app(app):
    """Expose /metrics (no credentials: Prometheus scrapes it; it holds counts, no data). Only
    sources in RECEIVER_METRICS_ALLOWED_IPS may read it: receiver.web.auth.guard_metrics."""
    set_listed_clients(app.config["RECEIVER"].metrics_client_ids)
    app.add_url_rule("/metrics", "metrics", render_metrics, methods=["GET"])


# Replication slots of the receiver's database (a CDC connector's, a standby's): the WAL each
# one keeps on the database's disk. Sampled every minute by each worker's background thread
# (receiver.maintenance.background), never at scrape time; the most recent sample of a live
# worker is exported. A slot dropped since reads 0 until the workers restart (multiprocess
# files cannot forget a series).
REPLICATION_SLOT_RETAINED = Gauge(
    f"{PREFIX}_replication_slot_retained_bytes",
    "WAL the database keeps for a replication slot: current WAL position minus the slot's "
    "restart_lsn (sampled every minute).",
    ["slot"],
    multiprocess_mode="livemostrecent",
)
_slots_seen = set()


def observe_replication_slots(retained):
    """Set the slot gauge from one sample, {slot name: bytes retained}; slots gone read 0."""
    for slot in _slots_seen - set(retained):
        REPLICATION_SLOT_RETAINED.labels(slot).set(0)
    for slot, nbytes in retained.items():
        REPLICATION_SLOT_RETAINED.labels(slot).set(nbytes)
    _slots_seen.update(retained)


# What Campaign sends that it did not before (receiver.storage.shapes), read from the database
# every minute by each worker's background thread, so every host says the same. Per client and
# change: new_type, new_field, kind_changed, new_value (not yet reviewed with `receiver report
# schema --accept`), silent_type (a daily type with nothing for a week). The client label is
# chosen from the database's answer alone (listed clients, then the lowest ids up to the cap,
# then "other"), so every worker and host labels a change alike: one alert, not two.
CAMPAIGN_CHANGES = Gauge(
    f"{PREFIX}_campaign_changes",
    "What Campaign sends that it did not before, by client and change (new_type, new_field, "
    "kind_changed, new_value: not reviewed yet; silent_type: a type that arrived daily and "
    "has not for a week). `receiver report schema` lists them.",
    ["client_id", "change"],
    multiprocess_mode="livemostrecent",
)
CAMPAIGN_SHAPES_LEARNED = Gauge(
    f"{PREFIX}_campaign_shapes_learned_timestamp_seconds",
    "Every event that arrived before this Unix time is counted into what Campaign sends "
    "(the changes above are as fresh as this).",
    # Every worker reads the same row: the most recent reading is as good as the largest, and
    # shares the file of the gauges above (a mode more would be a file more per worker).
    multiprocess_mode="livemostrecent",
)
_change_series = set()


def observe_campaign_changes(counts, learned_at):
    """Set the gauges from {(client_id, change): count} and the last caught-up time (or None);
    series that were set before and are gone now read 0."""
    unlisted = sorted({client for client, _ in counts} - _listed_clients)
    labelled = _listed_clients | set(unlisted[:MAX_CLIENT_SERIES])
    summed = {}
    for (client, change), count in counts.items():
        label = str(client) if client in labelled else "other"
        summed[label, change] = summed.get((label, change), 0) + count
    for key in _change_series - set(summed):
        CAMPAIGN_CHANGES.labels(*key).set(0)
    for key, count in summed.items():
        CAMPAIGN_CHANGES.labels(*key).set(count)
    _change_series.update(summed)
    if learned_at is not None:
        CAMPAIGN_SHAPES_LEARNED.set(learned_at.timestamp())
