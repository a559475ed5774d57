"""POST /webhook, row by row of the answers table in docs/answers.md (against real PostgreSQL)."""

import json
import random
import string
import time

import pytest
from prometheus_client import REGISTRY

from receiver.ingest import jsoncodec, schemas
from receiver.storage import db
from receiver.web import worker

from support import basic, body, event, post, sample, table_locked


def count(query, table="events"):
    return query(f"SELECT count(*) FROM {table}")[0][0]  # noqa: S608 (fixed table names)


def test_documented_open_batch_stores_the_two_identical_opens_once(client, query):
    response = post(client, sample("open-batch.json"))
    assert response.status_code == 200
    assert response.json == {"received": 2, "stored": 1, "duplicates": 1, "quarantined": 0}
    assert count(query) == 1


def test_documented_bounce_posted_twice_is_stored_once(client, query):
    first = post(client, sample("bounce-event.json"))
    second = post(client, sample("bounce-event.json"))
    assert first.json == {"received": 1, "stored": 1, "duplicates": 0, "quarantined": 0}
    assert second.status_code == 200
    assert second.json == {"received": 1, "stored": 0, "duplicates": 1, "quarantined": 0}
    assert query("SELECT event_key, type, category FROM events") == [
        ("0a673102-178d27b2c8c-178d2cac0e4-c7420699923845e", "bounce", "softbounce")
    ]


def test_any_content_type_or_none_is_accepted(client, query):
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded"):
        headers = basic() | ({"Content-Type": content_type} if content_type else {})
        data = body(event(id=f"ct-{content_type}"))
        assert post(client, data, headers).status_code == 200
    assert count(query) == 3


def test_empty_list_is_acknowledged(client, query):
    response = post(client, b"[]")
    assert response.json == {"received": 0, "stored": 0, "duplicates": 0, "quarantined": 0}


def test_a_batch_of_only_known_events_stores_nothing_new(client, query):
    batch = body(*[event(id=f"e{i}") for i in range(100)])
    assert post(client, batch).json["stored"] == 100
    again = post(client, batch)
    assert again.status_code == 200
    assert again.json == {"received": 100, "stored": 0, "duplicates": 100, "quarantined": 0}
    assert count(query) == 100


def test_body_over_the_size_limit_is_413_and_stores_nothing(make_client, query):
    client = make_client(max_body_bytes=2048)
    batch = body(*[event(id=f"big{i}", filler="x" * 100) for i in range(30)])
    response = post(client, batch)
    assert response.status_code == 413
    assert "error" in response.json
    assert count(query) == 0
    assert count(query, "quarantine") == 0


def test_more_events_than_max_batch_is_413_and_stores_nothing(client, query):
    response = post(client, body(*[event(id=str(i)) for i in range(101)]))
    assert response.status_code == 413
    assert count(query) == 0


def test_non_json_body_is_400_and_kept_in_quarantine_once(client, query):
    for _ in range(3):  # the sender retries; the quarantine keeps one copy and counts
        response = post(client, b"<xml>not json</xml>")
        assert response.status_code == 400
        assert "not valid JSON" in response.json["error"]
    assert query("SELECT kind, content, times_received FROM quarantine") == [
        ("body", b"<xml>not json</xml>", 3)
    ]
    assert count(query) == 0


@pytest.mark.parametrize("document", [b'"a string"', b"42", b"null", b"true"])
def test_json_that_is_not_a_list_or_object_is_400_and_quarantined(client, query, document):
    response = post(client, document)
    assert response.status_code == 400
    assert query("SELECT kind, content FROM quarantine") == [("body", document)]


def test_bare_object_is_a_batch_of_one(client, query):
    response = post(client, json.dumps(event(id="solo")))
    assert response.json == {"received": 1, "stored": 1, "duplicates": 0, "quarantined": 0}


def test_invalid_events_are_quarantined_and_the_valid_ones_stored(client, query):
    batch = body(event(id="good-1"), {"type": "open"}, 7, event(id="good-2"))
    response = post(client, batch)
    assert response.status_code == 200
    assert response.json == {"received": 4, "stored": 2, "duplicates": 0, "quarantined": 2}
    assert sorted(r[0] for r in query("SELECT event_key FROM events")) == ["good-1", "good-2"]
    reasons = sorted(r[0] for r in query("SELECT reason FROM quarantine"))
    assert reasons[0] == "event is a JSON number, not an object"
    assert "clientId" in reasons[1] and "created" in reasons[1]


def test_value_postgresql_refuses_is_quarantined_without_holding_back_the_batch(client, query):
    # Passes validation, but no btree index entry can hold 20 kB of incompressible text.
    huge = "".join(f"{i:x}" for i in range(5000))
    batch = body(event(id="ok-1"), event(id="poison", recipientId=huge), event(id="ok-2"))
    response = post(client, batch)
    assert response.status_code == 200
    assert response.json == {"received": 3, "stored": 2, "duplicates": 0, "quarantined": 1}
    [(reason,)] = query("SELECT reason FROM quarantine")
    assert reason.startswith("refused by PostgreSQL")


