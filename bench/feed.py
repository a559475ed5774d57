"""What the change feed costs ingest: `make bench-feed` (or `python bench/feed.py`).

The same wrk load as bench/growth.py (fresh batches of 100 Campaign-like events through gunicorn,
1/8 of them unsubscribes and 1/8 bounces, so recipients change status all the time), each
phase on a fresh database, alternated in one run: with the feed's bookkeeping as migration 008
ships it (events.xid filled by its default, the events_xid index, status_changes written by the
triggers on recipient_status), and without it (index and triggers dropped, the default removed).
It prints events/s, latency and block reads per batch of each phase, the ratio with/without,
and what the bookkeeping takes on disk per million events. Then the batch statement alone
(receiver/storage/events.py's INSERT_EVENTS, the same 100-event batches, one connection), in
turns on a database with and one without the bookkeeping: the database's own cost, without
gunicorn and HTTP in the figure.

    python bench/feed.py [--seconds 20] [--rounds 2] [--json out.json]
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import orjson
import psycopg

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import growth  # noqa: E402
import run as bench  # noqa: E402

from receiver.storage import events  # noqa: E402

# The last hour: events of the current month's partition, as in production.
BASE_MS = int(time.time() * 1000) - 3_600_000

WITHOUT_FEED = """
DROP INDEX events_xid;
ALTER TABLE events ALTER COLUMN xid DROP DEFAULT;
DROP TRIGGER recipient_status_log_inserts ON recipient_status;
DROP TRIGGER recipient_status_log_updates ON recipient_status;
"""
SIZES = """
SELECT (SELECT count(*) FROM events),
       (SELECT coalesce(sum(pg_relation_size(inhrelid)), 0) FROM pg_inherits
        WHERE inhparent = 'events_xid'::regclass),
       (SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits
        WHERE inhparent = 'events'::regclass),
       (SELECT count(*) FROM status_changes),
       pg_total_relation_size('status_changes')
"""


def main():
    args = parse_args()
    phases = []
    for _ in range(args.rounds if args.seconds else 0):
        for with_feed in (True, False):
            phases.append(phase(with_feed, args.seconds))
    report = {"machine": bench.machine(bench.pick_server()), "phases": phases}
    if phases:
        print_summary(phases)
    report["statement"] = statement_cost(args.statement_batches)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--statement-batches", type=int, default=3000)
    parser.add_argument("--json", help="also write the figures here")
    return parser.parse_args()


def phase(with_feed, seconds) -> dict:
    """One measured load on a fresh database, with or without the feed's bookkeeping."""
    with growth.fresh_database(bench.pick_server()) as url:
        if not with_feed:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(WITHOUT_FEED)
        figures = growth.measure(url, seconds)
        with psycopg.connect(url) as conn:
            events, index_bytes, table_bytes, changes, changes_bytes = conn.execute(
                SIZES if with_feed else SIZES.replace("'events_xid'", "'events_mailing'")
            ).fetchone()
    entry = {"feed": with_feed, **figures, "events": events, "status_changes": changes}
    if with_feed:
        mib_per_million = 1_000_000 / max(events, 1) / 2**20
        entry["xid_index_mb_per_million_events"] = round(float(index_bytes) * mib_per_million, 1)
        entry["events_mb_per_million_events"] = round(float(table_bytes) * mib_per_million, 1)
        entry["status_changes_mb"] = round(changes_bytes / 2**20, 1)
    print(
        f"{'with   ' if with_feed else 'without'} the feed: {entry['events_per_second']:>7,} "
        f"events/s  p50 {entry['p50_ms']} ms  p99 {entry['p99_ms']} ms  blocks read/hit per "
        f"batch {entry['blocks_read_per_batch']}/{entry['blocks_hit_per_batch']}  non-200 "
        f"{entry['bad']}  events {events:,}  status changes {changes:,}",
        flush=True,
    )
    return entry


def a_batch(number) -> str:
    """INSERT_EVENTS' document for 100 fresh events, 1/8 unsubscribes and 1/8 hard bounces of
    recipients that come back, so statuses keep changing (as in the wrk load)."""
    rows = []
    for i in range(100):
        k = number * 100 + i
        kind = ("unsubscribe", "bounce", "open", "open", "sent", "sent", "click", "sent")[i % 8]
        payload = {"type": kind, "id": f"f{k}", "recipientId": f"r{k % 5000}@example.com",
                   "clientId": 1, "created": BASE_MS + k, "mailingId": 7,
                   "category": "hardbounce"}  # fmt: skip
        rows.append([f"f{k}", f"f{k}", 1, kind, BASE_MS + k, 7, None, None, payload])
    return orjson.dumps(rows).decode()


def statement_cost(batches) -> dict:
    """Seconds per batch statement with and without the feed's bookkeeping, in turns."""
    server = bench.pick_server()
    with growth.fresh_database(server) as with_url, growth.fresh_database(server) as plain_url:
        with psycopg.connect(plain_url, autocommit=True) as conn:
            conn.execute(WITHOUT_FEED)
        spent = {True: 0.0, False: 0.0}
        with (
            psycopg.connect(with_url, autocommit=True) as with_feed,
            psycopg.connect(plain_url, autocommit=True) as without,
        ):
            for number in range(batches):
                document = a_batch(number)
                for feed_on, conn in ((True, with_feed), (False, without))[:: 1 - 2 * (number % 2)]:
                    started = time.perf_counter()
                    conn.execute(events.INSERT_EVENTS, (document,)).fetchall()
                    spent[feed_on] += time.perf_counter() - started
    per_batch = {key: round(value / batches * 1000, 3) for key, value in spent.items()}
    ratio = spent[True] / spent[False]
    print(f"batch statement alone: with the feed {per_batch[True]} ms, without "
          f"{per_batch[False]} ms per batch of 100: {ratio:.3f} x", flush=True)  # fmt: skip
    return {"with_ms": per_batch[True], "without_ms": per_batch[False], "ratio": ratio}


def print_summary(phases):
    def mean(key, with_feed):
        return statistics.mean(p[key] for p in phases if p["feed"] == with_feed)

    for key in ("events_per_second", "p50_ms", "p99_ms", "blocks_hit_per_batch"):
        print(f"{key}: with the feed {mean(key, True) / mean(key, False):.3f} x without")
    sized = [p for p in phases if p["feed"]]
    for key in ("xid_index_mb_per_million_events", "events_mb_per_million_events"):
        print(f"{key}: {statistics.mean(p[key] for p in sized):.1f}")


if __name__ == "__main__":
    sys.exit(main())
