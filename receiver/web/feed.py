"""GET /feed/status-changes and GET /feed/events: the change feeds (receiver.storage.feed) over
HTTP, for integrations (a CRM, a warehouse loader) that must not hold database credentials.

A reader keeps one cursor per feed: it asks for what follows it, applies the rows, keeps the
answer's `next` and asks again from there; it never misses or repeats a row, whatever order the
batches commit in. With `wait`, an empty answer is held back until something arrives (a
long-poll), so a reader hears of a batch within a poll of its rows becoming readable (at its
commit, unless an older transaction on the server still runs: receiver.storage.feed) without
asking in a loop.

Whatever the readers do, Campaign's webhook must not notice:
- reads run on a pool of their own (FEED_POOL_SIZE connections per worker, opened when first
  needed), never the webhook's, and a connection is held for one read, never across the sleep
  between two polls;
- every feed request holds one of the worker's few gunicorn threads until its answer is
  written out (a long-poll while it sleeps, a read of 10,000 rows while it reads and writes
  them), so at most RECEIVER_FEED_MAX_REQUESTS of a worker are served at once, long-polls
  included (the boot keeps it below the threads: the webhook always has the rest); one more
  is answered 429 at once rather than take another thread; of those, at most
  RECEIVER_FEED_MAX_WAITING long-poll (0: none, `wait` is then ignored and an empty page
  answered at once). What the cap leaves is CPU: that many threads reading and writing pages
  beside the webhook's, each page's work bounded by `limit`;
- a worker told to stop (SIGTERM, gunicorn's graceful stop; SIGINT, SIGQUIT) ends its
  long-polls at once with their empty page (gunicorn_conf.py calls `stop`), so that stopping
  takes no longer with readers than without;
- every read is bounded like the webhook's database calls (the pool's wait, then the database
  deadline, cut by the watchdog), and the whole answer comes within `wait` + 9.5 s of the
  request's arrival: a slow or silent database is answered 503 with Retry-After.

Readers authenticate with RECEIVER_FEED_BASIC_AUTH, never with Campaign's credentials (and a
feed pair cannot post events). Without feed credentials the feed does not exist: 404. Campaign's
source allow-list (RECEIVER_ALLOWED_IPS) does not apply: it names Campaign's sending address,
and the feed's readers are other systems, on other addresses, that the feed's own credentials
admit; the client address (X-Forwarded-For read as for the webhook) goes into the log line.
"""

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC
from functools import partial

import orjson
from flask import Blueprint, current_app, g, request

from ..deadline import Deadline
from ..observability import metrics
from ..storage import db, feed
from . import auth, webhook, worker

bp = Blueprint("feed", __name__)
logger = logging.getLogger("receiver.request")

# Connections of the feed's pool per worker: one for each feed request a worker serves at once by
# default (RECEIVER_FEED_MAX_REQUESTS, 2); a read holds one for milliseconds (a big page for
# longer), so a worker allowed more requests than that seldom has one wait for a connection.
FEED_POOL_SIZE = 2
POOL_NAME = "receiver.feed_pool"
# app.extensions: the places of all feed requests, of the long-polls, and the worker's stop.
REQUESTS = "receiver.feed_requests"
WAITING = "receiver.feed_waiting"
STOPPING = "receiver.feed_stopping"
DEFAULT_LIMIT, MAX_LIMIT = 1000, 10_000
MAX_WAIT_SECONDS = 30
# Between two reads of a long-poll: a batch is heard of within this long of becoming readable,
# for about three reads (two short statements each) a second per waiting request.
POLL_SECONDS = 0.3
# The answer to one feed request (or long-poll) too many: a request holds its place for at most
# `wait` + 9.5 s, a read without `wait` for far less, so a place is soon free.
RETRY_PLACES = {"Retry-After": "1"}
# Every answer within `wait` + this long of the request's arrival, the webhook's own bound.
ANSWER_WITHIN_SECONDS = webhook.ANSWER_WITHIN_SECONDS - webhook.ANSWER_RESERVE_SECONDS
CHALLENGE = {"WWW-Authenticate": 'Basic realm="receiver feed", charset="UTF-8"'}
OUTCOMES = (
    "ok",
    "bad_request",
    "unauthorized",
    "not_enabled",
    "too_many_requests",
    "too_many_waiting",
    "unavailable",
)
# Answers hold personal data (recipients' addresses): no proxy or browser may keep them.
NO_STORE = {"Cache-Control": "no-store"}


class BadQuery(ValueError):
    """A parameter the feed cannot take; the message says which, in one line."""


@dataclass(frozen=True)
class Feed:
    """One of the feeds: how it is read, named and answered."""

    name: str  # the path's last part, and the metrics' `feed` label
    key: str  # the answer's key for the rows
    tie: str  # the cursor's tie-break, for Cursor.parse
    read: object  # (conn, cursor, limit, client) -> feed.Page
    answer: object  # a row as answered


def answer_status_change(row) -> dict:
    """Times in UTC, and `suppress` as `receiver feed status-changes` prints it."""
    row["status_at"] = row["status_at"].astimezone(UTC)
    row["changed_at"] = row["changed_at"].astimezone(UTC)
    row["suppress"] = row["status"] != "subscribed"
    return row