def test_value_postgresql_refuses_in_a_batch_stored_as_received_is_quarantined_alone(client, query):
    # The same refusal on the usual path (the list as received, events.LISTED): letters only,
    # so no run of digits sends the body to the standard library's parser.
    rng = random.Random(25)
    huge = "".join(rng.choice(string.ascii_letters) for _ in range(20_000))
    batch = body(event(id="ok-1"), event(id="poison", recipientId=huge), event(id="ok-2"))
    assert jsoncodec.parse_batch(batch).listed == batch
    response = post(client, batch)
    assert response.status_code == 200
    assert response.json == {"received": 3, "stored": 2, "duplicates": 0, "quarantined": 1}
    assert sorted(r[0] for r in query("SELECT event_key FROM events")) == ["ok-1", "ok-2"]
    [(reason,)] = query("SELECT reason FROM quarantine")
    assert reason.startswith("refused by PostgreSQL")
    # Not recorded as delivered whole: the same body again takes the full path, stores nothing.
    assert post(client, batch).json == {
        "received": 3,
        "stored": 0,
        "duplicates": 2,
        "quarantined": 1,
    }


def test_unreachable_database_is_503_with_retry_after_within_two_seconds(make_client):
    client = make_client(database_url="postgresql://postgres@127.0.0.1:1/none", pool_timeout=1.5)
    started = time.monotonic()
    response = post(client, body(event()))
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "10"
    assert elapsed < 2.5


def test_exhausted_pool_is_503_not_a_hang(make_client, query):
    client = make_client(pool_min_size=0, pool_max_size=1, pool_timeout=0.3)
    pool = db.get_pool(client.application)
    held = pool.getconn()  # every connection busy
    try:
        response = post(client, body(event(id="waits")))
    finally:
        pool.putconn(held)
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    assert count(query) == 0
    retried = post(client, body(event(id="waits")))
    assert retried.json["stored"] == 1


def test_statement_timeout_is_503_and_nothing_is_stored(make_client, database_url, query):
    client = make_client(statement_timeout_ms=200)
    with table_locked(database_url, "events"):
        started = time.monotonic()
        response = post(client, body(event(id="slow")))
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert elapsed < 2
    assert count(query) == 0


def test_every_answer_carries_a_request_id(client):
    response = post(client, b"[]", basic() | {"X-Request-Id": "abc-123"})
    assert response.headers["X-Request-Id"] == "abc-123"
    forged = post(client, b"[]", basic() | {"X-Request-Id": "a b;<x>"})
    assert forged.headers["X-Request-Id"] != "a b;<x>"


@pytest.mark.parametrize(("size", "status"), [(4096, 200), (4097, 413)])
def test_size_limit_is_exact(make_client, size, status):
    client = make_client(max_body_bytes=4096)
    document = body(event(id="edge"))
    padded = document + b" " * (size - len(document))  # trailing blanks are valid JSON
    assert post(client, padded).status_code == status


def test_every_event_series_exists_before_its_first_event(client):
    # A rate() over the first events of a type, or over a first quarantine, needs the series
    # at 0 before them (and the webhook increments only what a batch changed).
    for kind in ("filteredbyblocklist", "archived", "other"):
        for outcome in ("stored", "duplicate", "quarantined"):
            labels = {"type": kind, "outcome": outcome}
            assert REGISTRY.get_sample_value("receiver_events_total", labels) is not None


def test_an_id_shaped_like_a_content_key_never_takes_an_id_less_events_place(client, query):
    """An event whose `id` is the `sha256:<hex>` an id-less event gets as its key made that
    id-less event a duplicate: answered 200 and never stored."""
    id_less = event("open", mailId="m-1")
    forger = event("open", id=schemas.content_key(id_less), mailId="m-2")
    assert post(client, body(forger)).json["stored"] == 1
    response = post(client, body(id_less))
    assert response.json == {"received": 1, "stored": 1, "duplicates": 0, "quarantined": 0}
    assert sorted(row[0] for row in query("SELECT mail_id FROM events")) == ["m-1", "m-2"]


def test_a_request_that_waited_past_its_deadline_for_a_thread_is_503_at_once(client, query):
    """Its arrival was when gunicorn queued it (receiver.web.worker): the sender has given up."""
    worker._current.arrival = time.monotonic() - 20  # as if queued 20 s ago
    try:
        started = time.monotonic()
        response = post(client, body(event(id="too-late")))
        elapsed = time.monotonic() - started
    finally:
        del worker._current.arrival
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "10"
    assert elapsed < 0.5
    assert count(query) == 0
