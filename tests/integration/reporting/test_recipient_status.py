"""recipient_status: decided by the events' own time, whatever the arrival order, kept current by
the batch insert itself (receiver/storage/events.py)."""

from support.reporting import CLIENT, MINUTE, OTHER_CLIENT, T0, deliver, status_event

STATUS = """
SELECT status, status_at, status_event_type, mailing_id, suppress, status_event_key, changed_at
FROM recipient_status WHERE client_id = %s AND recipient_id = %s
"""


def status_of(query, recipient, client_id=CLIENT):
    """The recipient's row as a dict, or None."""
    rows = query(STATUS, (client_id, recipient))
    if not rows:
        return None
    keys = ("status", "status_at", "type", "mailing_id", "suppress", "key", "changed_at")
    return dict(zip(keys, rows[0], strict=True))


def test_an_unsubscribe_delivered_before_an_earlier_opt_in_still_decides(client, query):
    deliver(client, status_event("unsubscribe", "r@x", T0 + MINUTE, "u1"))
    deliver(client, status_event("doubleoptin", "r@x", T0, "o1"))
    row = status_of(query, "r@x")
    assert (row["status"], row["type"], row["key"], row["suppress"]) == (
        "unsubscribed",
        "unsubscribe",
        "u1",
        True,
    )
    assert row["status_at"].timestamp() * 1000 == T0 + MINUTE


def test_a_re_opt_in_after_an_unsubscribe_subscribes_again(client, query):
    deliver(client, status_event("unsubscribe", "r@x", T0, "u1"))
    deliver(client, status_event("confirmedoptin", "r@x", T0 + MINUTE, "o1"))
    row = status_of(query, "r@x")
    assert (row["status"], row["suppress"], row["type"]) == ("subscribed", False, "confirmedoptin")


def test_a_hard_bounce_after_an_unsubscribe_wins(client, query):
    deliver(
        client,
        status_event("unsubscribe", "r@x", T0, "u1"),
        status_event("bounce", "r@x", T0 + MINUTE, "b1", category="hardbounce", mailing=1002),
    )
    row = status_of(query, "r@x")
    assert (row["status"], row["type"], row["mailing_id"]) == ("hardbounced", "bounce", 1002)


def test_duplicates_delivered_three_times_change_nothing(client, query):
    batch = [
        status_event("singleoptin", "r@x", T0, "o1"),
        status_event("unsubscribe", "r@x", T0 + MINUTE, "u1"),
    ]
    first = deliver(client, *batch)
    row = status_of(query, "r@x")
    assert [deliver(client, *batch)["duplicates"] for _ in range(2)] == [2, 2]
    assert first["stored"] == 2
    assert status_of(query, "r@x") == row  # changed_at too: a duplicate is not a change
    assert row["status"] == "unsubscribed"
    assert query("SELECT count(*) FROM recipient_status") == [(1,)]


def test_one_recipient_across_two_mailings_and_two_clients(client, query):
    deliver(
        client,
        status_event("unsubscribe", "r@x", T0, "u1", mailing=1001),
        status_event("doubleoptin", "r@x", T0 + MINUTE, "o1", mailing=1002),
    )
    deliver(
        client,
        status_event(
            "spamcomplaint", "r@x", T0 - MINUTE, "s1", mailing=2001, client_id=OTHER_CLIENT
        ),
    )
    mine, other = status_of(query, "r@x"), status_of(query, "r@x", OTHER_CLIENT)
    assert (mine["status"], mine["mailing_id"]) == ("subscribed", 1002)
    assert (other["status"], other["mailing_id"], other["suppress"]) == ("complained", 2001, True)


def test_at_the_same_millisecond_the_more_protective_status_wins_in_any_order(client, query):
    # Opt-in and unsubscribe at the same ms, delivered in both orders and within one batch.
    deliver(client, status_event("unsubscribe", "a@x", T0, "u-a"))
    deliver(client, status_event("doubleoptin", "a@x", T0, "o-a"))
    deliver(client, status_event("doubleoptin", "b@x", T0, "o-b"))
    deliver(client, status_event("unsubscribe", "b@x", T0, "u-b"))
    deliver(
        client,
        status_event("doubleoptin", "c@x", T0, "o-c"),
        status_event("unsubscribe", "c@x", T0, "u-c"),
        status_event("blocklist", "c@x", T0, "k-c"),
    )
    assert [status_of(query, r)["status"] for r in ("a@x", "b@x", "c@x")] == [
        "unsubscribed",
        "unsubscribed",
        "blocklisted",
    ]


