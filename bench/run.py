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
   flight when wrk stopped), each batch whole, none twice;
7. (the working tree's runs) what learning what Campaign sends costs (receiver/storage/shapes.py,
   off the request path): one pass over every event stored so far, and fresh batches while a
   pass runs every LEARN_EVERY seconds, against the run's own fresh phase. The servers run with
   RECEIVER_LEARN_SHAPES=off so that no other phase has a pass running at a random moment.

With `--before REF` (`make bench` passes BEFORE, default `main`), phases 2-4 also run for the
code of that git ref (exported with `git archive` into a temporary directory and put first on
PYTHONPATH of its gunicorn), alternately with the working tree's, in the same run and database:
the before/after ratios then compare like with like on a shared machine. When REF is the commit
checked out and the working tree has no changes, there is nothing to compare: the before runs
are skipped, saying so. With `--peer` (`make bench` passes it), phases 2-4 also run,
alternately, for bench/peer_fastapi.py: the same contract on FastAPI + pydantic + asyncpg under
uvicorn, the stack issue #13 measures us against.

Needs wrk and pgbench (Debian: `apt-get install wrk postgresql-client`). The database is an
embedded PostgreSQL (pgserver) in a temporary folder, unless BENCH_DATABASE_URL names a server:
then a database is created there and dropped at the end. Which one is used is said at the start;
progress goes to stderr, one line per phase, the figures to stdout at the end. Everything
temporary (the embedded cluster, the exported ref, logs) lives in one folder under TMPDIR that is
removed at the end, also on failure, Ctrl-C or SIGTERM (bench/run.py's `scratch`).
"""

import argparse
import atexit
import base64
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import requests
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from receiver.storage import db, shapes  # noqa: E402
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
# Phase 7: a learning pass every this many seconds while fresh batches arrive (the workers run
# one a minute; more often here, so the phase holds several, each over fewer events).
LEARN_EVERY = 5
# The `created` of the generated events: an hour ago, so they land in the current month's
# partition as live traffic does (not in events_default).
BASE_MS = int(time.time() * 1000) - 3_600_000
STARTED = time.monotonic()
_scratch = []  # the run's one temporary folder, once made (see `scratch`)
_server = []  # the database server's URL, once picked (see `pick_server`)
_cleanups = []  # run at exit, last registered first


def main():
    args = parse_args()
    progress(f"setup: temporary folder {scratch()}")
    skipped = skip_same_code(args)
    server_url = pick_server()
    database = f"receiver_bench_{uuid.uuid4().hex[:8]}"
    progress(f"setup: creating and migrating database {database}")
    admin(server_url, f'CREATE DATABASE "{database}"')
    url = make_conninfo(server_url, dbname=database)
    try:
        migrate(url)
        report = {"machine": machine(server_url), "settings": settings(args)}
        report["before_skipped"] = skipped
        progress(f"ceiling: pgbench, {CONNECTIONS} clients, {args.seconds} s")
        report["ceiling"] = database_ceiling(url, args.seconds)
        progress(f"ceiling: {report['ceiling']['events_per_second']:,} events/s")
        report["runs"] = []
        codes = {"after": ROOT}
        if args.before:
            codes["before"] = export_ref(args.before, scratch() / "before")
        if args.peer:
            codes["peer"] = PEER
        runs = plan(codes, args.rounds)
        for number, (code, first) in enumerate(runs, 1):
            label = LABELS[code].format(ref=args.before)
            report["runs"].append(measured_run(url, args, code, codes[code], first, label,
                                               f"run {number}/{len(runs)}"))  # fmt: skip
    finally:
        progress(f"cleanup: dropping database {database}")
        drop_database(server_url, database)
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(run["verification"]["ok"] for run in report["runs"]) else 1


def measured_run(url, args, code, tree, memory, label, prefix):
    """One gunicorn (or uvicorn) of `tree` through the HTTP phases, then the table checked."""
    started = time.monotonic()
    progress(f"{prefix}: {label}: starting the server")
    with Receiver(url, args.workers, args.threads, tree) as receiver:
        run = {"code": code, "label": label, **drive(receiver, args, memory, prefix)}
        if code == "after":
            run["shapes"] = learning_cost(receiver, args, run["run"], prefix)
    run["verification"] = verify(url, run)
    verdict = "ok" if run["verification"]["ok"] else "FAILED"
    progress(
        f"{prefix}: done in {time.monotonic() - started:.0f} s: "
        f"{run['phases']['fresh']['events_per_second']:,} fresh events/s, verification {verdict}"
    )
    return run


def progress(message):
    """One line on stderr, at once: the figures wait for the end, this says what runs now."""
    print(f"bench [{time.monotonic() - STARTED:5.0f} s] {message}", file=sys.stderr, flush=True)


def scratch() -> Path:
    """The run's one temporary folder; the first call arranges its removal at exit."""
    if not _scratch:
        _scratch.append(Path(tempfile.mkdtemp(prefix="receiver-bench-")))
        on_exit(lambda: shutil.rmtree(_scratch[0], ignore_errors=True))
        install_cleanup()
    return _scratch[0]


def on_exit(cleanup):
    """Run `cleanup` when the bench exits, however it exits (see `install_cleanup`)."""
    _cleanups.append(cleanup)


def install_cleanup():
    """Cleanups at exit; SIGTERM and SIGHUP turned into SystemExit so that `finally` blocks
    and atexit run for them as for Ctrl-C (their default would end the process on the spot)."""
    atexit.register(run_cleanups)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop_on_signal)


