"""The batch transaction (receiver.storage.events): exactly once under concurrency, quarantine
kept once."""

import bisect
import random
import threading

import psycopg_pool
import pytest

from receiver.campaign import EVENT_TYPES, LISTED_AS, STATUS_TYPES
from receiver.ingest import schemas
from receiver.observability import metrics
from receiver.storage import events
from receiver.storage.quarantine import Rejected

from support import event


@pytest.fixture
def pool(database_url):
    with psycopg_pool.ConnectionPool(database_url, min_size=1, max_size=16, open=True) as pool:
        yield pool


def validated(*items):
    return [schemas.validate_event(item) for item in items]


def run_concurrently(count, work):
    """Start `count` threads that begin `work(i)` at the same instant; return the results."""
    barrier = threading.Barrier(count)
    results, errors = [None] * count, []

    def run(i):
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as error:  # collected and re-raised below, so none is hidden
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def test_same_batch_from_eight_writers_is_stored_once(pool, query):
    # Half the events carry an id, half are keyed by their content (like the documented opens).
    items = [event(id=f"ev-{i}") if i % 2 else event(mailingId=i) for i in range(100)]
    results = run_concurrently(8, lambda _: events.store_batch(pool, validated(*items), []))
    assert sum(r.stored for r in results) == 100
    assert query("SELECT count(*), count(DISTINCT event_key) FROM events") == [(100, 100)]


def test_overlapping_batches_in_different_orders_do_not_deadlock(pool, query):
    items = [event(id=f"shared-{i}") for i in range(200)]

    def shuffled_batch(seed):
        batch = random.Random(seed).sample(items, 100)
        return events.store_batch(pool, validated(*batch), [])

    results = run_concurrently(8, shuffled_batch)
    stored = sum(r.stored for r in results)
    assert stored == query("SELECT count(*) FROM events")[0][0]
    assert query("SELECT count(*) = count(DISTINCT event_key) FROM events") == [(True,)]


def test_the_same_rejected_content_from_concurrent_retries_is_kept_once(pool, query):
    rejected = [Rejected("event", "bad", b'{"type": 1}')]
    run_concurrently(8, lambda _: events.store_batch(pool, [], rejected))
    assert query("SELECT times_received FROM quarantine") == [(8,)]


def test_two_identical_rejections_in_one_batch_are_one_row(pool, query):
    twice = [Rejected("event", "bad", b"7"), Rejected("event", "bad", b"7")]
    result = events.store_batch(pool, [], twice)
    assert len(result.rejected) == 2
    assert query("SELECT content, times_received FROM quarantine") == [(b"7", 1)]


def test_the_statement_buckets_each_lag_as_the_histogram_would(query):
    # PostgreSQL counts the batch's lags into the histogram's buckets (events.LAG_BUCKET): the
    # index must be bisect_left's, on every bound too (Prometheus buckets are `le`).
    bounds = metrics.EVENT_LAG_SECONDS._upper_bounds
    around = [b + d for b in metrics.LAG_BUCKETS for d in (-1e-6, 0.0, 1e-6)]
    lags = [-3.5, -1e-9, 0.0, 0.0005, *around, 1e7]
    sql = " ".join(["SELECT", events.LAG_BUCKET, "FROM unnest(%s::float8[]) AS s(lag)"])
    buckets = [bucket for (bucket,) in query(sql, (lags,))]
    assert buckets == [bisect.bisect_left(bounds, max(lag, 0.0)) for lag in lags]


def test_a_batch_reports_its_stored_events_by_type_client_and_lag_bucket(pool):
    items = [event(type="open", id="a"), event(type="open", id="b"), event(type="sent", id="c")]
    result = events.store_batch(pool, validated(*items), [])
    assert result.stored == 3
    assert result.stored_by_type() == {"open": 2, "sent": 1}
    counts, total = result.lag_buckets()
    assert sum(counts.values()) == 3 and total >= 0
    again = events.store_batch(pool, validated(*items), [])
    assert (again.stored, again.lag_buckets()) == (0, ({}, 0.0))


def test_the_status_types_are_those_event_status_gives_a_status(query):
    """The batch statement only asks event_status() (migrations/004) about STATUS_TYPES: every
    other type, documented or not, must be one it gives no status to."""
    kinds = sorted({*EVENT_TYPES, *LISTED_AS.values(), "newtype"})
    # A hard bounce over the threshold: the most any type's event can say.
    rows = query(
        "SELECT kind FROM unnest(%s::text[]) kind "
        "WHERE event_status(kind, 'hardbounce', true) IS NOT NULL ORDER BY kind",
        (kinds,),
    )

    assert [kind for (kind,) in rows] == sorted(STATUS_TYPES)
