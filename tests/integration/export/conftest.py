"""Fixtures of the export tests: a connection, and a month of events stored through the webhook
(the helpers are in support.export)."""

from datetime import UTC, datetime

import psycopg
import pytest

from receiver.storage import partitions

from support.export import NOVEMBER, OCTOBER, deliver, month_event


@pytest.fixture
def conn(database_url):
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def october(client, conn):
    """23 events in October 2025 (a partition of its own), 4 in November (in events_default)
    and one in September: 28 in all."""
    partitions.create_month(conn, OCTOBER)
    deliver(client, [month_event(OCTOBER, n) for n in range(23)])
    deliver(client, [month_event(NOVEMBER, n) for n in range(4)])
    deliver(client, [month_event(datetime(2025, 9, 1, tzinfo=UTC), 0)])
    return 23
