"""POST /webhook: the target URL Campaign delivers batches of events to.

Campaign retries anything but HTTP 200 every 10 seconds for three days, then drops the events.
So the answer is a promise: 200 only once every event of the batch is committed (stored, already
stored, or quarantined); 503 when the database cannot take it now, so the sender's retry is our
buffer; and never a 5xx for content, which would only bring the same poison back 25,900 times.
"""

import logging
import operator
import socket
import time
from collections import Counter

import orjson
from flask import Blueprint, current_app, g, request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from ..ingest import jsoncodec, schemas
from ..observability import metrics
from ..storage import db, deliveries, events, quarantine
from . import auth

bp = Blueprint("webhook", __name__)
logger = logging.getLogger("receiver.webhook")

EVENT_TYPE = operator.attrgetter("type")
EVENT_OUTCOMES = ("stored", "duplicate", "quarantined")
CHALLENGE = {"WWW-Authenticate": 'Basic realm="receiver", charset="UTF-8"'}


@bp.post("/webhook")
def receive_batch():
    """Authenticate, parse, validate, store; every exit sets a status and one outcome."""
    config = current_app.config["RECEIVER"]
    authenticator = auth.get_authenticator()

    # 403 before anything else: a source outside the allow-list learns nothing, not even
    # whether its credentials would have worked.
    if not authenticator.source_allowed(request):
        metrics.AUTH_FAILURES.labels(auth.SOURCE_DENIED).inc()
        stop_reading()
        return finish("source_denied", 403, {"error": "source address not allowed"})
    refusal = authenticator.check_credentials(request)
    if refusal:
        metrics.AUTH_FAILURES.labels(refusal).inc()
        stop_reading()
        return finish("unauthorized", 401, {"error": "authentication required"}, CHALLENGE)

    try:
        body = read_body(config.body_timeout)
        if len(body) > config.max_body_bytes:
            raise RequestEntityTooLarge()
        if request.content_length is not None and len(body) < request.content_length:
            # Behind gunicorn, werkzeug reads a client that hung up mid-body as end of body.
            raise ClientDisconnected()
    except RequestEntityTooLarge:
        # Nothing stored: Campaign never sends this much (100 events); it is someone else.
        stop_reading()
        return finish("too_large", 413, {"error": f"body over {config.max_body_bytes} bytes"})
    except ClientDisconnected:
        # The body was cut off in transit, or did not arrive within RECEIVER_BODY_TIMEOUT: a
        # retry brings it whole (400, not 408: the sender retries either, and 400 `incomplete`
        # is what the receiver already answers a body cut short), so keep nothing.
        stop_reading()
        return finish("incomplete", 400, {"error": "request body incomplete"})

    if not body.removeprefix(jsoncodec.UTF8_BOM).strip():
        # Nothing to keep and nothing to retry into shape: refused, and not quarantined (a
        # `curl --data-binary @missing-file` posts an empty body; it must leave no junk behind).
        return finish("bad_body", 400, {"error": "empty body"})

    # A re-delivery (the sender retries a batch whose 200 it did not get) of a body committed
    # whole before is answered from one index lookup: its every event is in `events` already,
    # so 200 as all duplicates keeps the promise without parsing or validating it again. A body
    # not found here, for whatever reason, simply takes the full path below.
    body_digest = deliveries.digest(body)
    try:
        earlier = deliveries.find(db.get_pool(), body_digest)
    except db.DatabaseUnavailable:
        return unavailable()
    if earlier is not None:
        for label, count in earlier.counts.items():
            metrics.EVENTS.labels(label, "duplicate").inc(count)
        metrics.BATCH_SIZE.observe(earlier.events)
        return finish("redelivered", 200, redelivered(earlier.events))

    try:
        items = jsoncodec.decode_batch(body)
    except jsoncodec.BadBody as error:
        # Not JSON, or not a list/object. Campaign only sends JSON lists, so this is a body
        # mangled in transit (a retry may bring it whole) or not Campaign at all: answer 400 and
        # keep the body in quarantine (once, however often it is retried) so nothing is lost.
        try:
            quarantine.keep_body(db.get_pool(), body, str(error))
        except db.DatabaseUnavailable:
            return unavailable()
        metrics.BODIES_QUARANTINED.inc()
        return finish("bad_body", 400, {"error": str(error)})

    if len(items) > config.max_batch:
        return finish("too_large", 413, {"error": f"more than {config.max_batch} events"})

    valid, rejected, document = validate_items(items, body)
    valid_counts = count_by_label(map(EVENT_TYPE, valid))
    started = time.perf_counter()
    try:
        result = events.store_batch(
            db.get_pool(), valid, rejected, delivery=(body_digest, valid_counts), document=document
        )
    except db.DatabaseUnavailable:
        # Not acknowledged: most often nothing was committed; after a deadline cut a commit
        # mid-way, or a standby never confirmed it, it may have been. Either way the sender
        # keeps the batch and retries in 10 s, and the retry is stored once.
        return unavailable()
    metrics.DATABASE_SECONDS.observe(time.perf_counter() - started)

    # Committed. Invalid events are in quarantine with their reason, so the whole batch is
    # acknowledged: a non-200 would make the sender re-send the valid events with the poison.
    summary = count_outcomes(valid_counts, result)
    metrics.BATCH_SIZE.observe(len(items))
    return finish("ok", 200, {"received": len(items), **summary})


