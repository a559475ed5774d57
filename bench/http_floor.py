"""The HTTP layer's own cost: `python bench/http_floor.py [--peer]`.

The same gunicorn (receiver/web/gunicorn_conf.py: gthread, 2 workers x 4 threads), the same wrk
load (bench/webhook.lua: batches of 100, Basic Auth header, 8 connections), but a Flask app
that only reads the body and answers a fixed 200, and the receiver itself, alternately: the
worker CPU per request of each, so the note can say how much of a batch's CPU is gunicorn +
Flask + werkzeug before the receiver does anything.

With --peer, the same for the FastAPI peer of `make bench` (bench/peer_fastapi.py): its own
HTTP layer (uvicorn + FastAPI, bench/peer_floor.py) and itself, so that what each stack spends
on HTTP and what it spends on the batch can be compared (needs the bench-peer extra).
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


class PeerFloor(run.Receiver):
    """uvicorn as the peer runs (bench/run.py), serving bench/peer_floor.py."""

    def __init__(self, url, workers, threads):
        super().__init__(url, workers, threads, code=run.PEER)

    def peer_command(self, workers):
        command = super().peer_command(workers)
        return [*command[:-1], "peer_floor:app"]


class Peer(run.Receiver):
    """The peer itself, as bench/run.py --peer runs it."""

    def __init__(self, url, workers, threads):
        super().__init__(url, workers, threads, code=run.PEER)


# What --peer measures besides the receiver and its floor: {kind: server class}.
SERVERS = {"floor": Floor, "receiver": run.Receiver}
PEER_SERVERS = {"peer floor": PeerFloor, "peer": Peer}


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
    parser.add_argument("--peer", action="store_true", help="also the FastAPI peer and its floor")
    args = parser.parse_args()
    servers = {**SERVERS, **(PEER_SERVERS if args.peer else {})}
    server_url = run.pick_server()
    database = "receiver_floor_" + run.uuid.uuid4().hex[:8]
    run.admin(server_url, f'CREATE DATABASE "{database}"')
    url = run.make_conninfo(server_url, dbname=database)
    figures = {kind: [] for kind in servers}
    try:
        run.migrate(url)
        for r in range(args.rounds):
            # Alternately forwards and backwards, so that a drift of the machine is shared.
            order = list(servers) if r % 2 == 0 else list(reversed(servers))
            for kind in order:
                # Batch numbers no other run used: the receiver and the peer store into one
                # database, and a batch stored before would be a re-delivery.
                first_batch = (r * len(servers) + list(servers).index(kind)) * 10_000_000
                with servers[kind](url, 2, 4) as server:
                    figures[kind].append(cpu_per_request(server, args.seconds, first_batch))
    finally:
        run.admin(server_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    cpu = {kind: sum(c for c, _ in runs) / len(runs) for kind, runs in figures.items()}
    for kind, runs in figures.items():
        rate = sum(b for _, b in runs) / len(runs)
        print(f"{kind:<10} worker CPU {cpu[kind]:5.2f} ms a request, {rate:8.1f} requests/s", runs)
    print(f"the HTTP layer is {cpu['floor'] / cpu['receiver']:.0%} of the receiver's worker CPU")
    if args.peer:
        beyond = (cpu["receiver"] - cpu["floor"]) / (cpu["peer"] - cpu["peer floor"])
        print(
            f"the peer's HTTP layer is {cpu['peer floor'] / cpu['peer']:.0%} of its worker CPU;"
            f" receiver / peer: HTTP layer {cpu['floor'] / cpu['peer floor']:.2f}x,"
            f" beyond it {beyond:.2f}x, whole {cpu['receiver'] / cpu['peer']:.2f}x"
        )


if __name__ == "__main__":
    main()
