"""Fault injection under load: break things on purpose and count every event.

Each test runs the Campaign-like simulator (receiver.simulate) against real gunicorn with two
or more workers and real PostgreSQL, injects one fault mid-run, and ends with an exact count:
no event lost, none stored twice, no 500, and 503 (not a hang) while the database is away.

`pytest -m fault` runs only this suite; FAULT_PROFILE=long sends 100,000 events per test;
FAULT_REPORT=path appends one JSON line per test (docs/reliability.md is built from it).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from receiver.maintenance import retention
from receiver.simulate import Tally, deliver, make_plan, verify
from receiver.storage import partitions
from receiver.storage.migrate import migrate

from support import PASSWORD, USER, wait_until

pytestmark = [pytest.mark.fault, pytest.mark.slow]

PROFILE = os.environ.get("FAULT_PROFILE", "short")
# At a fixed pace, so every fault lands in the middle of the run: 4 s short, 20 s long.
EVENTS, RATE = {"short": (20_000, 5_000), "long": (100_000, 5_000)}[PROFILE]
DUPLICATES = 0.1
CONCURRENCY = 8


class Load:
    """The simulator sending in the background; `finish` waits and verifies."""

    def __init__(self, server_url, events=EVENTS, concurrency=CONCURRENCY, seed=None, rate=RATE):
        self.plan = make_plan(events, duplicates=DUPLICATES, seed=seed)
        self.concurrency, self.rate = concurrency, rate
        self.tally = Tally()  # filled while the simulator runs
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._send, args=(server_url + "/webhook",))
        self.thread.start()

    def _send(self, url):
        deliver(
            self.plan,
            url,
            (USER, PASSWORD),
            self.concurrency,
            retry_delay=0.2,
            give_up_after=120,
            timeout=10,
            rate=self.rate,
            tally=self.tally,
        )

    def delivered(self):
        return self.tally.delivered_batches

    def record(self, database_url, name, timeout=300, **extra):
        """Wait for the last batch, verify the table, append the figures to FAULT_REPORT;
        return (verification, statuses, the figures)."""
        self.thread.join(timeout=timeout)
        assert not self.thread.is_alive(), "the simulator did not finish"
        result = verify(self.plan, database_url)
        statuses = {str(k): v for k, v in sorted(self.tally.statuses.items(), key=str)}
        figures = {
            "fault": name,
            "events": len(self.plan.mail_ids),
            "deliveries": sum(len(b) for b in self.plan.batches),
            "rate": self.rate,
            "concurrency": self.concurrency,
            "duplicate_batches": self.plan.redeliveries,
            "stored": result.found,
            "lost": result.missing,
            "extra": result.extra,
            "duplicated": result.duplicated,
            "statuses": statuses,
            **extra,
            "seconds": round(time.monotonic() - self.started, 1),
        }
        if os.environ.get("FAULT_REPORT"):
            with open(os.environ["FAULT_REPORT"], "a") as report:
                report.write(json.dumps(figures) + "\n")
        return result, statuses, figures

    def finish(self, database_url, name):
        """Wait, verify, record, and assert exactness: nothing lost, nothing twice, no 500."""
        result, statuses, figures = self.record(database_url, name)
        assert self.tally.gave_up == 0
        assert "500" not in statuses
        assert (result.missing, result.extra, result.duplicated) == (0, 0, 0), figures
        assert result.found == len(self.plan.mail_ids)
        return statuses


def mid_run(load, batches=10):
    """Wait until the load is under way, and check the fault will land in the middle of it."""
    wait_until(lambda: load.delivered() >= batches, timeout=60)
    assert load.thread.is_alive(), "the load finished before the fault: raise EVENTS"


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restarted_mid_run(owned_postgres, gunicorn_factory, mode):
    postgres = owned_postgres
    migrate(postgres.url)
    server = gunicorn_factory({"DATABASE_URL": postgres.url}, workers=2)
    load = Load(server.url)
    mid_run(load)
    postgres.stop(mode)
    # Longer than RECEIVER_POOL_TIMEOUT (1.5 s): shorter outages are absorbed as slower 200s.
    time.sleep(3)  # the sender keeps retrying into the outage
    postgres.start()
    statuses = load.finish(postgres.url, f"PostgreSQL restarted ({mode} shutdown)")
    assert statuses.get("503", 0) > 0  # the outage was seen, and answered 503


def test_worker_killed_with_sigkill_mid_request(database_url, gunicorn_factory):
    server = gunicorn_factory({"DATABASE_URL": database_url}, workers=2)
    load = Load(server.url)
    for round_ in range(3):
        mid_run(load, batches=10 + 20 * round_)
        os.kill(server.worker_pids()[0], signal.SIGKILL)  # the master forks a replacement
    load.finish(database_url, "gunicorn worker killed with SIGKILL (3 times)")


def test_graceful_reload_with_hup(database_url, gunicorn_factory):
    server = gunicorn_factory({"DATABASE_URL": database_url}, workers=2)
    load = Load(server.url)
    mid_run(load)
    server.process.send_signal(signal.SIGHUP)
    load.finish(database_url, "gunicorn graceful reload (HUP)")


def test_shutdown_with_term_then_start_again(database_url, gunicorn_factory):
    server = gunicorn_factory({"DATABASE_URL": database_url}, workers=2)
    load = Load(server.url)
    mid_run(load)
    assert server.stop() == 0  # in-flight batches finish (graceful) before the exit
    time.sleep(1)  # refused connections meanwhile: the sender retries
    gunicorn_factory({"DATABASE_URL": database_url}, workers=2, port=server.port)
    load.finish(database_url, "gunicorn shut down (TERM) and started again")


def test_clients_that_disconnect_or_crawl(database_url, gunicorn_factory):
    server = gunicorn_factory({"DATABASE_URL": database_url}, workers=2)
    load = Load(server.url)
    mid_run(load)
    body = json.dumps([{"type": "open", "clientId": 5, "created": 1, "mailId": "cut"}]).encode()
    head = (
        f"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        f"Authorization: Basic {basic_token()}\r\n\r\n"
    ).encode()
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(head + body[: len(body) // 2])  # gone in the middle of the body
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(head + body)  # gone after the body, before the answer
    crawlers = [threading.Thread(target=crawl, args=(server.port, head + body)) for _ in range(3)]
    for crawler in crawlers:
        crawler.start()
    load.finish(database_url, "clients disconnecting mid-body / after the body; slow clients")
    for crawler in crawlers:
        crawler.join()
    with psycopg.connect(database_url) as conn:
        # The cut-off bodies stored nothing; the complete ones stored their one event once.
        assert conn.execute("SELECT count(*) FROM events WHERE client_id = 5").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 0


def crawl(port, request):
    """A client that sends its request a few bytes at a time (about 2 s in all)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for i in range(0, len(request), 16):
            sock.sendall(request[i : i + 16])
            time.sleep(2 / (len(request) / 16))
        sock.settimeout(10)
        assert sock.recv(100).startswith(b"HTTP/1.1 200")