def test_at_the_same_millisecond_and_status_the_larger_event_key_wins(client, query):
    hard = {"category": "hardbounce"}
    deliver(client, status_event("bounce", "r@x", T0, "key-b", mailing=1002, **hard))
    deliver(client, status_event("bounce", "r@x", T0, "key-a", mailing=1001, **hard))
    deliver(client, status_event("bounce", "s@x", T0, "key-c", mailing=1001, **hard))
    deliver(client, status_event("bounce", "s@x", T0, "key-d", mailing=1002, **hard))
    rows = [status_of(query, r) for r in ("r@x", "s@x")]
    assert [(row["key"], row["mailing_id"]) for row in rows] == [("key-b", 1002), ("key-d", 1002)]


def test_a_soft_bounce_counts_only_once_the_threshold_is_exceeded(client, query):
    deliver(client, status_event("doubleoptin", "r@x", T0, "o1"))
    soft = {"category": "softbounce"}
    deliver(client, status_event("bounce", "r@x", T0 + MINUTE, "b1", **soft))
    assert status_of(query, "r@x")["status"] == "subscribed"
    deliver(client, status_event("bounce", "new@x", T0, "b2", **soft, thresholdExceeded=False))
    assert status_of(query, "new@x") is None  # changes nothing: no row at all
    deliver(
        client, status_event("bounce", "r@x", T0 + 2 * MINUTE, "b3", **soft, thresholdExceeded=True)
    )
    row = status_of(query, "r@x")
    assert (row["status"], row["key"]) == ("hardbounced", "b3")


def test_events_that_change_no_status_leave_no_row(client, query):
    deliver(
        client,
        status_event("open", "r@x", T0, "e1"),
        status_event("click", "r@x", T0, "e2", link="https://example.com"),
        status_event("sent", "r@x", T0, "e3"),
    )
    assert query("SELECT count(*) FROM recipient_status") == [(0,)]


def test_changed_at_is_the_arrival_of_the_deciding_event(client, query):
    deliver(client, status_event("unsubscribe", "r@x", T0 + MINUTE, "u1"))
    decided = status_of(query, "r@x")["changed_at"]
    deliver(client, status_event("doubleoptin", "r@x", T0, "o1"))  # late and older: loses
    assert status_of(query, "r@x")["changed_at"] == decided
    deliver(client, status_event("blocklist", "r@x", T0 + 2 * MINUTE, "k1"))
    row = status_of(query, "r@x")
    assert row["changed_at"] > decided and row["status"] == "blocklisted"
    received = query("SELECT received_at FROM events WHERE event_key = 'k1'")
    assert received == [(row["changed_at"],)]


def test_the_migration_backfill_decides_like_the_insert(client, query, database_url):
    deliver(
        client,
        status_event("unsubscribe", "a@x", T0, "u-a"),
        status_event("doubleoptin", "a@x", T0, "o-a"),
        status_event("doubleoptin", "b@x", T0, "o-b"),
        status_event("unsubscribe", "b@x", T0 + MINUTE, "u-b"),
        status_event("bounce", "c@x", T0, "b-c", category="softbounce", thresholdExceeded=True),
    )
    live = query("SELECT * FROM recipient_status ORDER BY recipient_id")
    rebuilt = rebuild_with_migration(database_url)
    assert rebuilt == live and len(live) == 3


def rebuild_with_migration(url, blocks=1):
    """Empty recipient_status and run 004's backfill again (one block a range: several
    ranges even for a few rows); the rows."""
    import psycopg

    from receiver.storage import recipient_status

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE recipient_status")
        conn.execute("INSERT INTO recipient_status_backfill (relation) VALUES (NULL)")
        recipient_status.backfill(conn, blocks=blocks)
        assert conn.execute("SELECT count(*) FROM recipient_status_backfill").fetchone() == (0,)
        return conn.execute("SELECT * FROM recipient_status ORDER BY recipient_id").fetchall()