def stop_on_signal(signum, _frame):
    """Unwind at once; another signal while cleaning up is ignored so the cleanup finishes."""
    for other in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(other, signal.SIG_IGN)
    progress(f"{signal.Signals(signum).name}: stopping, then cleaning up")
    sys.exit(128 + signum)


def run_cleanups():
    """The registered cleanups, last first (the cluster stops before its folder goes)."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a Ctrl-C would cut it short
        signal.signal(signum, signal.SIG_IGN)
    while _cleanups:
        try:
            _cleanups.pop()()
        except Exception as error:  # the others still run
            progress(f"cleanup: {error!r}")
    if _scratch:
        progress(f"cleanup: removed {_scratch[0]}")


def drop_database(server_url, database):
    """DROP DATABASE, saying (not raising) when it fails: the run's own error comes first."""
    try:
        admin(server_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    except psycopg.Error as error:
        progress(f"cleanup: could not drop database {database}: {error}")


def skip_same_code(args):
    """None, or why the before runs are skipped: REF is HEAD and nothing is changed."""
    if not args.before:
        return None
    commit = resolve_ref(args.before)
    head = resolve_ref("HEAD")
    changes = git("status", "--porcelain").stdout.strip()
    if commit != head or changes:
        return None
    reason = (
        f"BEFORE={args.before} is the commit checked out here ({commit[:12]}) and the working "
        "tree has no changes: before and after would be the same code, so the before runs are "
        "skipped. To compare, name an older ref: make bench BEFORE=HEAD~1 (or a branch, tag or "
        "commit); BEFORE= to not compare."
    )
    progress(f"setup: {reason}")
    args.before = None
    return reason


def resolve_ref(ref):
    """The commit `ref` names; exits saying so when it names none."""
    known = git("rev-parse", "--verify", "-q", ref + "^{commit}")
    if known.returncode != 0:
        sys.exit(
            f"bench: --before {ref}: no such git ref here (make bench BEFORE=<ref>, or BEFORE=)"
        )
    return known.stdout.strip()


def git(*arguments):
    return subprocess.run(
        ["git", "-C", str(ROOT), *arguments], capture_output=True, text=True, check=False
    )


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
    started = time.monotonic()
    progress(f"before: exporting {ref} ({resolve_ref(ref)[:12]}) with git archive to {directory}")
    directory.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    progress(f"before: exported in {time.monotonic() - started:.1f} s")
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
    """BENCH_DATABASE_URL when set, else an embedded PostgreSQL of this run's (one per
    process, however many times asked); says which at the first call."""
    if _server:
        return _server[0]
    if os.environ.get("BENCH_DATABASE_URL"):
        url = os.environ["BENCH_DATABASE_URL"]
        parts = conninfo_to_dict(url)  # said without the password
        where = f"{parts.get('user', '')}@{parts.get('host', '')}:{parts.get('port', '')}"
        progress(f"setup: database server: BENCH_DATABASE_URL ({where}); a receiver_bench_* "
                 "database is created there and dropped at the end")  # fmt: skip
    else:
        from receiver.storage.embedded import start_embedded

        data = scratch() / "postgres"
        progress(f"setup: database server: an embedded PostgreSQL in {data}, removed at the end "
                 "(BENCH_DATABASE_URL=postgresql://... to use a server instead)")  # fmt: skip
        started = time.monotonic()
        on_exit(lambda: stop_postmaster(data))  # when interrupted before `handle` exists
        # "delete": its cleanup stops the cluster and removes it (and its own atexit hook).
        handle = start_embedded(data, cleanup_mode="delete")
        on_exit(handle.cleanup)
        url = handle.get_uri()
        progress(f"setup: embedded PostgreSQL ready in {time.monotonic() - started:.1f} s")
    _server.append(url)
    return url


def stop_postmaster(data):
    """Immediate shutdown of a postmaster still running on `data`, waited for (its files are
    removed next)."""
    try:
        pid = int((data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGQUIT)
    except (OSError, ValueError, IndexError):  # no cluster there, or it has stopped
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


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
    script = scratch() / "insert.sql"
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
        self.url = url
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "RECEIVER_BASIC_AUTH": f"{USER}:{PASSWORD}",
            "WEB_CONCURRENCY": str(workers),
            "RECEIVER_THREADS": str(threads),
            "RECEIVER_POOL_MAX_SIZE": str(threads),
            "LOG_LEVEL": "WARNING",
            "RECEIVER_LEARN_SHAPES": "off",  # phase 7 runs the passes itself
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
            "w", prefix="server-", suffix=".log", delete=False, dir=scratch()
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
        try:
            self.wait_ready()
        except BaseException:  # Ctrl-C or a timeout while booting: the server goes too
            self.__exit__()
            raise
        return self

    def wait_ready(self):
        """Until /readyz answers 200; the server's log quoted if it never does (the log is
        in the run's temporary folder, gone once the bench exits)."""
        deadline = time.monotonic() + 90  # workers boot slowly on a loaded machine
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if requests.get(self.base + "/readyz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        log = Path(self.log.name).read_text()[-3000:]
        raise RuntimeError(f"the receiver did not become ready; the end of its log:\n{log}")

    def __exit__(self, *exc):
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a worker stuck in a request: not left behind
            self.process.kill()
            self.process.wait()
        self.log.close()

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


def drive(receiver, args, memory=True, prefix="run"):
    """The HTTP phases, in order; each fresh phase uses batch numbers no other phase uses."""
    run = uuid.uuid4().hex[:8]

    def phase(title, seconds, *rest, **options):
        """One wrk phase, announced on stderr with what it measures and for how long."""
        progress(f"{prefix}: {title}, {seconds} s")
        return wrk(receiver, run, seconds, *rest, **options)

    phases = {}
    phases["warmup"] = phase("warm-up", 3, first_batch=0)
    next_batch = 10_000_000
    rss_before = receiver.worker_rss()
    cpu_before = receiver.worker_cpu_seconds()
    phases["fresh"] = fresh = phase("fresh batches", args.seconds, first_batch=next_batch)
    fresh["worker_cpu_ms_per_batch"] = round(
        (receiver.worker_cpu_seconds() - cpu_before) * 1000 / max(fresh["started"], 1), 2
    )
    # Re-deliver batches the fresh phase had answered 200 for: every event is a duplicate.
    sent = WRK_THREADS * min(fresh["per_thread"]) - CONNECTIONS
    cpu_before = receiver.worker_cpu_seconds()
    phases["duplicates"] = dup = phase(
        "re-delivered batches", args.seconds, "replay", next_batch, max(sent, 1)
    )
    dup["worker_cpu_ms_per_batch"] = round(
        (receiver.worker_cpu_seconds() - cpu_before) * 1000 / max(dup["started"], 1), 2
    )
    next_batch += 10_000_000
    # Half of the fresh throughput: each connection waits between its requests.
    half_rate = fresh["batches_per_second"] / 2
    delay_ms = max(0, int(CONNECTIONS / half_rate * 1000 - fresh["p50_us"] / 1000))
    phases["half_load"] = phase(
        "half load", args.seconds, first_batch=next_batch, delay_ms=delay_ms
    )
    next_batch += 10_000_000
    if memory:
        memory_seconds = max(5, int(args.memory_events / max(fresh["events_per_second"], 1) * 1.15))
        phases["memory"] = phase(
            f"worker memory over {args.memory_events:,} more events",
            memory_seconds,
            first_batch=next_batch,
        )
    rss_after = receiver.worker_rss()
    return {"run": run, "phases": phases, "rss_kb": {"before": rss_before, "after": rss_after}}


def learning_cost(receiver, args, run, prefix):
    """Phase 7: one pass over everything stored so far (all runs' events: its throughput),
    then fresh batches while a pass runs every LEARN_EVERY s (the throughput it leaves)."""
    with db.connect(receiver.url, "bench shapes") as conn:
        progress(f"{prefix}: learning what Campaign sends from every stored event")
        started = time.monotonic()
        catch_up = shapes.learn(conn)
        seconds = time.monotonic() - started
        passes, stop = [], threading.Event()

        def keep_learning():
            while not stop.wait(LEARN_EVERY):
                began = time.monotonic()
                passes.append((shapes.learn(conn).events, time.monotonic() - began))

        learner = threading.Thread(target=keep_learning, daemon=True)
        learner.start()
        progress(f"{prefix}: fresh batches while learning every {LEARN_EVERY} s, {args.seconds} s")
        try:
            # Batch numbers no phase of drive() uses (each takes 10,000,000 from 10,000,000 on).
            fresh = wrk(receiver, run, args.seconds, first_batch=90_000_000)
        finally:
            stop.set()
            learner.join()
    learned = sum(events for events, _ in passes)
    learning_seconds = sum(took for _, took in passes)
    return {
        "catch_up": {
            "events": catch_up.events,
            "seconds": round(seconds, 2),
            "events_per_second": round(catch_up.events / max(seconds, 1e-9)),
        },
        "fresh_while_learning": fresh,
        "passes": len(passes),
        "learned_events": learned,
        "learning_ms_per_batch": round(learning_seconds * 1000 * 100 / max(learned, 1), 3),
    }


def verify(url, report):
    """The table holds every acknowledged batch, whole, once; nothing else but in-flight ones."""
    fresh_phases = [p for name, p in report["phases"].items() if name != "duplicates"]
    if "shapes" in report:
        fresh_phases.append(report["shapes"]["fresh_while_learning"])
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
    if report.get("before_skipped"):
        lines += ["--- before -> after: not measured", report["before_skipped"]]
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
    if "shapes" in run:
        lines += shapes_lines(run["shapes"], fresh)
    lines.append(f"verification: {run['verification']}")
    return lines


def shapes_lines(figures, fresh):
    """Phase 7: the learning pass's throughput, and the ingest it leaves."""
    catch_up, during = figures["catch_up"], figures["fresh_while_learning"]
    ratio = during["events_per_second"] / max(fresh["events_per_second"], 1)
    return [
        f"learning what Campaign sends, one pass over {catch_up['events']:,} stored events: "
        f"{catch_up['events_per_second']:,} events/s",
        f"fresh batches, learning every {LEARN_EVERY} s: "
        f"{during['events_per_second']:>6,} events/s  "
        f"p50 {during['p50_ms']} ms  p99 {during['p99_ms']} ms  non-200: {during['bad']}  "
        f"({ratio:.2f}x the fresh phase)",
        f"learning during it:                {figures['learning_ms_per_batch']:>8} ms per 100 "
        f"events ({figures['passes']} passes, {figures['learned_events']:,} events; a batch's "
        f"own database transaction: p50 {fresh['p50_ms']} ms end to end)",
    ]


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