def basic_token():
    import base64

    return base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def test_pool_exhausted(database_url, gunicorn_factory):
    # One connection per worker for 8 threads each, and 16 concurrent senders.
    env = {
        "DATABASE_URL": database_url,
        "RECEIVER_POOL_MIN_SIZE": "1",
        "RECEIVER_POOL_MAX_SIZE": "1",
        "RECEIVER_THREADS": "8",
        "RECEIVER_POOL_TIMEOUT": "0.1",
    }
    server = gunicorn_factory(env, workers=2)
    load = Load(server.url, concurrency=16, rate=None)  # as fast as it answers
    statuses = load.finish(
        database_url, "connection pool exhausted (1 connection per worker, 16 senders unpaced)"
    )
    assert statuses.get("503", 0) > 0  # waits past RECEIVER_POOL_TIMEOUT were answered 503


def test_statement_timeout(database_url, gunicorn_factory):
    env = {"DATABASE_URL": database_url, "RECEIVER_STATEMENT_TIMEOUT_MS": "300"}
    server = gunicorn_factory(env, workers=2)
    load = Load(server.url)
    mid_run(load)
    with psycopg.connect(database_url) as conn:  # every insert waits, then times out
        conn.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        time.sleep(1.5)
    statuses = load.finish(database_url, "statement timeout (table locked 1.5 s, timeout 300 ms)")
    assert statuses.get("503", 0) > 0


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 16 MiB filesystem for the metrics files, which the test can fill or make read-only."""
    mount_point = tmp_path / "metrics"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_metrics_directory_fills_up_mid_run(database_url, gunicorn_factory, small_tmpfs):
    env = {"DATABASE_URL": database_url, "PROMETHEUS_MULTIPROC_DIR": str(small_tmpfs)}
    server = gunicorn_factory(env, workers=2)
    load = Load(server.url)
    mid_run(load)
    filler = Path(small_tmpfs) / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)
    os.kill(server.worker_pids()[0], signal.SIGKILL)  # a new worker must start on that disk
    load.finish(database_url, "metrics directory full (mid-run, then a worker restarted)")


def test_metrics_directory_read_only(database_url, gunicorn_factory, small_tmpfs):
    # A busy filesystem cannot be remounted read-only, so it is read-only from the start.
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    env = {"DATABASE_URL": database_url, "PROMETHEUS_MULTIPROC_DIR": str(small_tmpfs)}
    server = gunicorn_factory(env, workers=2)
    load = Load(server.url)
    mid_run(load)
    load.finish(database_url, "metrics directory read-only")


OLD_MONTH_ROWS = """
INSERT INTO events (event_key, client_id, type, created_at, received_at, mailing_id,
                    recipient_id, payload)
