"""Liveness and readiness probes: no credentials needed, nothing revealed."""

import logging
import threading
import time

from flask import Blueprint, current_app, jsonify

from ..storage import db, migrate

bp = Blueprint("health", __name__)
logger = logging.getLogger("receiver.health")
# Seconds /readyz waits for a connection and for the database: 3 s at most, inside the usual
# probe timeouts (Kubernetes' default is 1 s per attempt, but a failed probe is only retried).
PROBE_POOL_TIMEOUT = 1.0
PROBE_DEADLINE = 2.0
# One check answers every probe for this long: a flood of probes costs the database one query
# a second per worker, on the probe's own connection (never one of the webhook's).
ANSWER_KEPT_SECONDS = 1.0


class Readiness:
    """The last answer of the readiness check, and the lock that makes one check at a time."""

    def __init__(self):
        self.lock = threading.Lock()
        self.checked_at = float("-inf")
        self.status = None

    def current(self, check) -> str:
        """The status ("ready" or why not): the last one if fresh, else `check()`'s. While one
        thread checks, the others take the last answer rather than wait (threads are few)."""
        if time.monotonic() - self.checked_at < ANSWER_KEPT_SECONDS:
            return self.status
        if not self.lock.acquire(blocking=self.status is None):
            return self.status
        try:
            if time.monotonic() - self.checked_at >= ANSWER_KEPT_SECONDS:
                self.status = check()
                self.checked_at = time.monotonic()
            return self.status
        finally:
            self.lock.release()


@bp.get("/healthz")
def healthz():
    """The process answers; the database is not consulted (a restart would not fix it)."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Ready when the database answers and every migration is applied."""
    status = current_app.extensions["receiver.readiness"].current(check_database)
    return jsonify(status=status), 200 if status == "ready" else 503


def check_database() -> str:
    """ "ready", or what is not (the reason stays in our logs, never in the answer)."""
    try:
        # A probe answers within its own short budget, whatever the database does (a silent
        # server gets its connection cut): a probe that hangs is read as a dead process.
        behind = db.run_on_connection(
            db.get_probe_pool(),
            lambda conn: len(migrate.pending(conn)),
            pool_timeout=PROBE_POOL_TIMEOUT,
            deadline_seconds=PROBE_DEADLINE,
        )
    except Exception as error:  # any failure means "not ready"
        logger.warning("not ready: %s: %s", type(error).__name__, error)
        return "database unavailable"
    return "migrations pending" if behind else "ready"


def init_app(app):
    app.register_blueprint(bp)
    app.extensions["receiver.readiness"] = Readiness()
