"""receiver.observability.metrics: observe_buckets (the same histogram as one observe() per
amount) and the per-client gauges."""

import bisect
import collections
import math

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram

from receiver.observability import metrics

BUCKETS = (1, 5, 10, 30, 60)


def samples(histogram):
    return {(s.name, s.labels.get("le")): s.value for s in histogram.collect()[0].samples}


@pytest.mark.parametrize(
    "amounts",
    [[], [0.0], [1.0, 1.0000001, 5.0, 4.99, 60.0, 61.0, 1e9], [0.5] * 100, list(range(100))],
    ids=["none", "zero", "on-and-around-bounds", "one-bucket", "spread"],
)
def test_observe_buckets_gives_what_observe_gives(amounts):
    one, many = (
        Histogram("lag", "lag", buckets=BUCKETS, registry=CollectorRegistry()) for _ in range(2)
    )
    for amount in amounts:
        one.observe(amount)
    # The counts as the batch statement returns them: bucket = bisect_left in the bounds.
    counts = collections.Counter(bisect.bisect_left([*BUCKETS, math.inf], a) for a in amounts)
    metrics.observe_buckets(many, counts, sum(amounts))
    assert samples(many) == pytest.approx(samples(one))
    assert samples(many)[("lag_count", None)] == len(amounts)


def test_observe_buckets_refuses_a_labelled_parent_like_observe():
    labelled = Histogram("by", "by", ["x"], buckets=BUCKETS, registry=CollectorRegistry())
    with pytest.raises(ValueError):
        labelled.observe(1)
    with pytest.raises(ValueError):
        metrics.observe_buckets(labelled, {0: 1}, 1)


def client_gauge(client, kind):
    return REGISTRY.get_sample_value(
        "receiver_client_last_stored_timestamp_seconds", {"client_id": str(client), "kind": kind}
    )


def test_stored_clients_set_their_gauge_by_kind_each_batch(monkeypatch):
    monkeypatch.setattr(metrics, "_clients_seen", set())
    monkeypatch.setattr(metrics, "_client_gauges", {})
    monkeypatch.setattr(metrics.time, "time", lambda: 1000.0)
    metrics.observe_stored_clients({(71, "sent"), (71, "open"), (71, "click"), (72, "bounce")})
    assert (client_gauge(71, "sent"), client_gauge(71, "other")) == (1000.0, 1000.0)
    assert (client_gauge(72, "sent"), client_gauge(72, "other")) == (None, 1000.0)
    monkeypatch.setattr(metrics.time, "time", lambda: 2000.0)
    metrics.observe_stored_clients({(71, "sent")})  # a later batch moves the gauge it touches
    assert (client_gauge(71, "sent"), client_gauge(71, "other")) == (2000.0, 1000.0)


def test_made_up_client_ids_stop_at_the_series_cap(monkeypatch):
    monkeypatch.setattr(metrics, "_clients_seen", set())
    monkeypatch.setattr(metrics, "_client_gauges", {})
    flood = {(900_000 + n, "open") for n in range(metrics.MAX_CLIENT_SERIES + 5)}
    metrics.observe_stored_clients(flood)
    assert len(metrics._clients_seen) == metrics.MAX_CLIENT_SERIES
    kept = sum(client_gauge(client, "other") is not None for client, _ in flood)
    assert kept == metrics.MAX_CLIENT_SERIES


class Pool:
    """A pool's get_stats(), as psycopg_pool gives it, set by the test."""

    def __init__(self):
        self.stats = {}

    def get_stats(self):
        return dict(self.stats)


def test_the_pool_gauges_follow_the_pool_and_are_written_only_when_they_change(monkeypatch):
    monkeypatch.setattr(metrics, "_pool_written", {})
    written = []
    real_labels = metrics.POOL_CONNECTIONS.labels

    def labels(state):
        written.append(state)
        return real_labels(state)

    monkeypatch.setattr(metrics.POOL_CONNECTIONS, "labels", labels)
    pool = Pool()

    def gauges():
        return {state: real_labels(state)._value.get() for state in metrics._POOL_STATES}

    pool.stats = {"pool_size": 4, "pool_available": 3}
    metrics.observe_pool(pool)
    assert gauges() == {"in_use": 1, "idle": 3, "waiting": 0}
    assert sorted(written) == ["idle", "in_use", "waiting"]

    written.clear()
    metrics.observe_pool(pool)  # nothing changed: nothing written
    assert written == []

    pool.stats = {"pool_size": 4, "pool_available": 0, "requests_waiting": 2}
    metrics.observe_pool(pool)
    assert gauges() == {"in_use": 4, "idle": 0, "waiting": 2}
    assert sorted(written) == ["idle", "in_use", "waiting"]
