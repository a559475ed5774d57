"""The replication slot gauge (receiver_replication_slot_retained_bytes): the WAL each slot of
the receiver's database keeps, sampled by the web worker's background thread."""

import logging
import uuid

import psycopg
import pytest
from prometheus_client import REGISTRY

from receiver.maintenance import background
from receiver.storage import db

from support import wait_until

GAUGE = "receiver_replication_slot_retained_bytes"


def retained(slot):
    return REGISTRY.get_sample_value(GAUGE, {"slot": slot})


@pytest.fixture
def slot(database_url):
    """A physical slot reserving WAL from now on, held by a session of its own (temporary: it
    goes with the session, so a crashed test leaves no slot keeping WAL on the server); its
    name and a function that writes some WAL."""
    name = f"receiver_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        allowed = conn.execute(
            "SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user"
        ).fetchone()[0]
        if not allowed:
            pytest.skip("the test database's role may not create replication slots")
        conn.execute("SELECT pg_create_physical_replication_slot(%s, true, true)", (name,))

        def write_wal():
            conn.execute("CREATE TABLE IF NOT EXISTS wal_filler (n int)")
            conn.execute("INSERT INTO wal_filler SELECT generate_series(1, 2000)")

        yield name, write_wal, conn


def connect_to(url):
    return lambda: db.connect(url, "receiver maintenance test")


def test_a_sample_sets_the_wal_a_slot_keeps_and_zero_once_it_is_gone(database_url, slot):
    name, write_wal, holder = slot
    write_wal()
    assert background.sample_slots_quietly(connect_to(database_url)) is False
    first = retained(name)
    assert first > 0
    write_wal()
    background.sample_slots_quietly(connect_to(database_url))
    assert retained(name) > first  # the slot has not moved: it keeps ever more
    holder.execute("SELECT pg_drop_replication_slot(%s)", (name,))
    background.sample_slots_quietly(connect_to(database_url))
    assert retained(name) == 0


def test_the_background_thread_samples_the_slots(config, database_url, slot):
    name, write_wal, _ = slot
    write_wal()
    thread = background.start(config, interval=3600, slots_interval=0.1)
    try:
        wait_until(lambda: (retained(name) or 0) > 0, timeout=20)
    finally:
        thread.stop.set()
        thread.join(timeout=5)
        thread.slots.join(timeout=5)
    assert not thread.slots.is_alive()


def test_an_unreachable_database_is_logged_once_per_outage(caplog, monkeypatch):
    observed = []
    monkeypatch.setattr(background.metrics, "observe_replication_slots", observed.append)
    unreachable = connect_to("postgresql://nobody@127.0.0.1:1/none")
    with caplog.at_level(logging.WARNING, logger="receiver.maintenance"):
        failing = background.sample_slots_quietly(unreachable)
        assert failing is True
        assert background.sample_slots_quietly(unreachable, failing) is True
    assert caplog.text.count("could not read the replication slots") == 1
    assert observed == []  # the gauge keeps its last sample
