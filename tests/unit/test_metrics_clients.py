"""The per-client series' cap: listed clients (RECEIVER_METRICS_CLIENT_IDS) always get theirs,
whatever flood of other ids came first; the others share MAX_CLIENT_SERIES places."""

import logging

import pytest
from prometheus_client import REGISTRY

from receiver.observability import metrics


def client_gauge(client, kind="sent"):
    return REGISTRY.get_sample_value(
        "receiver_client_last_stored_timestamp_seconds", {"client_id": str(client), "kind": kind}
    )


@pytest.fixture
def fresh_series(monkeypatch):
    """No client has series yet in this process, and none is listed."""
    monkeypatch.setattr(metrics, "_clients_seen", set())
    monkeypatch.setattr(metrics, "_client_gauges", {})
    monkeypatch.setattr(metrics, "_listed_clients", frozenset())
    monkeypatch.setattr(metrics, "_cap_reported", False)
    monkeypatch.setattr(metrics.time, "time", lambda: 5000.0)


def flood(first, count):
    """`count` made-up client ids from `first` on, each with a `sent` event (`receiver
    simulate` runs with a new id each)."""
    return {(first + n, "sent") for n in range(count)}


def test_listed_clients_get_their_series_after_the_cap_is_full(fresh_series, caplog):
    metrics.set_listed_clients({810_001, 810_002})
    metrics.observe_stored_clients(flood(910_000, metrics.MAX_CLIENT_SERIES))
    with caplog.at_level(logging.WARNING, logger="receiver.metrics"):
        metrics.observe_stored_clients({(810_001, "sent"), (810_002, "open"), (810_003, "sent")})
    assert client_gauge(810_001) == 5000.0
    assert client_gauge(810_002, "other") == 5000.0
    assert client_gauge(810_003) is None  # unlisted, and no place left
    # The loss is said once, with the setting that prevents it.
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "810003" in warning and "RECEIVER_METRICS_CLIENT_IDS" in warning
    metrics.observe_stored_clients({(810_004, "sent")})
    assert len(caplog.records) == 1


def test_listed_clients_take_none_of_the_places_of_the_others(fresh_series):
    listed = set(range(820_000, 820_010))
    metrics.set_listed_clients(listed)
    metrics.observe_stored_clients({(client, "sent") for client in listed})
    metrics.observe_stored_clients(flood(920_000, metrics.MAX_CLIENT_SERIES + 3))
    unlisted = [n for n in range(920_000, 920_000 + metrics.MAX_CLIENT_SERIES + 3)]
    assert sum(client_gauge(n) is not None for n in unlisted) == metrics.MAX_CLIENT_SERIES
    assert all(client_gauge(n) == 5000.0 for n in listed)


def test_a_client_with_series_keeps_them_when_the_cap_fills_later(fresh_series, monkeypatch):
    metrics.observe_stored_clients({(830_000, "sent")})
    metrics.observe_stored_clients(flood(930_000, metrics.MAX_CLIENT_SERIES + 5))
    monkeypatch.setattr(metrics.time, "time", lambda: 6000.0)
    metrics.observe_stored_clients({(830_000, "sent"), (830_000, "click")})
    assert (client_gauge(830_000), client_gauge(830_000, "other")) == (6000.0, 6000.0)


def test_the_app_lists_the_configured_clients(fresh_series):
    from receiver import create_app
    from receiver.config import load_config

    config = load_config({
        "DATABASE_URL": "postgresql://user@db.example/receiver",
        "RECEIVER_BASIC_AUTH": "campaign:secret",
        "RECEIVER_METRICS_CLIENT_IDS": "840001 840002",
    })  # fmt: skip
    create_app(config)  # its pools stay closed: no database is reached
    metrics.observe_stored_clients(flood(940_000, metrics.MAX_CLIENT_SERIES))
    metrics.observe_stored_clients({(840_002, "sent")})
    assert client_gauge(840_002) == 5000.0
