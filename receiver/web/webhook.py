"""POST /webhook: the target URL Campaign delivers batches of events to.

Campaign retries anything but HTTP 200 every 10 seconds for three days, then drops the events.
So the answer is a promise: 200 only once every event of the batch is committed (stored, already
stored, or quarantined); 503 when the database cannot take it now, so the sender's retry is our
buffer; and never a 5xx for content, which would only bring the same poison back 25,900 times.

This module is the HTTP side: who may post, reading the body, and the answer with its metrics.
What happens to the body is receiver.ingest.batch's `take`.
"""

import orjson
from flask import Blueprint, current_app, g, request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from ..config import BUDGET_MARGIN_SECONDS, SENDER_TIMEOUT_SECONDS
from ..deadline import Deadline
from ..ingest import batch, schemas
from ..observability import metrics
from ..storage import db, quarantine
from . import auth, client, worker

bp = Blueprint("webhook", __name__)

# Every answer within this long of the request's arrival: inside the sender's ~10 s, with a
# margin for the network.
ANSWER_WITHIN_SECONDS = SENDER_TIMEOUT_SECONDS - BUDGET_MARGIN_SECONDS
CHALLENGE = {"WWW-Authenticate": 'Basic realm="receiver", charset="UTF-8"'}
# Kept from the request's budget for what follows the database: the answer, its metrics and
# log line (milliseconds, unless the worker's threads fight over the GIL).
ANSWER_RESERVE_SECONDS = 0.25
# The status of each refused outcome (acknowledged ones are 200, `unavailable` 503).
REFUSALS = {"bad_body": 400, "too_large": 413, "unsupported_encoding": 415}


@bp.post("/webhook")
def receive_batch():
    """Authenticate, read the body, take it in; every exit sets a status and one outcome."""
    config = current_app.config["RECEIVER"]
    # One deadline for the whole request, from its arrival (under gunicorn: when the worker
    # queued it for a thread, receiver.web.worker): the body read and every database call take
    # what is left of it, so the answer comes within the sender's patience whatever the database
    # does.
    deadline = Deadline.after(ANSWER_WITHIN_SECONDS - ANSWER_RESERVE_SECONDS, worker.arrival())
    authenticator = auth.get_authenticator()

    # 403 before anything else: a source outside the allow-list learns nothing, not even
    # whether its credentials would have worked.
    if not authenticator.source_allowed(request):
        metrics.AUTH_FAILURES.labels(auth.SOURCE_DENIED).inc()
        return refuse("source_denied", 403, "source address not allowed")
    refusal = authenticator.check_credentials(request)
    if refusal:
        metrics.AUTH_FAILURES.labels(refusal).inc()
        return refuse("unauthorized", 401, "authentication required", CHALLENGE)

    if not deadline.remaining():
        # It waited for a thread past its deadline (every thread busy with a slow database):
        # the sender has given up on this answer already. Not taken: it retries.
        client.let_go()
        return answer(batch.Outcome("unavailable", error="no time left after waiting for a thread"))
    try:
        body = client.read_body(deadline.cap(config.body_timeout))
        if len(body) > config.max_body_bytes:
            raise RequestEntityTooLarge()
    except RequestEntityTooLarge:
        # Nothing stored: Campaign never sends this much (100 events); it is someone else.
        return refuse("too_large", 413, f"body over {config.max_body_bytes} bytes")
    except ClientDisconnected:
        # The body was cut off in transit, or did not arrive within RECEIVER_BODY_TIMEOUT: a
        # retry brings it whole (400, not 408: the sender retries either, and 400 `incomplete`
        # is what the receiver already answers a body cut short), so keep nothing.
        return refuse("incomplete", 400, "request body incomplete")

    outcome = batch.take(
        body,
        config,
        pool=db.get_pool(),
        deadline=deadline,
        content_encoding=request.headers.get("Content-Encoding"),
    )
    return answer(outcome)


def answer(outcome: batch.Outcome):
    """The response to an Outcome, and its metrics."""
    count_events(outcome)
    if outcome.body_quarantined:
        metrics.BODIES_QUARANTINED.inc()
    for (kind, category), count in outcome.quarantined_by.items():
        metrics.QUARANTINED.labels(kind, category).inc(count)
    if outcome.acknowledged:
        metrics.BATCH_SIZE.observe(outcome.received)
        return finish(outcome.name, 200, outcome.summary())
    g.error = outcome.error
    if outcome.name == "unavailable":
        retry_after = current_app.config["RECEIVER"].retry_after_seconds
        return finish(
            "unavailable",
            503,
            {"error": "database unavailable, retry later"},
            {"Retry-After": str(retry_after)},
        )
    return finish(outcome.name, REFUSALS[outcome.name], {"error": outcome.error})


def count_events(outcome):
    """The per-type event counters, the lag histogram and the stored-event gauges."""
    for (label, event_outcome), count in outcome.events.items():
        # Zeros skipped: every series exists from the start (init_app), and each increment is
        # a locked write to the worker's metrics file.
        if count:
            metrics.EVENTS.labels(label, event_outcome).inc(count)
    if outcome.database_seconds is not None:
        metrics.DATABASE_SECONDS.observe(outcome.database_seconds)
    metrics.observe_buckets(metrics.EVENT_LAG_SECONDS, *outcome.lag_buckets)
    if outcome.stored:
        metrics.LAST_STORED.set_to_current_time()
        metrics.observe_stored_clients(outcome.clients)


def refuse(outcome, status, error, headers=None):
    """A refusal before the body was taken: nothing stored, and the connection let go."""
    client.let_go()
    g.error = error
    return finish(outcome, status, {"error": error}, headers)


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
    client.init_app(app)
    # Every event series at 0 from the start, so that a rate() over the first events is right
    # and an outcome never seen yet (no quarantine so far) is a 0, not a missing series.
    for label in (*schemas.DOCUMENTED_TYPES, "other"):
        for outcome in batch.EVENT_OUTCOMES:
            metrics.EVENTS.labels(label, outcome)
    # And every quarantine series: a first refusal of a kind (an `other` above all) is a rate.
    for kind in ("body", "event"):
        for category in quarantine.CATEGORIES:
            metrics.QUARANTINED.labels(kind, category)
