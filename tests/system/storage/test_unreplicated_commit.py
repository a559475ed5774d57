"""Synchronous replication: a commit the standby never confirmed is not acknowledged."""

from dataclasses import replace

import psycopg
import psycopg.sql
import pytest

from receiver import create_app
from receiver.storage import db
from receiver.storage.migrate import migrate

from support import body, event, post
from support.replication import post_then_cancel_its_wait, set_standby_names

pytestmark = pytest.mark.slow


def test_a_commit_whose_wait_for_the_standby_was_cancelled_is_a_503(owned_postgres, config):
    migrate(owned_postgres.url)
    # A standby that never answers: every commit waits for it. When the wait is cancelled (an
    # operator's pg_cancel_backend, a timeout), PostgreSQL keeps the commit on this server only
    # and reports success with a WARNING; a 200 then would promise what a failover loses.
    set_standby_names(owned_postgres.url, "ghost")
    app = create_app(replace(config, database_url=owned_postgres.url))
    client = app.test_client()
    batch = body(event("sent", id="unreplicated-1"))
    try:
        answer = post_then_cancel_its_wait(owned_postgres.url, lambda: post(client, batch))
        assert answer.status_code == 503, answer.json
        assert answer.headers["Retry-After"]
        with psycopg.connect(owned_postgres.url) as conn:  # committed here, though not there
            assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 1
        set_standby_names(owned_postgres.url, "")
        again = post(client, batch)  # the sender's retry: a duplicate, stored once
        assert again.status_code == 200
        assert (again.json["stored"], again.json["duplicates"]) == (0, 1)
    finally:
        set_standby_names(owned_postgres.url, "")
        db.close_pool(app)
