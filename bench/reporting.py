"""Reporting on a large table, and what reporting costs ingest: `python bench/reporting.py`.

Queries: on DATABASE (filled by bench/fill.py, e.g. 20,000,000 events over 13 months, then
migrated so that 004's backfill builds recipient_status), each `receiver report` query for one
mailing or one recipient, `suppressions --since` the last 10 minutes and the whole
mailing_summary of one client's last 30 days, each run REPEAT times (the best and the median
are printed); the plan (EXPLAIN ANALYZE) of the slowest.

Ingest: the same 20 s wrk load as bench/growth.py on two fresh databases in one run, once with
what reporting adds to ingest as shipped, once without: the batch statement's recipient_status
steps removed (this script swaps receiver.storage.events.INSERT_EVENTS in the workers through a
gunicorn config of its own; production code has no such switch) and 006's mailing-count trigger
disabled.

    python bench/reporting.py --database-url postgresql://.../receiver_reporting_bench
    python bench/reporting.py --ingest-only [--seconds 20]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import growth  # noqa: E402
import run as bench  # noqa: E402

from receiver.storage import reporting  # noqa: E402

REPEAT = 5
LIMIT_MS = {"one": 200, "client_30_days": 2000}
WITHOUT_STATUS = "BENCH_WITHOUT_RECIPIENT_STATUS"


def main():
    args = parse_args()
    result = {"machine": bench.machine(bench.pick_server())}
    if not args.ingest_only:
        result["queries"] = measure_queries(args.database_url)
    if not args.queries_only:
        result["ingest"] = measure_ingest(args.seconds)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--ingest-only", action="store_true")
    parser.add_argument("--queries-only", action="store_true")
    parser.add_argument("--json")
    return parser.parse_args()


def targets(conn) -> dict:
    """A busy client, one of its recent mailings, and a recipient with a status."""
    client = conn.execute("SELECT client_id FROM client_last_sent ORDER BY 1 LIMIT 1").fetchone()[0]
    mailing = conn.execute(
        # A recent mailing with clicks (the latest ones may not have any yet).
        "SELECT max(mailing_id) FROM events WHERE client_id = %s AND type = 'click'"
        " AND created_at > now() - interval '7 days'",
        (client,),
    ).fetchone()[0]
    recipient = conn.execute(
        "SELECT recipient_id FROM recipient_status WHERE client_id = %s LIMIT 1", (client,)
    ).fetchone()[0]
    return {"client": client, "mailing": mailing, "recipient": recipient}


def cases(t) -> dict:
    """name: (limit kind, function of a connection) for every report measured."""
    now = datetime.now(UTC)
    c, m = t["client"], t["mailing"]
    return {
        "mailing summary": ("one", lambda conn: reporting.mailing(conn, m, c)),
        "mailing links": ("one", lambda conn: reporting.links(conn, m, c)),
        "mailing devices": ("one", lambda conn: reporting.devices(conn, m, c)),
        "mailing dispatch (its day)": (
            "one",
            lambda conn: reporting.dispatch(conn, now - timedelta(days=1), now, c, m),
        ),
        "recipient status": (
            "one",
            lambda conn: reporting.recipients(conn, c, recipient=t["recipient"]),
        ),
        "suppressions --since 10m": (
            "one",
            lambda conn: reporting.suppressions(conn, now - timedelta(minutes=10), now),
        ),
        "seconds since last sent": ("one", reporting.last_sent),
        "mailing_summary, client, 30 days": (
            "client_30_days",
            lambda conn: reporting.mailings(conn, now - timedelta(days=30), now, c),
        ),
    }


def measure_queries(url) -> list:
    """Each case REPEAT times on a warm connection; print and return the timings."""
    results = []
    with psycopg.connect(url, autocommit=True) as conn:
        t = targets(conn)
        print(f"targets: {t}", flush=True)
        for name, (kind, work) in cases(t).items():
            timings, rows = [], 0
            for _ in range(REPEAT):
                started = time.perf_counter()
                rows = len(work(conn).rows)
                timings.append((time.perf_counter() - started) * 1000)
            entry = {"report": name, "rows": rows, "best_ms": round(min(timings), 1),
                     "median_ms": round(statistics.median(timings), 1),
                     "limit_ms": LIMIT_MS[kind]}  # fmt: skip
            results.append(entry)
            verdict = "ok" if entry["median_ms"] < entry["limit_ms"] else "OVER"
            print(f"{name:<36} {rows:>6} rows  best {entry['best_ms']:>8} ms  median "
                  f"{entry['median_ms']:>8} ms  (limit {entry['limit_ms']} ms) {verdict}",
                  flush=True)  # fmt: skip
        explain_slowest(conn, t, results)
    return results


def explain_slowest(conn, t, results):
    """EXPLAIN ANALYZE of the slowest report's main statement."""
    slowest = max(results, key=lambda r: r["median_ms"] / r["limit_ms"])["report"]
    now = datetime.now(UTC)
    statements = {
        "mailing_summary, client, 30 days": (
            "SELECT * FROM mailing_summaries(%s, %s, %s)",
            (t["client"], now - timedelta(days=30), now),
        ),
    }
    one = {"client": t["client"], "mailing": t["mailing"], "limit": 1000}
    statements["mailing dispatch (its day)"] = (
        reporting.DISPATCH,
        {**one, "since": now - timedelta(days=1), "until": now},
    )
    statements["mailing links"] = (reporting.LINKS, one)
    statements["mailing devices"] = (reporting.DEVICES, one)
    sql, params = statements.get(slowest, (reporting.MAILING, one))
    if slowest == "mailing_summary, client, 30 days":
        # plpgsql hides its inner plan: explain the query it runs, with its array computed.
        ids = conn.execute(
            "SELECT array_agg(DISTINCT mailing_id) FROM events WHERE client_id = %s AND"
            " type = 'sent' AND created_at >= %s AND created_at < %s",
            params,
        ).fetchone()[0]
        sql = "SELECT * FROM mailing_summary WHERE client_id = %s AND mailing_id = ANY (%s)"
        params = (t["client"], ids)
        # With the function's own settings (its SET clauses: migrations/005).
        conn.execute("SET jit = off")
        conn.execute("SET work_mem = '256MB'")
    plan = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params).fetchall()
    print(f"\nplan of the slowest ({slowest}):")
    print("\n".join(line for (line,) in plan), flush=True)


