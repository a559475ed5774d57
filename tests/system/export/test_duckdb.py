"""Events by the hundred thousand through `receiver export --month`, read back by DuckDB: the
same counts and the same mailing summaries as PostgreSQL's views, and what it costs.

Slow (a system test): RECEIVER_EXPORT_TEST_EVENTS sets the size (default 400,000, which keeps
CI inside its 20 minutes; 1,000,000 for the figures of docs/export.md). The events
are made by INSERT ... SELECT, in statements of 20,000 rows on two connections at once (the
statement trigger on `events` keeps mailing_counts, which mailing_summary sums, as it does for
the webhook's batches); the export runs as the command, in a process of its own, so that its
time and peak memory are the command's. The measurements are printed (pytest -s shows them).
"""

import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import duckdb
import psycopg
import pytest

from receiver.storage import partitions

EVENTS = int(os.environ.get("RECEIVER_EXPORT_TEST_EVENTS", "400000"))
CHUNK = 20_000
MONTHS = (datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC))

# Events numbered [lo, hi): three clients with 60 mailings each over March and April 2025, 200,000
# recipients, Campaign's type mix (sent, open, click, a few bounces, unsubscribes, complaints,
# opt-ins without a mailing), 2 % of opens without a recipient (mailing_summary counts those as
# one recipient), half the events with an id and half keyed by a digest, the payload as Campaign
# would send it. random() draws the values; the comparison does not need them repeatable.
# (%% is SQL's modulo, escaped for the driver's placeholders.)
GENERATE = """
INSERT INTO events (event_key, event_id, client_id, type, created_at, received_at, mailing_id,
                    user_list_id, recipient_id, mail_id, category, reason, threshold_exceeded,
                    link, device, operating_system, browser, payload)
SELECT event_key, event_id, client_id, type, created_at, received_at, mailing_id, user_list_id,
       recipient_id, mail_id, category, reason, threshold_exceeded, link, device,
       operating_system, browser,
       jsonb_strip_nulls(jsonb_build_object(
           'id', event_id, 'type', type, 'clientId', client_id,
           'created', (extract(epoch FROM created_at) * 1000)::bigint,
           'mailingId', mailing_id, 'userListId', user_list_id, 'recipientId', recipient_id,
           'mailId', mail_id, 'category', category, 'reason', reason,
           'thresholdExceeded', threshold_exceeded, 'link', link, 'device', device,
           'operatingSystem', operating_system, 'browser', browser))
FROM (
    SELECT g.*,
           CASE WHEN i %% 2 = 0 THEN 'id-' || i END AS event_id,
           CASE WHEN i %% 2 = 0 THEN 'id-' || i
                ELSE 'sha256:' || lpad(to_hex(i), 64, '0') END AS event_key,
           CASE WHEN type NOT IN ('singleoptin', 'doubleoptin') THEN 1000 + (r2 * 59)::int END
               AS mailing_id,
           CASE WHEN type = 'open' AND r3 < 0.02 THEN NULL
                ELSE 'r' || (r3 * 200000)::int || '@example.com' END AS recipient_id,
           CASE WHEN type = 'bounce' THEN
               CASE WHEN r4 < 0.3 THEN 'hardbounce' ELSE 'softbounce' END END AS category,
           CASE WHEN type = 'bounce' THEN 'mailbox ' || (r4 * 5)::int END AS reason,
           CASE WHEN type = 'bounce' AND r4 >= 0.3 THEN r4 > 0.9 END AS threshold_exceeded,
           CASE WHEN type = 'click' THEN 'https://example.com/l/' || (r4 * 20)::int END AS link,
           CASE WHEN type IN ('open', 'click')
                THEN (ARRAY['mobile', 'desktop', 'tablet'])[1 + (r4 * 2.99)::int] END AS device,
           CASE WHEN type IN ('open', 'click')
                THEN (ARRAY['iOS', 'Android', 'Windows', 'macOS'])[1 + (r3 * 3.99)::int] END
               AS operating_system,
           CASE WHEN type IN ('open', 'click')
                THEN (ARRAY['Safari', 'Chrome', 'Firefox'])[1 + (r2 * 2.99)::int] END AS browser,
           'm' || i AS mail_id,
           created_at + r4 * interval '10 minutes' AS received_at
    FROM (
        SELECT i, 100000001 + i %% 3 AS client_id, 7000 + i %% 5 AS user_list_id,
               random() AS r2, random() AS r3, random() AS r4,
               CASE WHEN r < 0.45 THEN 'sent' WHEN r < 0.70 THEN 'open'
                    WHEN r < 0.80 THEN 'click' WHEN r < 0.84 THEN 'bounce'
                    WHEN r < 0.85 THEN 'unsubscribe' WHEN r < 0.853 THEN 'spamcomplaint'
                    WHEN r < 0.95 THEN 'doubleoptin' ELSE 'singleoptin' END AS type,
               date_trunc('milliseconds',
                          timestamptz '2025-03-01 00:00:00+00' + r1 * interval '61 days')
                   AS created_at
        FROM (SELECT i, random() AS r, random() AS r1
              FROM generate_series(%(lo)s::bigint, %(hi)s::bigint - 1) AS i) s
    ) g
) e
"""

