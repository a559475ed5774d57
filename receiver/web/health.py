"""Liveness and readiness probes: no credentials needed, nothing revealed."""

from flask import Blueprint, jsonify

from ..storage import db, migrate

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process answers; the database is not consulted (a restart would not fix it)."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Ready when the database answers and every migration is applied."""
    try:
        with db.get_pool().connection(timeout=1.0) as conn:
            behind = len(migrate.pending(conn))
    except Exception:  # any failure means "not ready"; the reason stays in our logs
        return jsonify(status="database unavailable"), 503
    if behind:
        return jsonify(status="migrations pending"), 503
    return jsonify(status="ready")


def init_app(app):
    app.register_blueprint(bp)