# A gunicorn config that is the packaged one, plus the batch statement without the
# recipient_status steps when WITHOUT_STATUS is set. The workers fork from the master, which
# loads this file, so they inherit the swapped statement.
GUNICORN_CONFIG = f"""
import os
from receiver.web.gunicorn_conf import *  # noqa: F403
if os.environ.get("{WITHOUT_STATUS}"):
    from receiver.storage import events
    events.INSERT_EVENTS = events.insert_events_sql(status_steps="")
    events.INSERT_EVENTS_DELIVERED = events.insert_events_sql(status_steps="", delivery=True)
"""


class SwappableReceiver(bench.Receiver):
    """bench/run.py's Receiver under this script's gunicorn config."""

    def __init__(self, url, without_status, config_path):
        env = {"DATABASE_URL": url, "WEB_CONCURRENCY": "2", "RECEIVER_THREADS": "4",
               "RECEIVER_POOL_MAX_SIZE": "4", "LOG_LEVEL": "WARNING",
               "RECEIVER_BASIC_AUTH": f"{bench.USER}:{bench.PASSWORD}"}  # fmt: skip
        if without_status:
            env[WITHOUT_STATUS] = "1"
        self.port = bench_free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "gunicorn", "-c", str(config_path), "--bind",
                   f"127.0.0.1:{self.port}", "receiver:create_app()"]  # fmt: skip
        self.process = subprocess.Popen(
            command, env={**os.environ, **env}, cwd=bench.ROOT, stderr=subprocess.DEVNULL
        )


def bench_free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure_ingest(seconds) -> list:
    """Fresh-batch wrk load with and without the recipient_status steps, alternated twice."""
    config_path = Path(tempfile.mkdtemp(prefix="receiver-bench-")) / "gunicorn_config.py"
    config_path.write_text(GUNICORN_CONFIG)
    results = []
    try:
        for without in (False, True, False, True):
            with growth.fresh_database(bench.pick_server()) as url:
                if without:  # and without 006's counting trigger
                    with psycopg.connect(url, autocommit=True) as conn:
                        conn.execute("ALTER TABLE events DISABLE TRIGGER events_count_mailings")
                result = load(url, without, config_path, seconds)
                statuses = count(url, "SELECT count(*) FROM recipient_status")
            figures = ("events_per_second", "p50_ms", "p99_ms", "bad")
            entry = {"recipient_status": not without, "statuses": statuses,
                     **{key: result[key] for key in figures}}  # fmt: skip
            results.append(entry)
            print(f"ingest {'without' if without else 'with   '} reporting: "
                  f"{entry['events_per_second']:>7,} events/s  p50 {entry['p50_ms']} ms  p99 "
                  f"{entry['p99_ms']} ms  non-200 {entry['bad']}  statuses {statuses:,}",
                  flush=True)  # fmt: skip
    finally:
        config_path.unlink(missing_ok=True)
        config_path.parent.rmdir()
    with_cte = [r["events_per_second"] for r in results if r["recipient_status"]]
    without_cte = [r["events_per_second"] for r in results if not r["recipient_status"]]
    ratio = statistics.mean(with_cte) / statistics.mean(without_cte)
    print(f"ingest with reporting (recipient_status, mailing counts): {ratio:.2f} x without")
    return results


def load(url, without, config_path, seconds) -> dict:
    """One warm-up and one measured wrk phase of fresh batches."""
    with SwappableReceiver(url, without, config_path) as receiver:
        run = uuid.uuid4().hex[:8]
        bench.wrk(receiver, run, 3, first_batch=0)
        return bench.wrk(receiver, run, seconds, first_batch=1_000_000)


def count(url, sql):
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchone()[0]


if __name__ == "__main__":
    sys.exit(main())
