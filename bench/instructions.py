"""Instructions per fresh batch, counted by callgrind: `python bench/instructions.py`.

Worker CPU time on a shared 2-core machine moves by ±30 % from run to run (other load, cache
misses, PostgreSQL on the same cores); the number of instructions the handler executes does
not: valgrind counts the same total for the same code and input whatever else the machine does.
So this is the figure to compare two versions of the handler by, and bench/run.py's CPU per
batch the one to size a deployment by.

Each tree (the working tree, and REF's exported with `git archive`) posts N fresh batches of 100
(bench/handler_cpu.py's, half without an id) through Flask's test client to a fresh database
under `valgrind --tool=callgrind`, for two values of N; the difference of the totals over the
difference of N is what one more batch costs, start-up and imports cancelled out. gunicorn is
not in it (see bench/http_floor.py for its share). Needs valgrind (Debian: `apt-get install
valgrind`); a run takes about a minute and a half per tree.

With --http, each tree is counted the way it serves: gunicorn with the packaged settings (one
worker, its four threads) under callgrind, the batches posted over one kept-alive connection,
the worker's instructions per batch; with --peer, bench/peer_fastapi.py under uvicorn is
counted alike, and the ratio printed is make bench's "worker CPU per fresh batch" without the
machine's noise. (Counts weigh every instruction alike: the SHA-256 of the body and orjson's
loops cost fewer cycles each than the interpreter's, so compare like with like.)
"""

