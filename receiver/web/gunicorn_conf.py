"""Gunicorn settings: `gunicorn -c python:receiver.web.gunicorn_conf "receiver:create_app()"`.

A module of the package, so that gunicorn finds it by import wherever the receiver is installed
(the Procfile, the systemd unit and `receiver serve` all name it so). Every value can be
overridden on the command line or with GUNICORN_CMD_ARGS; deploy/gunicorn.conf.py shows how to
keep these and change a few.
"""

import functools
import os
import shutil
import signal
import tempfile

# Prometheus multiprocess mode: each worker writes its metrics to files in this directory and
# /metrics sums them. It must be set before any worker imports prometheus_client, and it is
# wiped at start so counters from a previous run are not added to this one.
_OWN_METRICS_DIR = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _OWN_METRICS_DIR = tempfile.mkdtemp(prefix="receiver-metrics-")  # removed in on_exit
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _OWN_METRICS_DIR

bind = f"0.0.0.0:{os.environ['PORT']}" if os.environ.get("PORT") else "127.0.0.1:8000"
# Chosen by bench/run.py on 2 cores, PostgreSQL beside (docs/benchmarks.md): 2 gthread workers x 4
# threads beat 3x4, 4x2, 2x8 and 3 or 4 sync workers. Threads let a worker overlap one request's
# database round trip with another's Python work; more processes only add contention. Match
# RECEIVER_POOL_MAX_SIZE to the threads, so a thread never waits for a connection.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# gthread, with a deadline on each request's headers (a client dribbling them no longer holds a
# thread) and the request's arrival for its one deadline: receiver/web/worker.py.
worker_class = "receiver.web.worker.ReceiverWorker"
threads = int(os.environ.get("RECEIVER_THREADS", "4"))
# A worker silent for this long is killed and replaced; requests are bounded far below it by
# the pool timeout and statement_timeout.
timeout = 30
# On TERM/HUP, in-flight batches get this long to commit before the worker is stopped; a batch
# cut off is not acknowledged, so the sender retries it. The feed's long-polls, which could
# wait up to 30 s, answer at once instead (post_worker_init).
graceful_timeout = 20
keepalive = 75
# Bounded request line and headers; the body limit is RECEIVER_MAX_BODY_BYTES.
limit_request_line = 8190
limit_request_fields = 100
# Gunicorn 27's control socket sits at one fixed path per user; several receivers on one host
# (or tests) would take it from each other, and nothing here uses it.
control_socket_disable = True
accesslog = None  # the receiver logs one JSON line per request itself
errorlog = "-"


def on_starting(server):
    """Refuse a configuration that could never serve, in one line, before any worker starts;
    then empty the metrics directory: stale files would add a previous run's counts."""
    refuse_bad_configuration(server)
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    try:
        os.makedirs(directory, exist_ok=True)
        for entry in os.listdir(directory):
            path = os.path.join(directory, entry)
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
    except OSError as error:
        # Metrics are not worth refusing events for: the workers fall back
        # (receiver.observability.metrics).
        server.log.error("cannot prepare metrics directory %s: %s", directory, error)


# gunicorn's exit status for a worker that cannot boot: the master stops, and systemd or a
# container runtime sees a failure rather than a loop of workers dying one by one.
CONFIG_ERROR_EXIT = 3


def refuse_bad_configuration(server):
    """Check the settings once in the master, as each worker would (receiver.config): each
    worker would otherwise die with its own traceback, and gunicorn say only that it could not
    boot one."""
    from receiver.config import NO_CREDENTIALS, ConfigError, load_config

    try:
        if not load_config().has_credentials:
            raise ConfigError(NO_CREDENTIALS)
    except ConfigError as error:
        server.log.error("receiver: configuration error: %s", error)
        on_exit(server)  # gunicorn will not call it: a restart loop must not pile up directories
        raise SystemExit(CONFIG_ERROR_EXIT) from None


def on_exit(server):
    """Remove the metrics directory this config created (not one the operator chose)."""
    if _OWN_METRICS_DIR:
        shutil.rmtree(_OWN_METRICS_DIR, ignore_errors=True)


def post_worker_init(worker):
    """Open this worker's connection pool after the fork: connections are never shared; start
    the worker's hourly check that the coming months have partitions; and on SIGTERM (a
    graceful stop or reload), end the feed's long-polls before gunicorn's own handling."""
    from receiver.maintenance import background
    from receiver.storage import db
    from receiver.web import feed

    db.get_pool(worker.wsgi)
    background.start(worker.wsgi.config["RECEIVER"])
    # Looked up now: the signal handlers that call it import nothing.
    worker.receiver_stop_feed = functools.partial(feed.stop, worker.wsgi)
    graceful = signal.getsignal(signal.SIGTERM)  # gunicorn's: stop accepting, finish requests
    if not callable(graceful):
        return

    def stop_feed_then_exit(signum, frame):
        # Otherwise a long-poll keeps its thread until its `wait` is up, up to 30 s: the
        # stop (and a restart, while nothing listens) waits for it, or cuts it at
        # graceful_timeout and the reader gets no answer.
        _stop_feed(worker)
        graceful(signum, frame)

    signal.signal(signal.SIGTERM, stop_feed_then_exit)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn has it: requests go on


def worker_int(worker):
    """SIGINT/SIGQUIT, the quick stop: the feed's long-polls answer at once too."""
    _stop_feed(worker)


def _stop_feed(worker):
    stop = getattr(worker, "receiver_stop_feed", None)
    if stop is not None:  # None before post_worker_init
        stop()


def worker_exit(server, worker):
    """Close the worker's pool so its connections end cleanly."""
    if getattr(worker, "wsgi", None) is not None:
        from receiver.storage import db

        db.close_pool(worker.wsgi)


def child_exit(server, worker):
    """Fold the dead worker's metric files into the archive (keeps totals, stops pile-up)."""
    from receiver.observability import metricfiles

    try:
        metricfiles.retire_worker(worker.pid)
    except Exception:  # an exception here stops the master: metrics are not worth that
        server.log.exception("cannot retire metrics of worker %s", worker.pid)