SUMMARY_COLUMNS = (
    "client_id, mailing_id, sent, opens, unique_opens, clicks, unique_clicks, hard_bounces, "
    "soft_bounces, unsubscribes, spam_complaints"
)
POSTGRES_SUMMARY = f"SELECT {SUMMARY_COLUMNS} FROM mailing_summary ORDER BY 1, 2"  # noqa: S608
# mailing_summary's definitions (migrations/006), over the files: events without a recipient
# count as one recipient (NULLS NOT DISTINCT in mailing_responders).
DUCKDB_SUMMARY = """
SELECT client_id, mailing_id,
       count(*) FILTER (WHERE type = 'sent') AS sent,
       count(*) FILTER (WHERE type = 'open') AS opens,
       count(DISTINCT recipient_id) FILTER (WHERE type = 'open')
           + (count(*) FILTER (WHERE type = 'open' AND recipient_id IS NULL) > 0)::int,
       count(*) FILTER (WHERE type = 'click') AS clicks,
       count(DISTINCT recipient_id) FILTER (WHERE type = 'click')
           + (count(*) FILTER (WHERE type = 'click' AND recipient_id IS NULL) > 0)::int,
       count(*) FILTER (WHERE type = 'bounce' AND category = 'hardbounce'),
       count(*) FILTER (WHERE type = 'bounce' AND category IS DISTINCT FROM 'hardbounce'),
       count(*) FILTER (WHERE type = 'unsubscribe'),
       count(*) FILTER (WHERE type = 'spamcomplaint')
FROM events WHERE mailing_id IS NOT NULL
GROUP BY 1, 2 ORDER BY 1, 2
"""


def generate(database_url, events, chunk=CHUNK, connections=2):
    """Insert events 0..events-1, statements of `chunk` rows, on `connections` at once."""
    ranges = [(lo, min(lo + chunk, events)) for lo in range(0, events, chunk)]
    failures = []

    def work(share):
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute("SET work_mem = '64MB'")  # the trigger's aggregates, in memory
                for lo, hi in share:
                    conn.execute(GENERATE, {"lo": lo, "hi": hi})
        except Exception as error:  # reported by the main thread
            failures.append(error)

    threads = [
        threading.Thread(target=work, args=(ranges[n::connections],)) for n in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures


def run_measured(command, env, log):
    """Run a command; (seconds, peak RSS in MB, its output)."""
    started = time.monotonic()
    with open(log, "w+") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        # Reaped here rather than by Popen.wait: wait4 tells the child's own peak RSS.
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - started
        output.seek(0)
        text = output.read()
    assert process.returncode == 0, text
    return seconds, usage.ru_maxrss / 1024, text


@pytest.mark.skipif(EVENTS < 1000, reason="RECEIVER_EXPORT_TEST_EVENTS below 1000")
def test_duckdb_reads_the_same_counts_and_summaries_as_postgresql(database_url, tmp_path):
    with psycopg.connect(database_url, autocommit=True) as conn:
        for month in MONTHS:
            partitions.create_month(conn, month)
    started = time.monotonic()
    generate(database_url, EVENTS)
    generated = time.monotonic() - started
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ANALYZE events")  # as autovacuum would have by then
        by_type = dict(conn.execute("SELECT type, count(*) FROM events GROUP BY 1").fetchall())
        summary = conn.execute(POSTGRES_SUMMARY).fetchall()
    assert sum(by_type.values()) == EVENTS

    env = {**os.environ, "DATABASE_URL": database_url}
    command = [sys.executable, "-m", "receiver", "export", "--dir", str(tmp_path)]
    months = [arg for month in MONTHS for arg in ("--month", f"{month:%Y-%m}")]
    exported, peak_mb, out = run_measured(command + months, env, tmp_path / "export.log")
    files = sorted(tmp_path.glob("events/month=*/part-*.parquet"))
    megabytes = sum(f.stat().st_size for f in files) / 1e6

    started = time.monotonic()
    duck = duckdb.connect()
    files_glob = str(tmp_path / "events" / "*" / "*.parquet")
    duck.read_parquet(files_glob, hive_partitioning=True).create_view("events")
    duck_by_type = dict(duck.execute("SELECT type, count(*) FROM events GROUP BY 1").fetchall())
    duck_summary = [tuple(row) for row in duck.execute(DUCKDB_SUMMARY).fetchall()]
    keys, rows = duck.execute(
        "SELECT count(DISTINCT (client_id, type, created_at, event_key)), count(*) FROM events"
    ).fetchone()
    by_month = dict(duck.execute("SELECT month, count(*) FROM events GROUP BY 1").fetchall())
    read = time.monotonic() - started

    assert duck_by_type == by_type
    assert duck_summary == summary and len(summary) == 3 * 60
    assert keys == rows == EVENTS
    assert set(by_month) == {"2025-03", "2025-04"}
    verify = run_measured(
        [*command[:4], "verify", "--dir", str(tmp_path), "--database"], env, tmp_path / "v.log"
    )
    print(  # the measurements are this test's report
        f"\nexport of {EVENTS:,} events: generate {generated:.1f} s, export {exported:.1f} s "
        f"(peak RSS {peak_mb:.0f} MB), {len(files)} files {megabytes:.1f} MB, DuckDB "
        f"{read:.2f} s, verify --database {verify[0]:.1f} s\n{out}"
    )
