"""The throughput benchmark: `make bench` (or `python bench/run.py`).

Runs, in one go and on the same machine state, so the figures can be compared as ratios:
1. the database-only ceiling: pgbench, 8 clients, each transaction one INSERT of 100 events
   shaped like the receiver's (same table, indexes, ON CONFLICT, text->jsonb cast, commit);
2. the receiver through HTTP under gunicorn (receiver/web/gunicorn_conf.py), driven by wrk with
   bench/webhook.lua in a separate process: batches of 100, half of the events without an id,
   8 connections, Basic Auth;
3. re-delivered batches (every event a duplicate), to price a retry against a fresh batch;
4. latency at half of the measured throughput;
5. worker memory (RSS) before and after 1,000,000 more events;
6. a check that the table holds exactly the events acknowledged (plus at most the batches in
   flight when wrk stopped), each batch whole, none twice.

With `--before REF` (`make bench` passes BEFORE, default `main`), phases 2-4 also run for the
code of that git ref (exported with `git archive` into a temporary directory and put first on
PYTHONPATH of its gunicorn), alternately with the working tree's, in the same run and database:
the before/after ratios then compare like with like on a shared machine. With `--peer` (`make
bench` passes it), phases 2-4 also run, alternately, for bench/peer_fastapi.py: the same
contract on FastAPI + pydantic + asyncpg under uvicorn, the stack issue #13 measures us against.

Needs wrk and pgbench (Debian: `apt-get install wrk postgresql-client`). The database is
BENCH_DATABASE_URL, else the server on 127.0.0.1:5432 when one listens, else an embedded one.
"""

import argparse
import base64
import importlib.util
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import requests
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from receiver.storage.events import EVENT_COLUMNS  # noqa: E402
from receiver.storage.migrate import migrate  # noqa: E402

USER, PASSWORD = "bench", "bench-password"
PEER = "peer"  # the code to run: bench/peer_fastapi.py under uvicorn, not a receiver tree
LABELS = {
    "after": "after (working tree)",
    "before": "before ({ref})",
    "peer": "peer (FastAPI + pydantic + asyncpg, bench/peer_fastapi.py)",
}
COLUMN_TYPES = dict(EVENT_COLUMNS)
CONNECTIONS, WRK_THREADS = 8, 2
# The `created` of the generated events: an hour ago, so they land in the current month's
# partition as live traffic does (not in events_default).
BASE_MS = int(time.time() * 1000) - 3_600_000


