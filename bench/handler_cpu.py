"""Worker CPU per batch of the webhook handler alone, in-process: `python bench/handler_cpu.py`.

Posts batches shaped like bench/webhook.lua's (100 events, half without an id) through Flask's
test client to a fresh database, fresh and then the same bodies again (re-deliveries), and
prints process CPU per batch (time.process_time, so the database's own CPU is not counted).
`--profile` prints the cProfile top of the fresh phase. Steadier than wrk on a shared machine,
but without gunicorn's share (see bench/run.py for the whole stack).
"""

import argparse
import base64
import cProfile
import json
import pstats
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from psycopg.conninfo import make_conninfo  # noqa: E402

from receiver import create_app  # noqa: E402
from receiver.config import Config  # noqa: E402
from receiver.storage import db  # noqa: E402
from receiver.storage.migrate import migrate  # noqa: E402

TYPES = ("sent", "open", "sent", "click", "sent", "open", "bounce", "unsubscribe")
BASE_MS = int(time.time() * 1000) - 3_600_000


def batch(run, b):
    events = []
    for k in range(b * 100 + 1, b * 100 + 101):
        event = {"type": TYPES[k % len(TYPES)], "recipientId": f"user{k % 100000}@example.com",
                 "userListId": 10180860004, "clientId": 10180860001, "created": BASE_MS + k,
                 "subscriptionId": 10227900201, "mailId": f"{run}-{k}", "mailingId": 10230355206,
                 "mediaTypesToAddresses": {"EMAIL": f"user{k % 100000}@example.com"},
                 "device": "desktop", "operatingSystem": "Windows 10", "browser": "Firefox 64.1",
                 "remoteAddress": "0.0.0.0"}  # fmt: skip
        if k % 2 == 0:
            event = {"id": f"{run}-e{k}", **event}
        events.append(event)
    return json.dumps(events, separators=(",", ":")).encode()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("sort", nargs="?", default="tottime", choices=("tottime", "cumulative"))
    parser.add_argument(
        "--server", help="PostgreSQL URL (default: BENCH_DATABASE_URL, else an embedded one)"
    )
    args = parser.parse_args()
    if not args.server:  # bench/run.py's choice, never a server merely found listening
        sys.path.insert(0, str(ROOT / "bench"))
        import run

        args.server = run.pick_server()
    name = f"receiver_cpu_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_conninfo(args.server, dbname=name)
    try:
        migrate(url)
        app = create_app(Config(database_url=url, basic_auth=(("u", "p"),), log_level="WARNING"))
        client = app.test_client()
        headers = {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}
        run = uuid.uuid4().hex[:8]
        bodies = [batch(run, b) for b in range(args.batches)]
        for body in bodies[:20]:  # warm up (connections, imports, caches)
            assert client.post("/webhook", data=body, headers=headers).status_code == 200
        figures = {}
        for phase, todo in (("fresh", bodies[20:]), ("re-delivered", bodies[20:])):
            profiler = (
                cProfile.Profile(time.process_time) if args.profile and phase == "fresh" else None
            )
            started = time.process_time()
            if profiler:
                profiler.enable()
            for body in todo:
                answer = client.post("/webhook", data=body, headers=headers)
                assert answer.status_code == 200, answer.get_data()
            if profiler:
                profiler.disable()
            figures[phase] = (time.process_time() - started) * 1000 / len(todo)
            if profiler:
                pstats.Stats(profiler).sort_stats(args.sort).print_stats(40)
        for phase, ms in figures.items():
            print(f"{phase}: {ms:.2f} ms CPU per batch (in-process, test client)")
        db.close_pool(app)
    finally:
        with psycopg.connect(args.server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
