"""One structured (JSON) log line per request: request id, outcome, counts and duration.

Headers and payloads are never logged: the Authorization header is a secret and events hold
personal data (recipient addresses).
"""

import logging
import os
import re
import sys
import time

import orjson
from flask import g, request

from ..observability import metrics
from ..storage import db

logger = logging.getLogger("receiver.request")
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
COUNT_FIELDS = ("received", "stored", "duplicates", "quarantined")


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON object; `extra={"fields": {...}}` adds keys."""

    def format(self, record):
        line = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


JsonFormatter.converter = time.gmtime


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (tests and servers swap it)."""

    def __init__(self):
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def configure_logging(level: str):
    """Send the receiver's logs to stderr as JSON lines at `level`."""
    root = logging.getLogger("receiver")
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        handler = StderrHandler()
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def start_request():
    g.started = time.perf_counter()
    given = request.headers.get("X-Request-Id", "")
    # 32 random hex digits, as uuid4().hex gives but a quarter of its time (every request).
    g.request_id = given if _SAFE_REQUEST_ID.fullmatch(given) else os.urandom(16).hex()


def log_request(response):
    """Log the request's one line and observe its duration."""
    elapsed = time.perf_counter() - g.get("started", time.perf_counter())
    outcome = g.get("outcome")
    if outcome is None:  # not the webhook (health, metrics) or Flask answered (404, 405)
        return response
    response.headers["X-Request-Id"] = g.request_id
    metrics.REQUEST_SECONDS.labels(outcome).observe(elapsed)
    metrics.observe_pool(db.get_pool())
    fields = {
        "request_id": g.request_id,
        "method": request.method,
        "path": request.path,
        "status": response.status_code,
        "outcome": outcome,
        "duration_ms": round(elapsed * 1000, 2),
        "remote_addr": request.remote_addr,
    }
    counts = g.get("counts") or {}
    fields.update({k: counts[k] for k in COUNT_FIELDS if k in counts})
    error = g.get("error")
    if error:
        # Why it was not a 200: for a 503, the database's trouble (an operator otherwise sees
        # only `unavailable`). Never content or credentials: the reasons are our own words,
        # and for a 503 PostgreSQL's or libpq's about a connection, a timeout or a lock.
        fields["error"] = error
    level = logging.WARNING if response.status_code >= 500 else logging.INFO
    logger.log(level, "request", extra={"fields": fields})
    return response


def init_app(app):
    app.before_request(start_request)
    app.after_request(log_request)