def answer_event(row) -> dict:
    """Times in UTC, and the payload's JSON text put in the answer as it is (orjson.Fragment)."""
    row["created_at"] = row["created_at"].astimezone(UTC)
    row["received_at"] = row["received_at"].astimezone(UTC)
    row["payload"] = orjson.Fragment(row["payload"])
    return row


STATUS_CHANGES = Feed(
    "status-changes", "changes", "id", feed.read_status_changes, answer_status_change
)
# The payload read as its JSON text: parsed into Python and written again, an integer beyond 64
# bits (exact, docs/answers.md) fails orjson, one beyond 4,300 digits fails the parse itself,
# and that event would stop its readers for good.
EVENTS = Feed("events", "events", "event", partial(feed.read_events, payload="text"), answer_event)


@dataclass(frozen=True)
class Query:
    after: feed.Cursor
    limit: int
    client: int | None
    wait: int


class Places:
    """At most `most` at once in this process: feed requests (RECEIVER_FEED_MAX_REQUESTS) or,
    of those, long-polls (RECEIVER_FEED_MAX_WAITING); `gauge`, if given, follows the count."""

    def __init__(self, most: int, gauge=None):
        self.most = most
        self.count = 0
        self.gauge = gauge
        self._lock = threading.Lock()

    def take(self) -> "Place | None":
        """A place, or None when every one is taken."""
        with self._lock:
            if self.count >= self.most:
                return None
            self.count += 1
        if self.gauge is not None:
            self.gauge.inc()
        return Place(self)

    def _give_back(self):
        with self._lock:
            self.count -= 1
        if self.gauge is not None:
            self.gauge.dec()


class Place:
    """A place taken; `release` gives it back (once, however often it is called)."""

    def __init__(self, places: Places):
        self._places = places

    def release(self):
        places, self._places = self._places, None
        if places is not None:
            places._give_back()


class Stopping:
    """Set once the worker is told to stop: its long-polls answer at once. `stop` runs in a
    signal handler, which may interrupt the main thread anywhere, another `stop` included:
    only the first call takes the event's lock, which the main thread takes nowhere else."""

    def __init__(self):
        self.requested = False
        self.event = threading.Event()

    def stop(self):
        if not self.requested:
            self.requested = True
            self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()

    def wait(self, seconds) -> bool:
        """Sleep `seconds`, less if the worker is told to stop meanwhile; whether it was."""
        return self.event.wait(seconds)


@bp.get("/feed/status-changes")
def read_status_changes():
    """Status changes after the cursor `after`."""
    return serve(STATUS_CHANGES)


@bp.get("/feed/events")
def read_events():
    """Stored events after the cursor `after`."""
    return serve(EVENTS)


def serve(which: Feed):
    """Authenticate, read the parameters, read (and wait) within the bound; every exit answers
    through `finish`."""
    config = current_app.config["RECEIVER"]
    arrival = worker.arrival() or time.monotonic()
    if not config.feed_enabled:
        # Closed by default: nobody was given a feed credential, so there is no feed.
        return finish(which, "not_enabled", 404, "feed not enabled")
    refusal = auth.get_authenticator().check_feed_credentials(request)
    if refusal:
        return finish(which, "unauthorized", 401, "authentication required", CHALLENGE, refusal)
    try:
        query = parse_query(request.args, which.tie)
    except BadQuery as error:
        return finish(which, "bad_request", 400, str(error))
    place = current_app.extensions[REQUESTS].take()
    if place is None:
        # Every feed request, with `wait` or without, holds a thread until it is answered.
        return finish(which, "too_many_requests", 429, "too many feed requests", RETRY_PLACES)
    try:
        response = read_and_answer(which, query, arrival)
    except BaseException:
        place.release()
        raise
    # Given back once the server has written the answer out and closed it (however that
    # ends): writing 10,000 rows to a slow reader holds the thread too.
    response.call_on_close(place.release)
    return response


def read_and_answer(which, query, arrival):
    """Read, and wait if the page is empty and `wait` allows it, within the bound. No wait
    with long-polling off (no waiting places) or the worker stopping: the page at once."""
    deadline = Deadline.after(query.wait + ANSWER_WITHIN_SECONDS, arrival)
    waiting, stopping = current_app.extensions[WAITING], current_app.extensions[STOPPING]
    try:
        page = read(which, query.after, query, deadline)
        if (
            not page.rows
            and time.monotonic() < arrival + query.wait
            and waiting.most > 0
            and not stopping.is_set()
        ):
            place = waiting.take()
            if place is None:
                return finish(
                    which, "too_many_waiting", 429, "too many requests waiting", RETRY_PLACES
                )
            try:
                page = poll(which, page, query, deadline, arrival + query.wait, stopping)
            finally:
                place.release()
    except feed.CursorAhead as error:
        # Deterministic for this database (restored, or a replica promoted): a 400 that says
        # why, never a 503 the reader would retry forever.
        return finish(which, "bad_request", 400, f"after: {error}")
    except db.DatabaseUnavailable as error:
        config = current_app.config["RECEIVER"]
        retry = {"Retry-After": str(config.retry_after_seconds)}
        return finish(which, "unavailable", 503, "database unavailable, retry later", retry, error)
    if page.rows:
        metrics.FEED_ROWS.labels(which.name).inc(len(page.rows))
    rows = [which.answer(row) for row in page.rows]
    body = {which.key: rows, "next": str(page.next), "more": page.full}
    return finish(which, "ok", 200, body)


