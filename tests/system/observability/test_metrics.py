"""Prometheus metrics under gunicorn: exact sums over workers, through kills and restarts."""

import os
import re
import signal
import time

import pytest
import requests

from support import Gunicorn, body, event, wait_until

pytestmark = pytest.mark.slow


def scrape(server):
    """{(name, frozenset(labels)): value} from /metrics."""
    text = requests.get(server.url + "/metrics", timeout=5).text
    samples = {}
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if match and not line.startswith("#"):
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            samples[(match.group(1), labels)] = float(match.group(3))
    return samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def send_round(server, round_):
    """20 batches: 2 new opens each, one of them again (a duplicate), and one invalid event."""
    for i in range(20):
        opens = [event(id=f"r{round_}-{i}-{n}") for n in range(2)]
        answer = server.post(body(*opens, opens[0], {"type": "open"}))
        assert answer.json() == {"received": 4, "stored": 2, "duplicates": 1, "quarantined": 1}


def assert_totals(server, rounds):
    samples = scrape(server)
    assert value(samples, "receiver_requests_total", outcome="ok", status="200") == 20 * rounds
    assert value(samples, "receiver_events_total", type="open", outcome="stored") == 40 * rounds
    assert value(samples, "receiver_events_total", type="open", outcome="duplicate") == 20 * rounds
    assert (
        value(samples, "receiver_events_total", type="open", outcome="quarantined") == 20 * rounds
    )
    assert value(samples, "receiver_batch_size_events_count") == 20 * rounds
    assert value(samples, "receiver_batch_size_events_sum") == 80 * rounds
    assert value(samples, "receiver_event_lag_seconds_count") == 40 * rounds


def owners_of_files(directory):
    """The pids that metric files in `directory` belong to (archives belong to none)."""
    suffixes = (name.rsplit("_", 1)[1].removesuffix(".db") for name in os.listdir(directory))
    return {int(suffix) for suffix in suffixes if suffix.isdigit()}


def three_workers(server, old=()):
    pids = wait_until(
        lambda: (p := server.worker_pids()) and len(p) == 3 and not set(p) & set(old) and p,
        timeout=30,
    )
    wait_until(lambda: requests.get(server.url + "/healthz", timeout=2).ok)
    return pids


def test_counts_add_up_over_three_workers_through_kills_and_restarts(database_url, tmp_path):
    metrics_dir = tmp_path / "metrics"
    server = Gunicorn(
        {"DATABASE_URL": database_url, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}, workers=3
    )
    try:
        pids = three_workers(server)
        send_round(server, 1)
        assert_totals(server, 1)

        os.kill(pids[0], signal.SIGKILL)  # dies mid-life; its counts must stay in the totals
        pids = three_workers(server, old=[pids[0]])
        os.kill(pids[1], signal.SIGTERM)  # a graceful exit, same rule
        pids = three_workers(server, old=[pids[1]])
        send_round(server, 2)
        assert_totals(server, 2)

        for round_ in range(3, 6):  # reloads replace every worker each time
            server.process.send_signal(signal.SIGHUP)
            pids = three_workers(server, old=pids)
            send_round(server, round_)
            assert_totals(server, round_)
            # The live workers' files (counter, histogram, and the gauges' modes: livesum, max,
            # livemostrecent) and one archive per type: no pile-up per restart.
            assert owners_of_files(metrics_dir) <= set(pids)
            assert len(os.listdir(metrics_dir)) <= 5 * len(pids) + 3
    finally:
        server.stop()


def test_pool_gauges_and_last_stored_time_are_exported(database_url, tmp_path):
    env = {"DATABASE_URL": database_url, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "m")}
    server = Gunicorn(env, workers=2)
    try:
        before = time.time()
        server.post(body(event(id="gauge")))
        samples = scrape(server)
        assert value(samples, "receiver_last_stored_event_timestamp_seconds") >= before - 1
        idle = value(samples, "receiver_pool_connections", state="idle")
        in_use = value(samples, "receiver_pool_connections", state="in_use")
        assert idle + in_use >= 1  # at least the connection that stored the event
    finally:
        server.stop()
