"""Ingest as the table grows: `make bench-growth` (or `python bench/growth.py`).

In one run, the same wrk load as bench/run.py (batches of 100 Campaign-like events, half without
an id, 8 connections, events of the current hour) against the receiver with 0, 10M and 50M
events already stored over the last 13 months (filled server-side by bench/fill.py), each step
in a fresh database. At each step it prints the events/s, the latency, and the size of the
indexes an insert of today's events touches (the current month's partition) next to the size
an unpartitioned table's indexes would have (all partitions together): the number that decides
what happens once indexes outgrow memory. On the empty table it also prices each secondary
index: the same load with that index dropped.

    python bench/growth.py [--steps 0,10000000,50000000] [--seconds 20] [--json out.json]
"""

import argparse
import json
import sys
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import fill  # noqa: E402
import run as bench  # noqa: E402

from receiver.storage import partitions  # noqa: E402
from receiver.storage.migrate import migrate  # noqa: E402

SECONDARY_INDEXES = ("events_mailing", "events_recipient", "events_received_at")
INDEX_SIZES = """
SELECT sum(pg_indexes_size(inhrelid)) FILTER (WHERE inhrelid = to_regclass(%s)),
       sum(pg_indexes_size(inhrelid)),
       sum(pg_total_relation_size(inhrelid))
FROM pg_inherits WHERE inhparent = 'events'::regclass
"""


def main():
    args = parse_args()
    server_url = bench.pick_server()
    report = {"machine": bench.machine(server_url), "steps": [], "index_costs": []}
    for target in args.steps:
        with fresh_database(server_url) as url:
            if target:
                fill.fill(url, target, progress=lambda line: print(line, flush=True))
            step = {"stored_before": target, **measure(url, args.seconds), **index_sizes(url)}
            report["steps"].append(step)
            print_step(step)
            if target == 0 and not args.skip_index_costs:
                report["index_costs"] = index_costs(url, args.seconds, step)
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps",
        default="0,10000000,50000000",
        type=lambda text: [int(n) for n in text.split(",")],
    )
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--skip-index-costs", action="store_true")
    parser.add_argument("--json")
    return parser.parse_args()


@contextmanager
def fresh_database(server_url):
    """A new migrated database on the bench server, dropped afterwards."""
    name = f"receiver_growth_{uuid.uuid4().hex[:8]}"
    bench.admin(server_url, f'CREATE DATABASE "{name}"')
    try:
        url = make_conninfo(server_url, dbname=name)
        migrate(url)
        yield url
    finally:
        bench.admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# Buffer reads of the database: a block not in shared_buffers is read from the OS (or the
# disk). Per batch, it is the cost that grows once the indexes an insert touches outgrow memory,
# and unlike events/s it does not depend on what else the machine is doing.
BLOCKS = "SELECT blks_read, blks_hit FROM pg_stat_database WHERE datname = current_database()"


def measure(url, seconds) -> dict:
    """The fresh-batch load through gunicorn: events/s, latency, block reads per batch."""
    with bench.Receiver(url, workers=2, threads=4) as receiver:
        run = uuid.uuid4().hex[:8]
        bench.wrk(receiver, run, 3, first_batch=0)  # warm-up
        read_before, hit_before = blocks(url)
        result = bench.wrk(receiver, run, seconds, first_batch=1_000_000)
        read_after, hit_after = blocks(url)
    batches = max(result["ok"], 1)
    figures = {key: result[key] for key in ("events_per_second", "p50_ms", "p99_ms", "bad")}
    figures["blocks_read_per_batch"] = round((read_after - read_before) / batches, 1)
    figures["blocks_hit_per_batch"] = round((hit_after - hit_before) / batches, 1)
    return figures


def blocks(url):
    with psycopg.connect(url) as conn:
        return conn.execute(BLOCKS).fetchone()


def index_sizes(url) -> dict:
    """Index bytes an insert of today's events touches, against all partitions' together."""
    with psycopg.connect(url) as conn:
        current = partitions.partition_name(partitions.month_start(datetime.now(UTC)))
        touched, all_indexes, total = conn.execute(INDEX_SIZES, (current,)).fetchone()
    return {
        "touched_index_bytes": int(touched or 0),
        "unpartitioned_index_bytes": int(all_indexes or 0),
        "table_bytes": int(total or 0),
    }


def index_costs(url, seconds, baseline) -> list:
    """The same load with each secondary index dropped in turn (and put back), every run on an
    emptied table, next to a run with all of them on an emptied table too."""
    costs = []
    with psycopg.connect(url, autocommit=True) as conn:
        definitions = dict(
            conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'events'"
            ).fetchall()
        )
    with_all = measure_emptied(url, seconds)
    for name in SECONDARY_INDEXES:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP INDEX {name}")
        without = measure_emptied(url, seconds)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(definitions[name])
        costs.append(
            {
                "index": name,
                "events_per_second_without": without["events_per_second"],
                "events_per_second_with_all": with_all["events_per_second"],
                "blocks_hit_without": without["blocks_hit_per_batch"],
                "blocks_hit_with_all": with_all["blocks_hit_per_batch"],
            }
        )
        print(
            f"without {name}: {without['events_per_second']:,} events/s, "
            f"{without['blocks_hit_per_batch']} blocks hit per batch",
            flush=True,
        )
    return costs


def measure_emptied(url, seconds) -> dict:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE events")
    return measure(url, seconds)


def gib(nbytes):
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


def print_step(step):
    print(
        f"stored before: {step['stored_before']:>11,}  {step['events_per_second']:>7,} events/s"
        f"  p50 {step['p50_ms']} ms  p99 {step['p99_ms']} ms  non-200 {step['bad']}  blocks "
        f"read/hit per batch {step['blocks_read_per_batch']}/{step['blocks_hit_per_batch']}  "
        f"indexes "
        f"touched {gib(step['touched_index_bytes'])}, unpartitioned would be "
        f"{gib(step['unpartitioned_index_bytes'])}  (table {gib(step['table_bytes'])})",
        flush=True,
    )


def print_report(report):
    print(f"machine: {report['machine']}")
    empty = report["steps"][0]["events_per_second"] if report["steps"] else 0
    for step in report["steps"]:
        ratio = step["events_per_second"] / empty if empty else 0
        print(f"  {step['stored_before']:>11,} stored: {ratio:.2f} x the empty table's ingest")
    for cost in report["index_costs"]:
        gain = cost["events_per_second_without"] / max(cost["events_per_second_with_all"], 1)
        print(
            f"  {cost['index']}: ingest without it {gain:.2f} x with all indexes; blocks "
            f"hit per batch {cost['blocks_hit_without']} without, {cost['blocks_hit_with_all']} "
            "with all"
        )


if __name__ == "__main__":
    sys.exit(main())