def read_body(timeout) -> bytes:
    """The whole body, within `timeout` seconds; ClientDisconnected if it is not all there.

    Under gunicorn a watchdog stops the reading side of the client's socket at the deadline, so
    a client dribbling its body frees the thread on time (a per-read socket timeout would not:
    every byte that arrives restarts it)."""
    client = request.environ.get("gunicorn.socket")
    if client is None:  # not under gunicorn (the test client): nothing to bound
        return request.get_data(cache=False)
    alarm = db.WATCHDOG.arm(client, timeout, socket.SHUT_RD)
    try:
        body = request.get_data(cache=False)
    finally:
        late = db.WATCHDOG.disarm(alarm)
    if late:  # cut at the deadline: whatever was read may be a fragment
        raise ClientDisconnected()
    return body


def stop_reading():
    """Read nothing more from this client: gunicorn closes the connection after the answer.

    Without it gunicorn reads the unread body before it can serve the next request on the
    connection (for up to 5 s in its gthread worker): 40 clients dribbling bodies without
    credentials held every thread. What the client already sent is still drained; what it sends
    after the answer gets a reset."""
    client = request.environ.get("gunicorn.socket")
    if client is not None:
        db.cut(client, socket.SHUT_RD)


def validate_items(items, body):
    """Split items into storable events and quarantine entries with their reasons; with them
    the batch statement's document when the batch was validated whole (else None)."""
    batch = schemas.validate_batch(items)
    if batch is not None:  # the usual batch: every event valid, validated as one
        return batch.events, [], batch.document
    valid, rejected = [], []
    for item, outcome in schemas.validate_events(items):
        if isinstance(outcome, schemas.ValidatedEvent):
            valid.append(outcome)
        else:
            error = outcome
            if not isinstance(error, schemas.InvalidEvent):
                # A bug of ours met by this content. Quarantine it (replayable after the fix)
                # rather than answer 5xx: the sender would re-send the batch for three days.
                logger.error("unexpected error validating an event", exc_info=error)
                error = schemas.InvalidEvent(f"could not validate: {type(error).__name__}")
            kind = item.get("type") if isinstance(item, dict) else None
            content = jsoncodec.preserve(item)
            if content is None:  # cannot be re-serialised: keep the whole body instead
                reason = f"{error} (whole body kept)"
                rejected.append(quarantine.Rejected("body", reason, body, kind))
            else:
                rejected.append(quarantine.Rejected("event", str(error), content, kind))
    return valid, rejected, None


def redelivered(events):
    """The answer to a body committed whole before: what its full path would answer now."""
    return {"received": events, "stored": 0, "duplicates": events, "quarantined": 0}


def count_outcomes(valid, result):
    """The response's counts; also feeds the per-type event metrics. `valid`: the valid events
    per type label."""
    stored = count_by_label(result.stored_by_type())
    quarantined = Counter(metric_type(item.event_type) for item in result.rejected)
    # Events PostgreSQL refused after validation are quarantined, not duplicates.
    refused = Counter(
        metric_type(item.event_type) for item in result.rejected if item.after_validation
    )
    duplicates = valid - stored - refused  # Counter subtraction keeps the positive counts
    for outcome, counts in zip(EVENT_OUTCOMES, (stored, duplicates, quarantined), strict=True):
        for label, count in counts.items():
            # Zeros skipped: every series exists from the start (init_app), and each increment
            # is a locked write to the worker's metrics file.
            metrics.EVENTS.labels(label, outcome).inc(count)
    metrics.observe_buckets(metrics.EVENT_LAG_SECONDS, *result.lag_buckets())
    if result.stored:
        metrics.LAST_STORED.set_to_current_time()
    total_stored = result.stored
    return {
        "stored": total_stored,
        "duplicates": valid.total() - total_stored - sum(refused.values()),
        "quarantined": len(result.rejected),
    }


def count_by_label(kinds) -> Counter:
    """How many of each metric label among these event types, or {type: count} (counted
    first, then labelled: a batch has a handful of distinct types and a hundred events)."""
    labels = Counter()
    for kind, count in Counter(kinds).items():
        labels[metric_type(kind)] += count
    return labels


def metric_type(kind) -> str:
    """Documented types as themselves, anything else as `other`: bounded label values."""
    return kind if isinstance(kind, str) and kind in schemas.SCHEMAS else "other"


def unavailable():
    retry_after = current_app.config["RECEIVER"].retry_after_seconds
    return finish(
        "unavailable",
        503,
        {"error": "database unavailable, retry later"},
        {"Retry-After": str(retry_after)},
    )


def finish(outcome, status, body, headers=None):
    """Build the answer and record the request's one outcome."""
    metrics.REQUESTS.labels(outcome, str(status)).inc()
    g.outcome = outcome
    g.counts = body if status == 200 else None
    # orjson rather than jsonify (Flask's provider, json.dumps): the same bytes, keys sorted
    # and a newline, for a fraction of the time.
    data = orjson.dumps(body, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)
    return current_app.response_class(data, status, headers, mimetype="application/json")


def init_app(app):
    app.register_blueprint(bp)
    # Every event series at 0 from the start, so that a rate() over the first events is right
    # and an outcome never seen yet (no quarantine so far) is a 0, not a missing series.
    for label in (*schemas.DOCUMENTED_TYPES, "other"):
        for outcome in EVENT_OUTCOMES:
            metrics.EVENTS.labels(label, outcome)
