"""The HTTP layer's own cost: `python bench/http_floor.py`.

The same gunicorn (receiver/web/gunicorn_conf.py: gthread, 2 workers x 4 threads), the same wrk
load (bench/webhook.lua: batches of 100, Basic Auth header, 8 connections), but a Flask app
that only reads the body and answers a fixed 200, and the receiver itself, alternately: the
worker CPU per request of each, so the note can say how much of a batch's CPU is gunicorn +
Flask + werkzeug before the receiver does anything.
"""

import argparse
import sys
from pathlib import Path

from flask import Flask, request

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # bench/run.py: the database, the gunicorn wrapper, wrk


def create_floor_app():
    """POST /webhook reads the whole body and answers what an all-stored batch answers."""
    app = Flask("floor")
    answer = b'{"duplicates":0,"quarantined":0,"received":100,"stored":100}\n'

    @app.post("/webhook")
    def webhook():
        request.get_data(cache=False)
        return app.response_class(answer, 200, mimetype="application/json")

    @app.get("/readyz")
    def ready():
        return {"status": "ready"}

    return app


class Floor(run.Receiver):
    """gunicorn as receiver/web/gunicorn_conf.py sets it up, without its hooks (they open the
    receiver's pool): gthread, 2 workers x 4 threads, the same keep-alive, no access log."""

    def receiver_command(self):
        return [
            sys.executable,
            "-m",
            "gunicorn",
            *("--worker-class", "gthread", "--workers", "2", "--threads", "4"),
            *("--keep-alive", "75", "--bind", f"127.0.0.1:{self.port}"),
            *("--chdir", str(run.ROOT / "bench")),
            "http_floor:create_floor_app()",
        ]


def cpu_per_request(server, seconds, first_batch):
    run.wrk(server, "floor", 3, first_batch=first_batch)  # warm up
    before = server.worker_cpu_seconds()
    phase = run.wrk(server, "floor", seconds, first_batch=first_batch + 1_000_000)
    cpu_ms = (server.worker_cpu_seconds() - before) * 1000 / max(phase["started"], 1)
    return cpu_ms, phase["batches_per_second"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    server_url = run.pick_server()
    database = "receiver_floor_" + run.uuid.uuid4().hex[:8]
    run.admin(server_url, f'CREATE DATABASE "{database}"')
    url = run.make_conninfo(server_url, dbname=database)
    figures = {"floor": [], "receiver": []}
    try:
        run.migrate(url)
        for r in range(args.rounds):
            order = ("floor", "receiver") if r % 2 == 0 else ("receiver", "floor")
            for kind in order:
                server_class = Floor if kind == "floor" else run.Receiver
                with server_class(url, 2, 4) as server:
                    figures[kind].append(cpu_per_request(server, args.seconds, r * 10_000_000))
    finally:
        run.admin(server_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    for kind, runs in figures.items():
        cpu = sum(c for c, _ in runs) / len(runs)
        rate = sum(b for _, b in runs) / len(runs)
        print(f"{kind:<9} worker CPU {cpu:5.2f} ms a request, {rate:8.1f} requests/s  {runs}")
    floor, whole = (sum(c for c, _ in figures[k]) / len(figures[k]) for k in figures)
    print(f"the HTTP layer is {floor / whole:.0%} of the receiver's worker CPU per batch")


if __name__ == "__main__":
    main()
