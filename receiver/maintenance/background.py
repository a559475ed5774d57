"""The web worker's own upkeep, hourly in a thread: the coming months' partitions, and the
expired digests of re-deliverable batches (receiver.storage.deliveries)."""

import threading

from ..storage import db
from . import tasks

INTERVAL_SECONDS = 3600


def start(config, interval=INTERVAL_SECONDS) -> threading.Thread:
    """Start the daemon thread (gunicorn's post_worker_init); it checks at once, then hourly."""

    def connect():
        # A connection of its own, never one of the pool's: the request path keeps all of them.
        return db.connect(config.database_url, "receiver maintenance", lock_timeout_ms=1000)

    stop = threading.Event()

    def run():
        while True:
            tasks.ensure_ahead_quietly(connect)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=run, name="receiver-partitions", daemon=True)
    thread.stop = stop
    thread.start()
    return thread
