"""Re-deliveries recognised by the body's digest (receiver.storage.deliveries): a batch committed
whole is answered from one lookup when it comes again; anything else takes the full path."""

import json
import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from prometheus_client import REGISTRY

from receiver.maintenance import tasks
from receiver.storage import deliveries

from support import body, event, post

ALL_STORED = {"received": 3, "stored": 3, "duplicates": 0, "quarantined": 0}
ALL_DUPLICATES = {"received": 3, "stored": 0, "duplicates": 3, "quarantined": 0}


def requests_counted(outcome):
    return (
        REGISTRY.get_sample_value("receiver_requests_total", {"outcome": outcome, "status": "200"})
        or 0.0
    )


def duplicates_counted(kind):
    return (
        REGISTRY.get_sample_value("receiver_events_total", {"type": kind, "outcome": "duplicate"})
        or 0.0
    )


def delivery_rows(query):
    return query("SELECT digest, events, counts FROM deliveries ORDER BY received_at")


def three_events():
    return body(event("open", id="o1"), event("sent", id="s1"), event("sent", id="s2"))


def test_a_batch_stored_whole_is_recorded_with_its_events(client, query):
    data = three_events()
    assert post(client, data).json == ALL_STORED
    [(digest, count, counts)] = delivery_rows(query)
    assert bytes(digest) == deliveries.digest(data)
    assert (count, counts) == (3, {"open": 1, "sent": 2})
    assert query("SELECT count(*) FROM events")[0][0] == 3


def test_a_redelivered_batch_is_answered_as_duplicates_without_the_full_path(client, query):
    data = three_events()
    post(client, data)
    before = requests_counted("redelivered")
    sent, opened = duplicates_counted("sent"), duplicates_counted("open")
    response = post(client, data)
    assert response.status_code == 200
    assert response.json == ALL_DUPLICATES  # what the full path answers a stored batch
    assert requests_counted("redelivered") == before + 1
    # The duplicate metrics still count every event, by type, from the recorded counts.
    assert (duplicates_counted("sent"), duplicates_counted("open")) == (sent + 2, opened + 1)
    assert query("SELECT count(*) FROM events")[0][0] == 3
    assert len(delivery_rows(query)) == 1


def test_the_same_events_in_another_body_take_the_full_path_and_are_duplicates(client, query):
    post(client, three_events())
    before = requests_counted("redelivered")
    other = json.dumps(json.loads(three_events())[::-1], indent=1).encode()
    assert post(client, other).json == ALL_DUPLICATES
    assert requests_counted("redelivered") == before  # validated and inserted again
    assert len(delivery_rows(query)) == 2  # now this body is known too
    assert query("SELECT count(*) FROM events")[0][0] == 3


def test_a_batch_with_an_invalid_event_is_not_recorded_and_is_counted_again(client, query):
    data = body(event(id="a"), event(clientId=1.5), event(id="b"))
    first = {"received": 3, "stored": 2, "duplicates": 0, "quarantined": 1}
    assert post(client, data).json == first
    assert delivery_rows(query) == []
    before = requests_counted("redelivered")
    again = post(client, data)
    assert again.json == {"received": 3, "stored": 0, "duplicates": 2, "quarantined": 1}
    assert requests_counted("redelivered") == before
    # The full path ran: the quarantine row counts both deliveries.
    assert query("SELECT times_received FROM quarantine") == [(2,)]
    assert delivery_rows(query) == []


def test_a_batch_partly_refused_by_postgresql_is_not_recorded(client, query):
    data = body(event(id="a"), event("bounce", id="b", thresholdExceeded="maybe"))
    assert post(client, data).json == {
        "received": 2,
        "stored": 1,
        "duplicates": 0,
        "quarantined": 1,
    }
    assert delivery_rows(query) == []
    assert post(client, data).json == {
        "received": 2,
        "stored": 0,
        "duplicates": 1,
        "quarantined": 1,
    }
    assert query("SELECT times_received FROM quarantine") == [(2,)]


def test_a_bad_body_is_never_recorded(client, query):
    assert post(client, b"[{not json").status_code == 400
    assert post(client, b"[{not json").status_code == 400
    assert delivery_rows(query) == []
    assert query("SELECT times_received FROM quarantine") == [(2,)]


def test_a_batch_that_was_not_committed_is_not_recorded(make_client, query, database_url):
    # The batch statement fails (the table is locked past the statement timeout): no 200, and
    # no delivery row either, so the retry is stored by the full path.
    client = make_client(statement_timeout_ms=300, database_deadline_ms=800)
    data = three_events()
    with psycopg.connect(database_url) as locker:
        locker.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        assert post(client, data).status_code == 503
    assert delivery_rows(query) == []
    assert query("SELECT count(*) FROM events")[0][0] == 0
    assert post(client, data).json == ALL_STORED
    assert len(delivery_rows(query)) == 1


def test_concurrent_deliveries_of_one_body_store_it_once(make_client, query):
    data = body(*(event(id=f"e{i}") for i in range(50)))
    clients = [make_client() for _ in range(8)]
    barrier, answers = threading.Barrier(8), []

    def deliver(client):
        barrier.wait()
        answers.append(post(client, data))

    threads = [threading.Thread(target=deliver, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status_code for a in answers] == [200] * 8
    assert sum(a.json["stored"] for a in answers) == 50
    assert all(a.json["stored"] + a.json["duplicates"] == 50 for a in answers)
    assert query("SELECT count(*), count(DISTINCT event_key) FROM events") == [(50, 50)]
    assert len(delivery_rows(query)) == 1


def test_expired_digests_are_deleted_and_the_body_is_then_validated_again(
    client, query, database_url
):
    data = three_events()
    post(client, data)
    post(client, body(event(id="recent")))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE deliveries SET received_at = now() - interval '5 days' WHERE digest = %s",
            (deliveries.digest(data),),
        )
        report = tasks.maintain(conn)
    assert report.deliveries_deleted == 1
    assert [count for _, count, _ in delivery_rows(query)] == [1]  # the recent one stays
    before = requests_counted("redelivered")
    assert post(client, data).json == ALL_DUPLICATES  # the events themselves are still there
    assert requests_counted("redelivered") == before
    assert len(delivery_rows(query)) == 2


def test_the_lifetime_outlasts_the_senders_retries_and_not_the_events_retention():
    from receiver.maintenance import retention

    assert retention.SENDER_RETRY_WINDOW < deliveries.LIFETIME < retention.MINIMUM_RETENTION


def test_delete_before_deletes_in_batches(database_url, query):
    now = datetime.now(UTC)
    with psycopg.connect(database_url, autocommit=True) as conn:
        for i in range(25):  # 0 to 9 days old, less an hour
            age = timedelta(days=i % 10) - timedelta(hours=1)
            conn.execute(
                "INSERT INTO deliveries (digest, events, counts, received_at)"
                " VALUES (%s, 1, '{}', %s)",
                (deliveries.digest(str(i).encode()), now - age),
            )
        # Past the four-day lifetime: 5 to 9 days old, twice each.
        assert deliveries.delete_before(conn, batch=4) == 10
    assert query("SELECT count(*) FROM deliveries") == [(15,)]


@pytest.mark.parametrize("data", [b"[]", b"{}"])
def test_an_empty_or_unstorable_batch_is_not_recorded(client, query, data):
    post(client, data)
    post(client, data)
    assert delivery_rows(query) == []
