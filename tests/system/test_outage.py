"""PostgreSQL stopped mid-run: 503 while it is away, 200 once it is back, no restart needed."""

import time

import psycopg
import pytest

from receiver.storage.migrate import migrate

from support import Gunicorn, body, event, wait_until

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("shutdown", ["fast", "immediate"])
def test_database_stopped_mid_run_gives_503_then_200_without_restarting(owned_postgres, shutdown):
    migrate(owned_postgres.url)
    server = Gunicorn({"DATABASE_URL": owned_postgres.url}, workers=2)
    try:
        assert server.post(body(event(id="before"))).status_code == 200

        owned_postgres.stop(shutdown)
        for attempt in range(4):  # every worker and pooled connection sees the outage
            started = time.monotonic()
            answer = server.post(body(event(id="during"), event(id=f"during-{attempt}")))
            assert answer.status_code == 503
            assert answer.headers["Retry-After"] == "10"
            assert time.monotonic() - started < 2.5

        owned_postgres.start()
        # The sender's retry of the batch it could not deliver now succeeds.
        retried = wait_until(lambda: ok(server.post(body(event(id="during"), event(id="after")))))
        assert retried.json()["stored"] == 2
    finally:
        server.stop()
    with psycopg.connect(owned_postgres.url) as conn:
        keys = {row[0] for row in conn.execute("SELECT event_key FROM events")}
    assert keys == {"before", "during", "after"}


def ok(response):
    return response if response.status_code == 200 else None