def parse_query(args, tie) -> Query:
    """The request's parameters, or BadQuery naming the first bad one."""
    try:
        after = feed.Cursor.parse(args.get("after"), tie)
    except feed.BadCursor as error:
        raise BadQuery(f"after: {error} (pass the `next` of an earlier answer)") from None
    return Query(
        after=after,
        limit=_whole(args, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        client=_whole(args, "client", None, 0, feed.BIGINT_MAX),
        wait=_whole(args, "wait", 0, 0, MAX_WAIT_SECONDS),
    )


def _whole(args, name, default, minimum, maximum):
    """A whole-number parameter in ASCII digits from `minimum` to `maximum`, or `default`."""
    text = args.get(name)
    if text is None:
        return default
    digits = text.isascii() and text.isdigit() and len(text) <= 19
    if not digits or not minimum <= int(text) <= maximum:
        raise BadQuery(f"{name} must be a whole number from {minimum} to {maximum}")
    return int(text)


def read(which, cursor, query, deadline) -> feed.Page:
    """One page after `cursor`, on a connection of the feed's pool held for this read only."""
    return db.run_on_connection(
        get_pool(),
        lambda conn: which.read(conn, cursor, query.limit, query.client),
        deadline=deadline,
    )


def poll(which, page, query, deadline, until, stopping) -> feed.Page:
    """Read again every POLL_SECONDS from the last page's `next` while it is empty, until
    `until` (a time.monotonic() reading) or the worker is told to stop; the last page read."""
    while not page.rows:
        left = until - time.monotonic()
        if left <= 0:
            break
        if stopping.wait(min(POLL_SECONDS, left)):  # no connection held meanwhile
            break  # answered at once, empty: the reader carries on from `next` elsewhere
        page = read(which, page.next, query, deadline)
    return page


def finish(which, outcome, status, body, headers=None, error=None):
    """The answer (`body`, or an error's text), its metric and its log line."""
    if isinstance(body, str):
        error, body = error or body, {"error": body}
    metrics.FEED_REQUESTS.labels(which.name, outcome).inc()
    data = orjson.dumps(body, option=orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE)
    headers = {**NO_STORE, **(headers or {}), "X-Request-Id": g.request_id}
    response = current_app.response_class(data, status, headers, mimetype="application/json")
    log(which, outcome, status, len(body.get(which.key, ())), error)
    return response


def log(which, outcome, status, rows, error):
    """The request's one JSON line, as receiver.web.requestlog writes the webhook's (which
    skips requests without its `g.outcome`: the feed's would blur the webhook's latencies)."""
    config, now = current_app.config["RECEIVER"], time.perf_counter()
    client = auth.client_address(request, config.trusted_proxies, config.trusted_proxy_networks)
    fields = {
        "request_id": g.request_id,
        "method": request.method,
        "path": request.path,
        "status": status,
        "outcome": outcome,
        "feed": which.name,
        "rows": rows,
        "duration_ms": round((time.perf_counter() - g.get("started", now)) * 1000, 2),
        "remote_addr": request.remote_addr,
        "client_addr": None if client is None else str(client),
    }
    if error:
        # Our own words, or the database's trouble for a 503: never credentials or content.
        fields["error"] = str(error)
    level = logging.WARNING if status >= 500 else logging.INFO
    logger.log(level, "request", extra={"fields": fields})


def get_pool(app=None) -> db.ReceiverPool:
    """The feed's pool, opened on first use in this process."""
    return db.get_pool(app, POOL_NAME)


def stop(app):
    """End this worker's long-polls now, and answer any later one at once (the worker is
    stopping: gunicorn_conf.py calls this on SIGTERM, SIGINT and SIGQUIT). Safe in a signal
    handler: it raises nothing (no feed, nothing to stop)."""
    stopping = app.extensions.get(STOPPING)
    if stopping is not None:
        stopping.stop()


def init_app(app, config):
    """The routes, the feed's own pool (closed until a reader comes), its places and the
    worker's stop."""
    app.register_blueprint(bp)
    app.extensions[POOL_NAME] = db.make_pool(config, name="receiver-feed", size=FEED_POOL_SIZE)
    app.extensions[REQUESTS] = Places(config.feed_max_requests)
    app.extensions[WAITING] = Places(config.feed_max_waiting, metrics.FEED_WAITING)
    app.extensions[STOPPING] = Stopping()
    # Every series at 0 from the start, so that a rate() over the first requests is right.
    for which in (STATUS_CHANGES, EVENTS):
        metrics.FEED_ROWS.labels(which.name)
        for outcome in OUTCOMES:
            metrics.FEED_REQUESTS.labels(which.name, outcome)
