"""The feeds under load: several senders through real gunicorn, every batch's commit delayed at
random (so transactions commit in another order than they started), readers polling every few
hundred ms meanwhile, through `receiver feed` and through GET /feed/.... What each reader got
must be the final tables: no change missing, none twice, and the status changes applied in feed
order give every recipient's status.

FEED_STRESS_SECONDS sets how long the senders send (default 12; 60 for the issue's minute).
"""

import contextlib
import io
import json
import os
import random
import threading
import time

import psycopg
import requests

from receiver.cli import main
from receiver.storage import feed

import support

SECONDS = float(os.environ.get("FEED_STRESS_SECONDS", "12"))
FEED_READER = ("crm", "feed-reader-pass")
SENDERS = 6
RECIPIENTS = 12  # few, so that concurrent batches change the same recipients
STATUS_TYPES = ("singleoptin", "unsubscribe", "doubleoptin", "bounce", "spamcomplaint")

# Test-only: every statement that stores events sleeps up to 0.4 s before its commit.
DELAY_COMMITS = """
CREATE FUNCTION delay_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(random() * 0.4); RETURN NULL; END $$;
CREATE TRIGGER delay_commit AFTER INSERT ON events
FOR EACH STATEMENT EXECUTE FUNCTION delay_commit();
"""


def a_batch(rng, sender, number, t0):
    """Up to 20 events: status events of a few shared recipients, and opens."""
    events = []
    for i in range(rng.randint(1, 20)):
        kind = rng.choice((*STATUS_TYPES, "open", "open"))
        fields = {"category": "hardbounce"} if kind == "bounce" else {}
        events.append(
            support.event(
                kind,
                id=f"s{sender}-b{number}-e{i}",
                recipientId=f"r{rng.randrange(RECIPIENTS)}@x",
                created=t0 + rng.randrange(600_000),
                **fields,
            )
        )
    return events


def send(server, sender, stop, sent):
    rng = random.Random(sender)
    t0 = int(time.time() * 1000) - 300_000
    number = 0
    while not stop.is_set():
        batch = support.body(*a_batch(rng, sender, number, t0))
        answer = server.post(batch, timeout=15)
        assert answer.status_code == 200, answer.text
        if rng.random() < 0.2:  # Campaign re-delivering a batch it got no answer for
            assert server.post(batch, timeout=15).status_code == 200
        sent.append(number)
        number += 1


class CliConsumer:
    """`receiver feed NAME --after CURSOR --format json`, as a cron job or script runs it."""

    def __init__(self, name):
        self.name, self.cursor, self.rows = name, "", []

    def poll(self):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            assert main(["feed", self.name, "--after", self.cursor, "--format", "json"]) == 0
        self.rows += [json.loads(line) for line in out.getvalue().splitlines()]
        self.cursor = err.getvalue().strip().rpartition("next cursor: ")[2]


class HttpConsumer:
    """GET /feed/NAME?after=CURSOR with the feed's own credentials, page after page; `wait`
    long-polls when there is nothing new."""

    def __init__(self, server, name, wait=0):
        self.url, self.name, self.wait = f"{server.url}/feed/{name}", name, wait
        self.cursor, self.rows = "", []

    def poll(self):
        while True:
            answer = requests.get(
                self.url,
                params={"after": self.cursor, "limit": 50, "wait": self.wait},
                auth=FEED_READER,
                timeout=self.wait + 15,
            )
            if answer.status_code in (429, 503):  # busy or slow: as told, later, same cursor
                time.sleep(float(answer.headers["Retry-After"]))
                continue
            assert answer.status_code == 200, answer.text
            page = answer.json()
            self.rows += page["changes" if self.name == "status-changes" else "events"]
            self.cursor = page["next"]
            if not page["more"]:
                return


def consume(consumers, stop):
    while not stop.is_set():
        for consumer in consumers:
            consumer.poll()
        time.sleep(0.3)


def test_consumers_get_every_change_once_whatever_the_commit_order(
    gunicorn_factory, database_url, monkeypatch
):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(DELAY_COMMITS)
    monkeypatch.setenv("DATABASE_URL", database_url)
    feed_credentials = ":".join(FEED_READER)
    server = gunicorn_factory(
        {"DATABASE_URL": database_url, "RECEIVER_FEED_BASIC_AUTH": feed_credentials}, workers=2
    )
    cli = [CliConsumer("status-changes"), CliConsumer("events")]
    http = [HttpConsumer(server, "status-changes", wait=1), HttpConsumer(server, "events")]
    consumers = [*cli, *http]
    stop_sending, stop_consuming, sent = threading.Event(), threading.Event(), []
    senders = [
        threading.Thread(target=send, args=(server, n, stop_sending, sent)) for n in range(SENDERS)
    ]
    reader = threading.Thread(target=consume, args=(consumers, stop_consuming))
    for thread in (*senders, reader):
        thread.start()
    time.sleep(SECONDS)
    stop_sending.set()
    for thread in senders:
        thread.join()
    with psycopg.connect(database_url, autocommit=True) as conn:
        settle(conn)
        stop_consuming.set()
        reader.join()
        for consumer in consumers:
            consumer.poll()  # the last changes, now all below the horizon
        check(conn, *cli)
        check(conn, *http)
    assert len(sent) >= 3 * SENDERS  # every sender got through several batches
    print(f"{len(sent)} batches sent in {SECONDS:.0f} s by {SENDERS} senders")


def settle(conn):
    marker = conn.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0]
    support.wait_until(lambda: feed.horizon(conn) > marker, timeout=60)


def check(conn, changes, events):
    """What one reader consumed equals the tables, once each, and replays right."""
    changes_ids = [row["id"] for row in changes.rows]
    assert len(changes_ids) == len(set(changes_ids))
    assert set(changes_ids) == {r[0] for r in conn.execute("SELECT id FROM status_changes")}
    keys = [(e["client_id"], e["type"], e["event_key"]) for e in events.rows]
    assert len(keys) == len(set(keys))
    stored = conn.execute("SELECT client_id, type, event_key FROM events").fetchall()
    assert set(keys) == set(stored)
    # Applied in feed order, the changes give every recipient's status (a later event with the
    # same status is no change: the deciding event may differ, the status may not).
    replayed = {}
    for row in changes.rows:
        replayed[(row["client_id"], row["recipient_id"])] = row["status"]
    final = conn.execute("SELECT client_id, recipient_id, status FROM recipient_status")
    assert replayed == {(c, r): s for c, r, s in final}
    assert len(changes_ids) > RECIPIENTS  # statuses did change back and forth
    print(f"{type(changes).__name__}: {len(changes_ids)} status changes, {len(keys)} events")
