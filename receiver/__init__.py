"""receiver: the target URL for Optimizely Campaign webhooks.

Every event in PostgreSQL exactly once; 200 only after commit.
"""

from importlib import metadata

from flask import Flask

try:
    __version__ = metadata.version("receiver")
except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"


def create_app(config=None) -> Flask:
    """Wire the app together; the configuration is read from the environment if not given."""
    # Imported here, not at the top: `import receiver.x` (gunicorn's master importing
    # receiver.observability.metricfiles, the CLI) must not load the app and declare its metrics.
    from .config import load_config
    from .observability import metrics
    from .storage import db
    from .web import auth, feed, health, requestlog, webhook

    config = config or load_config()
    app = Flask(__name__)
    app.config["RECEIVER"] = config
    # One byte over the limit: werkzeug truncates a chunked body at MAX_CONTENT_LENGTH without
    # an error, so the handler reads up to limit + 1 and refuses anything longer than the limit.
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes + 1
    requestlog.configure_logging(config.log_level)
    auth.init_app(app, config)
    db.init_app(app, config)
    requestlog.init_app(app)
    webhook.init_app(app)
    feed.init_app(app, config)
    health.init_app(app)
    metrics.init_app(app)
    return app
