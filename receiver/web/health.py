"""Liveness and readiness probes: no credentials needed, nothing revealed."""

from flask import Blueprint, jsonify

from ..storage import db, migrate

bp = Blueprint("health", __name__)
# Seconds /readyz waits for a connection and for the database: 3 s at most, inside the usual
# probe timeouts (Kubernetes' default is 1 s per attempt, but a failed probe is only retried).
PROBE_POOL_TIMEOUT = 1.0
PROBE_DEADLINE = 2.0


@bp.get("/healthz")
def healthz():
    """The process answers; the database is not consulted (a restart would not fix it)."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Ready when the database answers and every migration is applied."""
    try:
        # A probe answers within its own short budget, whatever the database does (a silent
        # server gets its connection cut): a probe that hangs is read as a dead process.
        behind = db.run_on_connection(
            db.get_pool(),
            lambda conn: len(migrate.pending(conn)),
            pool_timeout=PROBE_POOL_TIMEOUT,
            deadline_seconds=PROBE_DEADLINE,
        )
    except Exception:  # any failure means "not ready"; the reason stays in our logs
        return jsonify(status="database unavailable"), 503
    if behind:
        return jsonify(status="migrations pending"), 503
    return jsonify(status="ready")


def init_app(app):
    app.register_blueprint(bp)
