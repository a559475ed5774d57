"""`receiver maintain` under Campaign-like load: a backlog of stray months in the default
partition, batches arriving from several senders (some re-delivered), one of them writing to a
stray month while maintenance gives it a partition. Every step done, every answer 200 within
the sender's 10 s, nothing lost, nothing doubled."""

import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import requests

from receiver.storage import partitions

from support import PASSWORD, ROOT, USER, Gunicorn, body, event

pytestmark = pytest.mark.slow

NOW = datetime.now(UTC)
THIS_MONTH = partitions.month_start(NOW)
# Beyond the months kept ready (3 ahead), within those maintenance splits (12 ahead).
STRAY_MONTHS = [partitions.add_months(THIS_MONTH, k) for k in (5, 6, 7, 8)]
BACKLOG_PER_MONTH = 5000
OLD_MONTH = partitions.add_months(THIS_MONTH, -20)  # past a 400-day retention
SENDERS = 4

BACKLOG = """
INSERT INTO events (event_key, event_id, client_id, type, created_at, payload)
SELECT 'backlog-' || %(month)s || '-' || g, 'backlog-' || %(month)s || '-' || g, 7, 'sent',
       %(start)s + g * interval '1 minute', '{}'
FROM generate_series(1, %(rows)s) g
"""


def millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def fill_backlog(url):
    """Stray months in events_default, an old month for retention, an expired digest."""
    with psycopg.connect(url, autocommit=True) as conn:
        for month in STRAY_MONTHS:
            params = {"month": f"{month:%Y%m}", "start": month, "rows": BACKLOG_PER_MONTH}
            conn.execute(BACKLOG, params)
        partitions.create_month(conn, OLD_MONTH)
        conn.execute(BACKLOG, {"month": "old", "start": OLD_MONTH, "rows": 100})
        conn.execute(
            "INSERT INTO deliveries (digest, events, counts, received_at) "
            "VALUES ('\\x01', 1, '{}', now() - interval '10 days')"
        )


class Senders:
    """Campaign's deliveries: batches of 100, a fifth of them delivered twice; sender 0 writes
    into a stray month, the others into this month."""

    def __init__(self, url):
        self.url, self.stop = url + "/webhook", threading.Event()
        self.answers, self.sent_ids, self.lock = [], set(), threading.Lock()
        self.threads = [threading.Thread(target=self.send, args=(n,)) for n in range(SENDERS)]

    def send(self, sender):
        month = STRAY_MONTHS[1] if sender == 0 else THIS_MONTH
        session, batch_number = requests.Session(), 0
        while not self.stop.is_set():
            batch_number += 1
            ids = [f"load-{sender}-{batch_number}-{i}" for i in range(100)]
            created = millis(month + timedelta(days=2, seconds=batch_number))
            data = body(*(event("sent", id=key, created=created, clientId=7) for key in ids))
            for _ in range(2 if batch_number % 5 == 0 else 1):
                self.deliver(session, data)
            with self.lock:
                self.sent_ids.update(ids)

    def deliver(self, session, data):
        started = time.monotonic()
        try:
            status = session.post(self.url, data=data, auth=(USER, PASSWORD), timeout=10)
            answer = status.status_code
        except requests.RequestException as error:  # a timeout is a failure here
            answer = type(error).__name__
        with self.lock:
            self.answers.append((answer, time.monotonic() - started))

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join()


def test_maintain_under_load_with_a_stray_month_backlog(database_url):
    fill_backlog(database_url)
    server = Gunicorn({"DATABASE_URL": database_url}, workers=2)
    env = {**os.environ, "DATABASE_URL": database_url}
    try:
        with Senders(server.url) as senders:
            time.sleep(1)  # the flow established
            maintain = subprocess.run(
                [sys.executable, "-m", "receiver", "maintain", "--retention", "400d"],
                env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            time.sleep(1)  # and batches into the new partitions afterwards
    finally:
        server.stop()

    assert maintain.returncode == 0, maintain.stderr
    for month in STRAY_MONTHS:
        assert f"moved from events_default into {partitions.partition_name(month)}" in (
            maintain.stdout
        )
    assert f"dropped {partitions.partition_name(OLD_MONTH)}" in maintain.stdout
    statuses = {answer for answer, _ in senders.answers}
    slowest = max(seconds for _, seconds in senders.answers)
    assert statuses == {200}, statuses
    assert slowest < 10
    with psycopg.connect(database_url) as conn:
        stored, unique = conn.execute(
            "SELECT count(*), count(DISTINCT event_key) FROM events WHERE event_key LIKE 'load-%'"
        ).fetchone()
        backlog = conn.execute(
            "SELECT tableoid::regclass::text, count(*) FROM events "
            "WHERE event_key LIKE 'backlog-%' GROUP BY 1 ORDER BY 1"
        ).fetchall()
        digest = conn.execute("SELECT count(*) FROM deliveries WHERE digest = '\\x01'").fetchone()
    assert stored == unique == len(senders.sent_ids)  # nothing lost, nothing doubled
    assert backlog == [(partitions.partition_name(m), BACKLOG_PER_MONTH) for m in STRAY_MONTHS]
    assert digest == (0,)
    print(
        f"\n{len(senders.answers)} answers, all 200, slowest {slowest:.2f} s; "
        f"{stored} events stored once; maintain:\n{maintain.stdout}"
    )