def main():
    args = parse_args()
    server_url = pick_server()
    database = f"receiver_bench_{uuid.uuid4().hex[:8]}"
    admin(server_url, f'CREATE DATABASE "{database}"')
    url = make_conninfo(server_url, dbname=database)
    try:
        migrate(url)
        report = {"machine": machine(server_url), "settings": settings(args)}
        report["ceiling"] = database_ceiling(url, args.seconds)
        report["runs"] = []
        with tempfile.TemporaryDirectory(prefix="receiver-bench-before-") as before_dir:
            codes = {"after": ROOT}
            if args.before:
                codes["before"] = export_ref(args.before, Path(before_dir))
            if args.peer:
                codes["peer"] = PEER
            for code, first in plan(codes, args.rounds):
                label = LABELS[code].format(ref=args.before)
                with Receiver(url, args.workers, args.threads, codes[code]) as receiver:
                    run = {"code": code, "label": label, **drive(receiver, args, first)}
                run["verification"] = verify(url, run)
                report["runs"].append(run)
    finally:
        admin(server_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(run["verification"]["ok"] for run in report["runs"]) else 1


def plan(codes, rounds):
    """(code, with memory phase) in the order run: before and after alternately, ABBA..., so
    a drift of the machine's load over the run weighs on both alike; the memory phase once."""
    order = []
    for r in range(rounds):
        pair = sorted(codes, reverse=r % 2 == 0)  # "after" last in even rounds, first in odd
        order += pair
    return [(code, code == "after" and i == order.index("after")) for i, code in enumerate(order)]


def export_ref(ref, directory):
    """The tree of git `ref` in `directory` (git archive: no worktree left behind)."""
    command = ["git", "-C", str(ROOT), "rev-parse", "--verify", "-q", ref + "^{commit}"]
    known = subprocess.run(command, capture_output=True, check=False)
    if known.returncode != 0:
        sys.exit(
            f"bench: --before {ref}: no such git ref here (make bench BEFORE=<ref>, or BEFORE=)"
        )
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    return directory


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20, help="length of each timed phase")
    parser.add_argument("--memory-events", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", 2)))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("RECEIVER_THREADS", 4)))
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--before", metavar="REF", help="also run this git ref's code, alternately")
    parser.add_argument("--rounds", type=int, default=1, help="before/after pairs to run (ABBA)")
    parser.add_argument(
        "--peer",
        action="store_true",
        help="also run the FastAPI peer (needs the bench-peer extra), alternately",
    )
    return parser.parse_args()


def settings(args):
    return {
        "seconds": args.seconds,
        "workers": args.workers,
        "threads": args.threads,
        "connections": CONNECTIONS,
        "batch": 100,
        "without_id": 0.5,
    }


def pick_server():
    if os.environ.get("BENCH_DATABASE_URL"):
        return os.environ["BENCH_DATABASE_URL"]
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", 5432)) == 0:
            return "postgresql://postgres@127.0.0.1:5432/postgres"
    from receiver.storage.embedded import start_embedded

    return start_embedded(Path(tempfile.mkdtemp(prefix="receiver-bench-pg-"))).get_uri()


def admin(url, sql):
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


def machine(server_url):
    with psycopg.connect(server_url) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        fsync = conn.execute("SHOW fsync").fetchone()[0]
        sync = conn.execute("SHOW synchronous_commit").fetchone()[0]
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "postgresql": version,
        "fsync": fsync,
        "synchronous_commit": sync,
        "cpu_model": cpu_model(),
    }


def cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def database_ceiling(url, seconds):
    """pgbench: the receiver's INSERT with 100 literal rows, 8 clients, one commit each."""
    script = Path(tempfile.mkdtemp()) / "insert.sql"
    script.write_text("\\set r random(1, 1000000000000000)\n" + ceiling_statement() + ";\n")
    command = [
        "pgbench",
        "-n",
        "-M",
        "prepared",
        "-c",
        str(CONNECTIONS),
        "-j",
        "2",
        "-T",
        str(seconds),
        "-f",
        str(script),
        *pgbench_connection(url),
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    tps = next(
        float(line.split("=")[1].split()[0])
        for line in output.splitlines()
        if line.startswith("tps =")
    )
    return {"batches_per_second": round(tps, 1), "events_per_second": round(tps * 100)}


def ceiling_statement():
    """INSERT_EVENTS with its 20 array parameters spelled out as 100-element literals."""
    events = [sample_event(k) for k in range(1, 101)]
    columns = {
        "event_key": [f"{{r}}-{k}" for k in range(1, 101)],
        "event_id": [e.get("id") for e in events],
        "client_id": [e["clientId"] for e in events],
        "type": [e["type"] for e in events],
        "created_at": [datetime.fromtimestamp(BASE_MS / 1000, UTC).isoformat()] * 100,
        "mailing_id": [e["mailingId"] for e in events],
        "user_list_id": [e["userListId"] for e in events],
        "subscription_id": [e["subscriptionId"] for e in events],
        "recipient_id": [e["recipientId"] for e in events],
        "mail_id": [e["mailId"] for e in events],
        "media_type": [None] * 100,
        "category": [None] * 100,
        "reason": [None] * 100,
        "threshold_exceeded": [None] * 100,
        "link": [None] * 100,
        "device": [e["device"] for e in events],
        "operating_system": [e["operatingSystem"] for e in events],
        "browser": [e["browser"] for e in events],
        "remote_address": [e["remoteAddress"] for e in events],
        "payload": [json.dumps(e) for e in events],  # cast text -> jsonb, as the receiver's
    }
    arrays, names = [], list(columns)
    for name, values in columns.items():
        if name == "event_key":  # unique per transaction: the script's random :r
            arrays.append("ARRAY(SELECT :r::text || '-' || g FROM generate_series(1, 100) g)")
        else:
            arrays.append(sql_array(values) + "::" + COLUMN_TYPES[name] + "[]")
    # Built from this file's own constants (a pgbench script), never from outside input.
    return (
        f"INSERT INTO events ({', '.join(names)}) SELECT * FROM unnest({', '.join(arrays)})"  # noqa: S608
        " ON CONFLICT (client_id, type, created_at, event_key) DO NOTHING"
        " RETURNING type, extract(epoch FROM received_at - created_at)::float8"
    )


def sql_array(values):
    def literal(value):
        if value is None:
            return "NULL"
        if isinstance(value, (int, float)):
            return str(value)
        return "'" + str(value).replace("'", "''") + "'"

    return "ARRAY[" + ",".join(literal(v) for v in values) + "]"


def sample_event(k):
    event = {"type": ("sent", "open", "click")[k % 3], "recipientId": f"user{k}@example.com",
             "userListId": 10180860004, "clientId": 10180860001, "created": BASE_MS + k,
             "subscriptionId": 10227900201, "mailId": f"ceiling-{k}", "mailingId": 10230355206,
             "mediaTypesToAddresses": {"EMAIL": f"user{k}@example.com"}, "device": "desktop",
             "operatingSystem": "Windows 10", "browser": "Firefox 64.1",
             "remoteAddress": "0.0.0.0"}  # fmt: skip
    if k % 2 == 0:
        event["id"] = f"ceiling-e{k}"
    return event


def pgbench_connection(url):
    """pgbench takes the connection as options plus a database name."""
    parts = conninfo_to_dict(url)
    options = []
    for key, flag in (("host", "-h"), ("port", "-p"), ("user", "-U")):
        if parts.get(key):
            options += [flag, str(parts[key])]
    return [*options, parts.get("dbname", "postgres")]


class Receiver:
    """gunicorn with the packaged settings, bound to a free port, workers' pids at hand."""

    def __init__(self, url, workers, threads, code=ROOT):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "RECEIVER_BASIC_AUTH": f"{USER}:{PASSWORD}",
            "WEB_CONCURRENCY": str(workers),
            "RECEIVER_THREADS": str(threads),
            "RECEIVER_POOL_MAX_SIZE": str(threads),
            "LOG_LEVEL": "WARNING",
        }
        if code == PEER:
            env["PEER_BASIC_AUTH"] = f"{USER}:{PASSWORD}"
            code, command = ROOT, self.peer_command(workers)
        else:
            command = self.receiver_command()
        if Path(code) != ROOT:  # another ref's tree, imported before the installed one
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), env.get("PYTHONPATH")]))
        # gunicorn's own log, for when it does not come up (a busy machine, a bad setting).
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed with the process)
            "w", prefix="receiver-bench-", suffix=".log", delete=False
        )
        self.process = subprocess.Popen(command, env=env, cwd=code, stderr=self.log)

    def receiver_command(self):
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:receiver.web.gunicorn_conf",
            "--bind",
            f"127.0.0.1:{self.port}",
            "receiver:create_app()",
        ]

    def peer_command(self, workers):
        """uvicorn as FastAPI deployments run it: uvloop, httptools, no access log."""
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(ROOT / "bench"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(workers),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--log-level",
            "warning",
            "--no-access-log",
            "peer_fastapi:app",
        ]

    def __enter__(self):
        deadline = time.monotonic() + 90  # workers boot slowly on a loaded machine
        while time.monotonic() < deadline:
            try:
                if requests.get(self.base + "/readyz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the receiver did not become ready (its log: {self.log.name})")

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait(timeout=30)

    def worker_pids(self):
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def worker_cpu_seconds(self):
        """User + system CPU time of all workers so far (steadier than throughput when the
        machine is shared: other load slows us down but does not bill us its cycles)."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.worker_pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / ticks

    def worker_rss(self):
        """Resident size of each worker, in kB."""
        sizes = []
        for pid in self.worker_pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes.append(int(line.split()[1]))
        return sizes


def wrk(receiver, run, seconds, mode="fresh", first_batch=0, batches=0, delay_ms=0):
    """One wrk phase; returns the script's counts and latency figures."""
    token = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    command = [
        "wrk",
        "-t",
        str(WRK_THREADS),
        "-c",
        str(CONNECTIONS),
        "-d",
        f"{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(ROOT / "bench/webhook.lua"),
        receiver.base + "/webhook",
        "--",
        run,
        token,
        mode,
        str(first_batch),
        str(batches),
        str(delay_ms),
        str(WRK_THREADS),
        str(BASE_MS),
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    seconds_taken = result["duration_us"] / 1e6
    result["batches_per_second"] = round(result["ok"] / seconds_taken, 1)
    result["events_per_second"] = round(result["ok"] * 100 / seconds_taken)
    result["p50_ms"] = round(result["p50_us"] / 1000, 1)
    result["p99_ms"] = round(result["p99_us"] / 1000, 1)
    return result


def drive(receiver, args, memory=True):
    """The HTTP phases, in order; each fresh phase uses batch numbers no other phase uses."""
    run = uuid.uuid4().hex[:8]
    phases = {}
    phases["warmup"] = wrk(receiver, run, 3, first_batch=0)
    next_batch = 10_000_000
    rss_before = receiver.worker_rss()
    cpu_before = receiver.worker_cpu_seconds()
    phases["fresh"] = fresh = wrk(receiver, run, args.seconds, first_batch=next_batch)
    fresh["worker_cpu_ms_per_batch"] = round(
        (receiver.worker_cpu_seconds() - cpu_before) * 1000 / max(fresh["started"], 1), 2
    )
    # Re-deliver batches the fresh phase had answered 200 for: every event is a duplicate.
    sent = WRK_THREADS * min(fresh["per_thread"]) - CONNECTIONS
    cpu_before = receiver.worker_cpu_seconds()
    phases["duplicates"] = dup = wrk(
        receiver, run, args.seconds, "replay", next_batch, max(sent, 1)
    )
    dup["worker_cpu_ms_per_batch"] = round(
        (receiver.worker_cpu_seconds() - cpu_before) * 1000 / max(dup["started"], 1), 2
    )
    next_batch += 10_000_000
    # Half of the fresh throughput: each connection waits between its requests.
    half_rate = fresh["batches_per_second"] / 2
    delay_ms = max(0, int(CONNECTIONS / half_rate * 1000 - fresh["p50_us"] / 1000))
    phases["half_load"] = wrk(
        receiver, run, args.seconds, first_batch=next_batch, delay_ms=delay_ms
    )
    next_batch += 10_000_000
    if memory:
        memory_seconds = max(5, int(args.memory_events / max(fresh["events_per_second"], 1) * 1.15))
        phases["memory"] = wrk(receiver, run, memory_seconds, first_batch=next_batch)
    rss_after = receiver.worker_rss()
    return {"run": run, "phases": phases, "rss_kb": {"before": rss_before, "after": rss_after}}


def verify(url, report):
    """The table holds every acknowledged batch, whole, once; nothing else but in-flight ones."""
    fresh_phases = [p for name, p in report["phases"].items() if name != "duplicates"]
    acknowledged = sum(p["ok"] for p in fresh_phases)
    duplicates = report["phases"]["duplicates"]
    # Batches cut off when wrk stopped may have committed; a replayed batch that the fresh
    # phase had not stored is stored by the duplicate phase.
    stored_by_replay = duplicates["ok"] - duplicates["duplicates_only"]
    in_flight = CONNECTIONS * (len(fresh_phases) + 1) + stored_by_replay
    with psycopg.connect(url) as conn:
        rows, distinct_mail = conn.execute(
            "SELECT count(*), count(DISTINCT mail_id) FROM events WHERE client_id = 10180860001"
            " AND mail_id LIKE %s",
            (report["run"] + "-%",),
        ).fetchone()
        partial = conn.execute(
            "SELECT count(*) FROM (SELECT (split_part(mail_id, '-', 2)::bigint - 1) / 100 AS b"
            " FROM events WHERE mail_id LIKE %s GROUP BY 1 HAVING count(*) <> 100) AS x",
            (report["run"] + "-%",),
        ).fetchone()[0]
    batches = rows / 100
    ok = (
        rows == distinct_mail
        and partial == 0
        and acknowledged <= batches <= acknowledged + in_flight
    )
    return {
        "rows": rows,
        "distinct_events": distinct_mail,
        "partial_batches": partial,
        "acknowledged_batches": acknowledged,
        "stored_batches": batches,
        "unacknowledged_in_flight_max": in_flight,
        "ok": ok,
    }


def print_report(report):
    ceiling = report["ceiling"]
    lines = [
        f"machine: {report['machine']}",
        f"settings: {report['settings']}",
        f"database-only ceiling (pgbench):   {ceiling['events_per_second']:>8,} events/s",
    ]
    for run in report["runs"]:
        lines += run_lines(run, ceiling)
    lines += comparison_lines(report["runs"])
    print("\n".join(lines))


def run_lines(run, ceiling):
    phases = run["phases"]
    fresh, dup, half = phases["fresh"], phases["duplicates"], phases["half_load"]
    lines = [
        f"--- {run['label']}",
        f"receiver, fresh batches:           {fresh['events_per_second']:>8,} events/s  "
        f"p50 {fresh['p50_ms']} ms  p99 {fresh['p99_ms']} ms  non-200: {fresh['bad']}",
        f"receiver / ceiling:                {fresh['events_per_second'] / ceiling['events_per_second']:>8.2f}",  # noqa: E501
        f"re-delivered batches:              {dup['events_per_second']:>8,} events/s  "
        f"p50 {dup['p50_ms']} ms  p99 {dup['p99_ms']} ms  non-200: {dup['bad']}; "
        f"all-duplicate answers {dup['duplicates_only']}/{dup['ok']}",
        f"worker CPU per batch:              {fresh['worker_cpu_ms_per_batch']:>8} ms fresh, "
        f"{dup['worker_cpu_ms_per_batch']} ms re-delivered",
        f"half load:                         {half['events_per_second']:>8,} events/s  "
        f"p50 {half['p50_ms']} ms  p99 {half['p99_ms']} ms  non-200: {half['bad']}",
    ]
    if "memory" in phases:
        before, after = run["rss_kb"]["before"], run["rss_kb"]["after"]
        growth = max((a - b) / b for a, b in zip(after, before, strict=False)) if before else 0
        lines.append(
            f"worker RSS before/after {phases['memory']['ok'] * 100:,} more events: "
            f"{before} -> {after} kB (max growth {growth:.1%})"
        )
    lines.append(f"verification: {run['verification']}")
    return lines


def comparison_lines(runs):
    """after / before and after / peer of each figure, each side the mean of its runs."""
    sides = {code: [r for r in runs if r["code"] == code] for code in LABELS}
    lines = []
    for other in ("before", "peer"):
        if sides[other]:
            lines += ratio_lines(sides, other)
    return lines


def ratio_lines(sides, other):
    def mean(code, phase, key):
        values = [r["phases"][phase][key] for r in sides[code]]
        return sum(values) / len(values)

    lines = [f"--- {other} -> after (means of each side's runs, same run of the bench)"]
    for title, phase, key in (
        ("fresh events/s", "fresh", "events_per_second"),
        ("re-delivered events/s", "duplicates", "events_per_second"),
        ("worker CPU per fresh batch, ms", "fresh", "worker_cpu_ms_per_batch"),
        ("worker CPU per re-delivered batch, ms", "duplicates", "worker_cpu_ms_per_batch"),
        ("p99 at full load, ms", "fresh", "p99_ms"),
        ("p50 at half load, ms", "half_load", "p50_ms"),
        ("p99 at half load, ms", "half_load", "p99_ms"),
    ):
        before, after = mean(other, phase, key), mean("after", phase, key)
        ratio = after / max(before, 1e-9)
        lines.append(f"{title + ':':<40} {before:>9,.2f} -> {after:>9,.2f}  ({ratio:.2f}x)")
    return lines


if __name__ == "__main__":
    if not shutil.which("wrk") or not shutil.which("pgbench"):
        sys.exit("bench needs wrk and pgbench: apt-get install wrk postgresql-client")
    if "--peer" in sys.argv and importlib.util.find_spec("uvicorn") is None:
        sys.exit("bench --peer needs the bench-peer extra: pip install -e '.[bench-peer]'")
    sys.exit(main())