SELECT 'old-' || %(month)s || '-' || g, 7, 'sent',
       %(month)s::timestamptz + g * interval '5 minutes', now(), 1, 'r' || g,
       jsonb_build_object('id', 'old-' || g, 'pad', repeat('x', 300))
FROM generate_series(0, 5000) g
"""


def test_prune_while_campaign_sends(database_url, gunicorn_factory):
    """`receiver prune` drops a year of old months while the sender delivers: no failed
    request, every sent event stored once, the kept months whole, the space returned."""
    now = datetime.now(UTC)
    current = partitions.month_start(now)
    with psycopg.connect(database_url, autocommit=True) as conn:
        for back in range(2, 15):  # 13 old months, the two latest of them kept
            month = partitions.add_months(current, -back)
            partitions.create_month(conn, month)
            conn.execute(OLD_MONTH_ROWS, {"month": month})
        before = retention.events_bytes(conn)
    server = gunicorn_factory({"DATABASE_URL": database_url}, workers=2)
    load = Load(server.url)
    mid_run(load)
    horizon = now - timedelta(days=70)
    prune = subprocess.run(
        [sys.executable, "-m", "receiver", "prune", "--older-than", "70d"],
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert prune.returncode == 0, prune.stderr
    with psycopg.connect(database_url) as conn:
        after = retention.events_bytes(conn)
    name = "receiver prune of 11 old months mid-run"
    result, statuses, figures = load.record(
        database_url, name, events_bytes_before=before, events_bytes_after=after
    )
    assert (result.missing, result.extra, result.duplicated, load.tally.gave_up) == (0, 0, 0, 0)
    assert set(statuses) == {"200"}, figures
    with psycopg.connect(database_url) as conn:
        kept = conn.execute(
            "SELECT date_trunc('month', created_at AT TIME ZONE 'UTC'), count(*) FROM events "
            "WHERE client_id = 7 GROUP BY 1 ORDER BY 1"
        ).fetchall()
        names = {p.name for p in partitions.list_partitions(conn)}
    expected_kept = [
        partitions.add_months(current, -back).replace(tzinfo=None)
        for back in range(14, 1, -1)
        if partitions.add_months(current, -back + 1) > horizon
    ]
    assert [month for month, _ in kept] == expected_kept
    assert all(rows == 5001 for _, rows in kept)  # kept months whole
    assert not any(
        partitions.partition_name(partitions.add_months(current, -back)) in names
        for back in range(2, 15)
        if partitions.add_months(current, -back + 1) <= horizon
    )
    assert after < before