import argparse
import base64
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WARMUP = 10


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", metavar="REF", help="also count this git ref's handler")
    parser.add_argument("--batches", default="20,80", help="the two batch counts (default 20,80)")
    parser.add_argument(
        "--server", help="PostgreSQL URL (default: BENCH_DATABASE_URL, else an embedded one)"
    )
    parser.add_argument("--http", action="store_true", help="count each tree through gunicorn")
    parser.add_argument(
        "--peer", action="store_true", help="with --http: also the FastAPI peer (bench-peer extra)"
    )
    parser.add_argument("--child", nargs=3, metavar=("ROOT", "BODIES", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer and not args.http:
        parser.error("--peer counts through a server: add --http")
    if args.child:
        return post_batches(Path(args.child[0]), Path(args.child[1]), int(args.child[2]), args)
    if not shutil.which("valgrind"):
        sys.exit("bench/instructions.py needs valgrind: apt-get install valgrind")
    low, high = map(int, args.batches.split(","))
    args.server = args.server or bench_server()
    with tempfile.TemporaryDirectory(prefix="receiver-instructions-") as scratch:
        scratch = Path(scratch)
        bodies = write_bodies(scratch / "bodies", high + WARMUP)
        trees = {"after (working tree)": ROOT}
        if args.before:
            trees = {f"before ({args.before})": export(args.before, scratch / "before"), **trees}
        if args.peer:
            trees = {"peer (bench/peer_fastapi.py)": PEER, **trees}
        counter = count_http if args.http else count
        where = " through the server" if args.http else ""
        counts = {}
        for label, tree in trees.items():
            totals = [counter(tree, bodies, n, args.server) for n in (low, high)]
            counts[label] = (totals[1] - totals[0]) / (high - low)
            print(f"{label}: {counts[label] / 1e6:.2f} M instructions per fresh batch{where}")
    after = counts["after (working tree)"]
    for label, figure in counts.items():
        if not label.startswith("after"):
            print(f"after / {label.split(' ')[0]}: {after / figure:.2f}")
    return 0


def bench_server():
    """bench/run.py's choice, said on stderr: BENCH_DATABASE_URL, else an embedded PostgreSQL
    removed at exit (never a server merely found listening)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import run

    return run.pick_server()


def write_bodies(path, count):
    """bench/handler_cpu.py's batches, one per line (so building them is not counted)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from handler_cpu import batch

    run = uuid.uuid4().hex[:8]
    path.write_bytes(b"\n".join(batch(run, b) for b in range(count)))
    return path


def export(ref, directory):
    directory.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True)
    if archive.returncode != 0:
        sys.exit(f"bench/instructions.py: --before {ref}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive.stdout, check=True)
    return directory


def count(tree, bodies, batches, server):
    """Instructions callgrind counts for one child run posting `batches` batches."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--server",
        server,
        "--child",
        str(tree),
        str(bodies),
        str(batches),
    ]
    env = {**os.environ, "PYTHONPATH": str(tree)}  # the tree's receiver before any installed one
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or not found:
        sys.exit(f"bench/instructions.py: the run under valgrind failed:\n{done.stderr[-3000:]}")
    return int(found.group(1))


PEER = "peer"  # counted through uvicorn: bench/peer_fastapi.py, not a receiver tree


def count_http(tree, bodies, batches, server):
    """Instructions of the serving process (gunicorn's worker, or uvicorn) while it answers
    WARMUP and then `batches` fresh batches over one kept-alive connection, into a database of
    its own."""
    sys.path.insert(0, str(ROOT))
    import psycopg
    from psycopg.conninfo import make_conninfo

    from receiver.storage.migrate import migrate

    name = f"receiver_instructions_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with tempfile.TemporaryDirectory(prefix="receiver-callgrind-") as out:
        try:
            url = make_conninfo(server, dbname=name)
            migrate(url)
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            command, env, cwd = serving_command(tree, port, url)
            valgrind = ["valgrind", "--tool=callgrind", "--trace-children=yes"]
            process = subprocess.Popen(
                [*valgrind, f"--callgrind-out-file={out}/callgrind.%p", *command],
                env=env,
                cwd=cwd,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                connection = wait_ready(port, process)
                for body in bodies.read_bytes().split(b"\n")[: WARMUP + batches]:
                    post(connection, body)
                connection.close()
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=300)
        finally:
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        # One file per process: the one that served is the one that counted the most.
        return max(callgrind_total(path) for path in Path(out).glob("callgrind.*"))


def serving_command(tree, port, url):
    """(command, environment, working directory) of the server for `tree` on `port`."""
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "RECEIVER_BASIC_AUTH": "u:p",
        "PEER_BASIC_AUTH": "u:p",
        "LOG_LEVEL": "WARNING",
        "RECEIVER_LEARN_SHAPES": "off",
        "WEB_CONCURRENCY": "1",
    }
    if tree == PEER:
        command = [sys.executable, "-m", "uvicorn", "--app-dir", str(ROOT / "bench")]
        command += ["--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop"]
        command += ["--http", "httptools", "--log-level", "warning", "--no-access-log"]
        return [*command, "peer_fastapi:app"], env, ROOT
    env["PYTHONPATH"] = str(tree)  # the tree's receiver before any installed one
    command = [sys.executable, "-m", "gunicorn", "-c", "python:receiver.web.gunicorn_conf"]
    return [*command, "--bind", f"127.0.0.1:{port}", "receiver:create_app()"], env, tree


def wait_ready(port, process):
    """A connection to the server once /readyz answers 200 (minutes under valgrind)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            connection.request("GET", "/readyz")
            answer = connection.getresponse()
            answer.read()
            if answer.status == 200:
                return connection
        except OSError:
            pass
        time.sleep(1)
    sys.exit("bench/instructions.py: the server under valgrind did not become ready")


def post(connection, body):
    """POST one batch; it must be answered 200 with all 100 events stored."""
    token = base64.b64encode(b"u:p").decode()
    headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
    connection.request("POST", "/webhook", body, headers)
    answer = connection.getresponse()
    data = answer.read()
    if answer.status != 200 or b'"stored":100' not in data:
        sys.exit(f"bench/instructions.py: a batch was answered {answer.status}: {data[:200]!r}")


def callgrind_total(path):
    """The instructions one callgrind output file counts."""
    found = re.search(rb"^(?:summary|totals): (\d+)", path.read_bytes(), re.MULTILINE)
    return int(found.group(1)) if found else 0


def post_batches(tree, bodies, batches, args):
    """The measured child: WARMUP batches, then `batches` fresh ones, each answered 200."""
    sys.path.insert(0, str(tree))
    import psycopg
    from psycopg.conninfo import make_conninfo

    from receiver import create_app
    from receiver.config import Config
    from receiver.storage import db
    from receiver.storage.migrate import migrate

    assert Path(sys.modules["receiver"].__file__).is_relative_to(tree), "not the tree's code"
    name = f"receiver_instructions_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_conninfo(args.server, dbname=name)
        migrate(url)
        app = create_app(Config(database_url=url, basic_auth=(("u", "p"),), log_level="WARNING"))
        client = app.test_client()
        headers = {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}
        for body in bodies.read_bytes().split(b"\n")[: WARMUP + batches]:
            answer = client.post("/webhook", data=body, headers=headers)
            assert answer.status_code == 200 and b'"stored":100' in answer.get_data()
        db.close_pool(app)
    finally:
        with psycopg.connect(args.server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
