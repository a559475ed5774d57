"""The batch transaction (receiver.storage.events): exactly once under concurrency, quarantine
kept once."""

import bisect
import random
import threading

import orjson
import psycopg_pool
import pytest

from receiver.campaign import EVENT_TYPES, LISTED_AS, STATUS_TYPES
from receiver.ingest import jsoncodec, schemas
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


# Values validation admits in several spellings, each of which PostgreSQL must read from the
# list as received exactly as validation read it (receiver.storage.events.LISTED).
SPELLINGS = [
    event(id=7, clientId="0012", created="1617108575391", mailingId=None, subscriptionId="5"),
    event(id="sha256:forged", userListId=9, recipientId="zoë@example.org"),
    event(id="", created=-1000, mediaTypesToAddresses={"EMAIL": "a@example.org"}, extra=[1, 2.5]),
    {**event(), "type": "bounce", "category": "softbounce", "thresholdExceeded": True},
    {**event(), "type": "click", "link": "https://example.org/ü", "device": "mobile"},
    {**event(id="id:escaped"), "type": "brandnewtype", "big": 12345678901234},
]
COLUMNS = ", ".join(name for name, _ in events.EVENT_COLUMNS)


def test_the_list_as_received_stores_the_same_rows_as_the_written_document(pool, query):
    body = orjson.dumps(SPELLINGS).replace(b'"clientId":"0012"', b'"clientId":1,"clientId":"0012"')
    parsed = jsoncodec.parse_batch(body)
    assert parsed.listed == body  # a duplicate key: the last one counts, for both parsers
    from_list = schemas.validate_batch(parsed.items, parsed.listed)
    written = schemas.validate_batch(parsed.items)
    assert from_list.keys is not None and written.keys is None
    rows = []
    for batch in (events.Listed(from_list.document, from_list.keys), written.document):
        stored = events.store_batch(pool, from_list.events, [], document=batch)
        assert stored.stored == len(SPELLINGS)
        rows.append(query(f"SELECT {COLUMNS} FROM events ORDER BY event_key"))  # noqa: S608
        query("DELETE FROM events RETURNING event_key")
    assert rows[0] == rows[1]
    by_id = {row[1]: row for row in rows[0]}  # event_id: the row
    assert by_id["7"][2] == 12 and by_id["sha256:forged"][0] == "id:sha256:forged"


def test_a_listed_batch_postgresql_refuses_is_stored_event_by_event(pool, query):
    poison = {**event(id="poison"), "type": "bounce", "thresholdExceeded": "maybe"}
    items = [event(id="fine"), poison]
    parsed = jsoncodec.parse_batch(orjson.dumps(items))
    batch = schemas.validate_batch(parsed.items, parsed.listed)
    document = events.Listed(batch.document, batch.keys)
    result = events.store_batch(pool, batch.events, [], document=document)
    assert result.stored == 1
    assert [item.reason.split(":")[0] for item in result.rejected] == ["refused by PostgreSQL"]
    assert query("SELECT event_id FROM events") == [("fine",)]
