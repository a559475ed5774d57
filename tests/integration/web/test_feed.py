"""GET /feed/status-changes and /feed/events (receiver/web/feed.py), against real PostgreSQL:
paging gives every row once, cursors the feed did not write are refused, a long-poll answers
soon after a commit and never holds a thread or a connection it should not, the feed's
credentials and Campaign's never open each other's door, and a feed nobody was given
credentials for does not exist.

What the storage layer guarantees (no gap or repeat whatever order the writers commit in):
tests/integration/storage/test_feed.py; the answers against receiver/openapi.yaml:
tests/integration/web/test_feed_openapi.py.
"""

import base64
import ipaddress
import json
import threading
import time

import psycopg
import pytest
from prometheus_client import REGISTRY

from receiver.storage import db
from receiver.storage import feed as storage_feed
from receiver.web import feed

from support import basic, body, post, sample, table_locked, wait_until
from support.reporting import T0, deliver, status_event

FEED_USER, FEED_PASSWORD = "crm", "feed-s3cret"


def feed_auth(user=FEED_USER, password=FEED_PASSWORD):
    return basic(user, password)


@pytest.fixture
def make_feed_client(make_client):
    """make_client with a feed reader configured; the feed pools closed afterwards."""
    apps = []

    def build(**changes):
        changes.setdefault("feed_basic_auth", ((FEED_USER, FEED_PASSWORD),))
        client = make_client(**changes)
        apps.append(client.application)
        return client

    yield build
    for app in apps:
        db.close_pool(app)


@pytest.fixture
def feed_client(make_feed_client):
    return make_feed_client()


def settle(database_url):
    """Wait until everything committed so far is below the horizon (the oldest transaction
    running on the whole server: another session's open transaction holds it back)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        marker = conn.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0]
        wait_until(lambda: storage_feed.horizon(conn) > marker, timeout=60)


def get(http, path, headers=None, **params):
    """GET a feed with the reader's credentials (unless `headers`), parameters in the query.
    Buffered: the answer read whole and closed, as a server does, which gives its place back."""
    query = "&".join(f"{name}={value}" for name, value in params.items())
    headers = feed_auth() if headers is None else headers
    return http.get(f"{path}?{query}", headers=headers, buffered=True)


def read_all(client, path, key, limit, after=""):
    """Every row after `after`, page by page: (rows, the last page's next, pages read)."""
    rows, pages = [], 0
    while True:
        response = get(client, path, after=after, limit=limit)
        assert response.status_code == 200, response.get_data(as_text=True)
        pages += 1
        rows += response.json[key]
        after = response.json["next"]
        if not response.json["more"]:
            return rows, after, pages


def end_of(client, path, key):
    """The cursor after everything there is now."""
    return read_all(client, path, key, feed.MAX_LIMIT)[1]


def in_thread(call):
    """Run `call` in a thread; a function returning its result (after join)."""
    result = {}
    thread = threading.Thread(target=lambda: result.update(value=call(), at=time.monotonic()))
    thread.start()

    def join(timeout=40):
        thread.join(timeout)
        assert not thread.is_alive(), "the request did not end"
        return result["value"], result["at"]

    return join


def sample_value(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- paging and the answer ----------------------------------------------------------------


def test_paging_with_a_small_limit_gives_every_row_exactly_once(feed_client, database_url):
    deliver(
        feed_client, *(status_event("singleoptin", f"r{i}", T0 + i, f"o{i}") for i in range(23))
    )
    deliver(feed_client, *(status_event("open", f"r{i}", T0 + i, f"x{i}") for i in range(17)))
    settle(database_url)

    events, _, pages = read_all(feed_client, "/feed/events", "events", limit=3)
    changes, _, _ = read_all(feed_client, "/feed/status-changes", "changes", limit=3)

    assert pages == 14  # 40 rows in full pages of 3, then the last one
    assert sorted(e["event_key"] for e in events) == sorted(
        [f"o{i}" for i in range(23)] + [f"x{i}" for i in range(17)]
    )
    assert len({e["event_key"] for e in events}) == 40
    # One transaction's entries in (client, recipient) order, as it wrote them.
    assert [c["recipient_id"] for c in changes] == sorted(f"r{i}" for i in range(23))
    assert len({c["id"] for c in changes}) == 23
    # The same order as one big page.
    whole, _, _ = read_all(feed_client, "/feed/events", "events", limit=1000)
    assert [e["event_key"] for e in events] == [e["event_key"] for e in whole]


def test_batches_stored_while_a_reader_pages_come_once_after_the_rest(feed_client, database_url):
    deliver(feed_client, *(status_event("unsubscribe", f"r{i}", T0, f"u{i}") for i in range(5)))
    settle(database_url)
    seen, after = [], ""
    for round_ in range(6):
        response = get(feed_client, "/feed/events", after=after, limit=2)
        seen += [e["event_key"] for e in response.json["events"]]
        after = response.json["next"]
        # A new batch between two pages: after the rows already there, never lost.
        deliver(feed_client, status_event("open", "r0", T0 + round_, f"late{round_}"))
    settle(database_url)
    rest, _, _ = read_all(feed_client, "/feed/events", "events", limit=2, after=after)
    seen += [e["event_key"] for e in rest]

    expected = [f"u{i}" for i in range(5)] + [f"late{i}" for i in range(6)]
    assert sorted(seen) == sorted(expected)
    assert len(seen) == len(expected)


def test_rows_are_answered_with_utc_times_and_the_payload_as_stored(feed_client, database_url):
    bounce = json.loads(sample("bounce-event.json"))
    huge = "9" * 5000  # stored exactly; more digits than Python's int() reads by default
    odd = b'[{"type":"open","clientId":7,"created":1,"id":"big","n":%s,"x":0.10000000000000001}]'
    assert post(feed_client, sample("bounce-event.json")).status_code == 200
    assert post(feed_client, odd % huge.encode()).status_code == 200
    deliver(feed_client, status_event("spamcomplaint", "r@x", T0, "c1"))
    settle(database_url)

    response = get(feed_client, "/feed/events")
    # parse_int/parse_float=str: the numbers exactly as answered.
    events = json.loads(response.get_data(), parse_int=str, parse_float=str)["events"]
    first = events[0]
    assert first["event_key"] == bounce["id"]
    assert first["created_at"] == "2021-03-30T12:49:35.391000Z"  # created 1617108575391
    assert first["received_at"].endswith("Z")
    assert first["payload"] == json.loads(sample("bounce-event.json"), parse_int=str)
    assert (first["category"], first["threshold_exceeded"]) == ("softbounce", False)
    assert (events[1]["payload"]["n"], events[1]["payload"]["x"]) == (huge, "0.10000000000000001")
    assert response.headers["Cache-Control"] == "no-store"

    (change,) = get(feed_client, "/feed/status-changes").json["changes"]
    assert change["status"] == "complained" and change["previous_status"] is None
    assert change["suppress"] is True
    assert change["status_at"] == "2026-01-01T00:00:00Z"


def test_the_client_filter_answers_one_clients_rows(feed_client, database_url):
    deliver(feed_client, status_event("singleoptin", "a", T0, "o1", client_id=11))
    deliver(feed_client, status_event("singleoptin", "b", T0, "o2", client_id=22))
    settle(database_url)

    events = get(feed_client, "/feed/events", client=22).json["events"]
    changes = get(feed_client, "/feed/status-changes", client=11).json["changes"]

    assert [e["event_key"] for e in events] == ["o2"]
    assert [c["recipient_id"] for c in changes] == ["a"]


# --- parameters ------------------------------------------------------------------------------


def packed(*tie):
    return "5:" + base64.urlsafe_b64encode(json.dumps(list(tie)).encode()).decode().rstrip("=")


BAD_CURSORS = [
    ("/feed/status-changes", "x"),
    ("/feed/status-changes", "-1"),
    ("/feed/status-changes", "1:x"),
    ("/feed/status-changes", "9" * 30),
    ("/feed/status-changes", "99999999999999999999"),  # beyond bigint: xid8 would saturate
    ("/feed/status-changes", "%D9%A1%D9%A2"),  # Arabic-Indic digits, which str.isdigit takes
    ("/feed/status-changes", packed(1, "open", 0, "k")),  # an events cursor
    ("/feed/events", "1:2"),
    ("/feed/events", packed(True, "open", 0, "k")),  # PostgreSQL: no boolean to bigint cast
    ("/feed/events", packed(2**63, "open", 0, "k")),  # bigint out of range
    ("/feed/events", packed(1, "op\x00en", 0, "k")),  # no NUL in PostgreSQL text
    ("/feed/events", packed(1, "open", 10**18, "k")),  # beyond year 9999
]


@pytest.mark.parametrize("path", ["/feed/status-changes", "/feed/events"])
def test_a_cursor_ahead_of_the_database_is_400_saying_why(feed_client, path, database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        ahead = storage_feed.horizon(conn) + 1000
    response = get(feed_client, path, after=str(ahead))

    assert response.status_code == 400
    assert "ahead of this database" in response.json["error"]


@pytest.mark.parametrize(("path", "cursor"), BAD_CURSORS)
def test_a_cursor_the_feed_did_not_write_is_400(feed_client, path, cursor):
    response = get(feed_client, path, after=cursor)

    assert response.status_code == 400
    assert response.json["error"].startswith("after: not a cursor of this feed")
    assert "\n" not in response.json["error"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("limit", "0"),
        ("limit", "10001"),
        ("limit", "ten"),
        ("limit", "-1"),
        ("limit", ""),
        ("wait", "31"),
        ("wait", "1.5"),
        ("wait", "-1"),
        ("client", "-1"),
        ("client", str(2**63)),
        ("client", "1e3"),
    ],
)
def test_a_bad_limit_wait_or_client_is_400_naming_it(feed_client, name, value):
    response = get(feed_client, "/feed/events", **{name: value})

    assert response.status_code == 400
    assert response.json["error"].startswith(f"{name} must be a whole number")


def test_an_empty_or_missing_cursor_is_the_beginning(feed_client, database_url):
    deliver(feed_client, status_event("unsubscribe", "a", T0, "u1"))
    settle(database_url)
    assert (
        get(feed_client, "/feed/status-changes", after="").json["changes"][0]["status_event_key"]
        == "u1"
    )
    assert get(feed_client, "/feed/status-changes").json["changes"][0]["status_event_key"] == "u1"


# --- long-poll -----------------------------------------------------------------------------


def test_a_long_poll_answers_within_a_poll_of_a_stored_batch(feed_client, database_url):
    settle(database_url)
    after = end_of(feed_client, "/feed/events", "events")
    reader = feed_client.application.test_client()
    started = time.monotonic()
    answer = in_thread(lambda: get(reader, "/feed/events", after=after, wait=15))
    time.sleep(1.0)
    assert post(feed_client, body(status_event("open", "r", T0, "news"))).status_code == 200
    stored = time.monotonic()
    # Readable once every transaction older than the batch's has ended, on the whole server:
    # at once on a quiet one, later while another session's transaction runs (other tests').
    settle(database_url)
    readable = time.monotonic()

    response, answered = answer()

    assert response.status_code == 200
    assert [e["event_key"] for e in response.json["events"]] == ["news"]
    assert answered - readable < 3 * feed.POLL_SECONDS, f"{answered - readable:.2f} s"
    assert answered - stored < 5.0, f"answered {answered - stored:.2f} s after the commit"
    assert answered - started >= 1.0  # it did wait: nothing was there before


def test_a_long_poll_with_nothing_new_answers_empty_when_its_time_is_up(feed_client, database_url):
    settle(database_url)
    after = end_of(feed_client, "/feed/status-changes", "changes")
    started = time.monotonic()

    response = get(feed_client, "/feed/status-changes", after=after, wait=1)

    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.json["changes"] == [] and response.json["more"] is False
    assert 1.0 <= elapsed < 1.0 + 2 * feed.POLL_SECONDS
    # The cursor it answers never goes back.
    assert int(response.json["next"]) >= int(after)


def test_a_page_with_rows_is_answered_at_once_whatever_the_wait(feed_client, database_url):
    deliver(feed_client, status_event("unsubscribe", "a", T0, "u1"))
    settle(database_url)
    started = time.monotonic()

    response = get(feed_client, "/feed/status-changes", wait=30)

    assert len(response.json["changes"]) == 1
    assert time.monotonic() - started < 1.0


def test_a_worker_told_to_stop_ends_its_long_polls_at_once(feed_client, database_url):
    """gunicorn_conf.py calls feed.stop on SIGTERM (and SIGINT, SIGQUIT): a long-poll then
    answers its empty page at once, so that the stop does not wait for it (up to 30 s) nor
    cut it at graceful_timeout with no answer."""
    settle(database_url)
    after = end_of(feed_client, "/feed/status-changes", "changes")
    poller = in_thread(
        lambda: get(
            feed_client.application.test_client(), "/feed/status-changes", after=after, wait=20
        )
    )
    wait_until(lambda: waiting(feed_client) == 1, timeout=5)
    stopped = time.monotonic()

    feed.stop(feed_client.application)

    response, answered = poller()
    assert answered - stopped < 0.5, f"{answered - stopped:.2f} s"
    assert response.status_code == 200
    assert response.json["changes"] == [] and response.json["more"] is False
    assert int(response.json["next"]) >= int(after)
    # A request still coming (on a kept-alive connection) does not wait either.
    started = time.monotonic()
    late = get(feed_client, "/feed/status-changes", after=after, wait=20)
    assert late.status_code == 200 and late.json["changes"] == []
    assert time.monotonic() - started < 1.0
    feed.stop(feed_client.application)  # again: nothing more happens


def waiting(client):
    return client.application.extensions[feed.WAITING].count


def serving(client):
    return client.application.extensions[feed.REQUESTS].count


def test_beyond_the_waiting_cap_a_long_poll_gets_429(make_feed_client, database_url):
    client = make_feed_client(feed_max_waiting=1)
    settle(database_url)
    after = end_of(client, "/feed/events", "events")
    status_after = end_of(client, "/feed/status-changes", "changes")
    first = in_thread(
        lambda: get(client.application.test_client(), "/feed/events", after=after, wait=20)
    )
    wait_until(lambda: waiting(client) == 1, timeout=5)
    before = sample_value("receiver_feed_requests_total", feed="events", outcome="too_many_waiting")

    refused = get(client, "/feed/events", after=after, wait=5)
    other_feed = get(client, "/feed/status-changes", after=status_after, wait=5)  # one cap
    at_once = get(client, "/feed/events", after=after)  # no wait: no waiting place needed

    assert refused.status_code == 429 and other_feed.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    assert refused.json == {"error": "too many requests waiting"}
    assert at_once.status_code == 200 and at_once.json["events"] == []
    after_now = sample_value(
        "receiver_feed_requests_total", feed="events", outcome="too_many_waiting"
    )
    assert after_now == before + 1
    # The waiting one is still served, and its place comes free.
    deliver(client, status_event("open", "r", T0, "x1"))
    response, _ = first()
    assert [e["event_key"] for e in response.json["events"]] == ["x1"]
    assert waiting(client) == 0
    assert sample_value("receiver_feed_waiting_requests") == 0


def test_with_long_polling_off_a_wait_is_answered_at_once(make_feed_client, database_url):
    """RECEIVER_FEED_MAX_WAITING=0: `wait` is ignored, as if it were 0 (not a 429, which a
    reader would take for a refusal and retry at once)."""
    client = make_feed_client(feed_max_waiting=0)
    deliver(client, status_event("unsubscribe", "a", T0, "u1"))
    settle(database_url)
    after = end_of(client, "/feed/events", "events")

    assert get(client, "/feed/events", wait=5).status_code == 200  # rows: answered at once
    started = time.monotonic()
    empty = get(client, "/feed/events", after=after, wait=5)  # nothing new: at once too

    assert time.monotonic() - started < 1.0
    assert empty.status_code == 200
    assert empty.json["events"] == [] and empty.json["more"] is False
    assert int(empty.json["next"]) >= int(after)  # the cursor, or the horizon since
    assert sample_value("receiver_feed_waiting_requests") == 0


def test_beyond_the_request_cap_every_feed_request_gets_429(make_feed_client, database_url):
    """RECEIVER_FEED_MAX_REQUESTS counts every feed request, long-polls included: with its one
    place held by a long-poll, a plain read of either feed is refused too."""
    client = make_feed_client(feed_max_requests=1, feed_max_waiting=1)
    settle(database_url)
    after = end_of(client, "/feed/events", "events")
    poller = in_thread(
        lambda: get(client.application.test_client(), "/feed/events", after=after, wait=20)
    )
    wait_until(lambda: waiting(client) == 1, timeout=5)
    before = sample_value(
        "receiver_feed_requests_total", feed="status-changes", outcome="too_many_requests"
    )

    refused = get(client, "/feed/status-changes")
    also_refused = get(client, "/feed/events", limit=10)

    assert refused.status_code == 429 and also_refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    assert refused.json == {"error": "too many feed requests"}
    assert refused.headers["Cache-Control"] == "no-store"
    assert (
        sample_value(
            "receiver_feed_requests_total", feed="status-changes", outcome="too_many_requests"
        )
        == before + 1
    )
    assert serving(client) == 1
    # The long-poll is still served, and its place comes free.
    deliver(client, status_event("open", "r", T0, "x1"))
    response, _ = poller()
    assert [e["event_key"] for e in response.json["events"]] == ["x1"]
    assert serving(client) == 0
    assert get(client, "/feed/status-changes").status_code == 200


def test_a_read_without_wait_holds_its_place_while_it_reads(make_feed_client, database_url):
    """The cap is on threads, and a plain read holds one for as long as the database takes."""
    client = make_feed_client(
        feed_max_requests=1, statement_timeout_ms=3000, database_deadline_ms=3500
    )
    with table_locked(database_url, "events"):
        slow = in_thread(lambda: get(client.application.test_client(), "/feed/events"))
        wait_until(lambda: serving(client) == 1, timeout=5)
        time.sleep(0.2)  # reading, blocked by the lock

        refused = get(client, "/feed/status-changes")

        assert refused.status_code == 429
        assert serving(client) == 1
    response, _ = slow()  # the lock gone, its read ends
    assert response.status_code == 200
    assert serving(client) == 0


def test_a_place_is_held_until_the_answer_is_written_out(feed_client):
    """Writing a big page to a slow reader holds the thread too: the place comes back when
    the server closes the answer, not when the view returns."""
    http = feed_client.application.test_client()

    response = http.get("/feed/events", headers=feed_auth())  # not closed yet

    assert response.status_code == 200
    assert serving(feed_client) == 1
    response.close()
    assert serving(feed_client) == 0


def test_long_polls_hold_no_connection_between_their_reads(
    make_feed_client, database_url, monkeypatch
):
    """Two long-polls and a plain read on a feed pool of ONE connection: were a connection held
    across the sleeps, the third request would wait out the pool's timeout and get 503."""
    monkeypatch.setattr(feed, "FEED_POOL_SIZE", 1)
    client = make_feed_client(pool_timeout=0.5, feed_max_requests=3)
    assert feed.get_pool(client.application).max_size == 1
    settle(database_url)
    after = end_of(client, "/feed/events", "events")
    status_after = end_of(client, "/feed/status-changes", "changes")
    pollers = [
        in_thread(
            lambda: get(client.application.test_client(), "/feed/events", after=after, wait=3)
        ),
        in_thread(
            lambda: get(
                client.application.test_client(), "/feed/status-changes", after=status_after, wait=3
            )
        ),
    ]
    wait_until(lambda: waiting(client) == 2, timeout=5)

    for _ in range(5):
        assert get(client, "/feed/events", after=after).status_code == 200
        time.sleep(0.2)

    assert [poll()[0].status_code for poll in pollers] == [200, 200]


def test_the_feed_reads_on_its_own_pool_never_the_webhooks(make_feed_client, database_url):
    client = make_feed_client(pool_max_size=1, pool_timeout=0.3)
    webhook_pool = db.get_pool(client.application)
    held = webhook_pool.getconn(timeout=5)  # the webhook's only connection
    try:
        assert post(client, body(status_event("open", "r", T0, "x"))).status_code == 503
        response = get(client, "/feed/events", wait=1)
        assert response.status_code == 200
    finally:
        webhook_pool.putconn(held)
    assert feed.get_pool(client.application) is not webhook_pool


# --- the database in trouble ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "table"), [("/feed/events", "events"), ("/feed/status-changes", "status_changes")]
)
def test_a_database_that_does_not_answer_in_time_gets_503_with_retry_after(
    make_feed_client, database_url, path, table
):
    client = make_feed_client(statement_timeout_ms=200, database_deadline_ms=700)
    with table_locked(database_url, table):
        started = time.monotonic()
        response = get(client, path, wait=2)
        elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "10"
    assert response.json == {"error": "database unavailable, retry later"}
    assert elapsed < 1.5


def test_an_unreachable_database_gets_503_within_the_pool_timeout(make_feed_client):
    client = make_feed_client(
        database_url="postgresql://postgres@127.0.0.1:1/none", pool_timeout=0.3
    )
    started = time.monotonic()

    response = get(client, "/feed/status-changes", wait=3)

    assert response.status_code == 503 and response.headers["Retry-After"] == "10"
    assert time.monotonic() - started < 1.5


# --- credentials ---------------------------------------------------------------------------


def test_a_campaign_credential_cannot_read_the_feed(feed_client):
    for path in ("/feed/events", "/feed/status-changes"):
        response = get(feed_client, path, headers=basic())
        assert response.status_code == 401
        assert (
            response.headers["WWW-Authenticate"] == 'Basic realm="receiver feed", charset="UTF-8"'
        )
        assert response.json == {"error": "authentication required"}


def test_a_feed_credential_cannot_post_events(feed_client, query):
    response = post(feed_client, body(status_event("open", "r", T0, "x")), feed_auth())

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Basic realm="receiver"')
    assert query("SELECT count(*) FROM events") == [(0,)]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        feed_auth(password="wrong"),
        feed_auth(password=FEED_PASSWORD + "x"),
        feed_auth(user="campaign"),
        {"Authorization": "Basic !!!"},
        {"Authorization": f"Bearer {FEED_PASSWORD}"},
    ],
    ids=["none", "wrong", "longer", "other-user", "malformed", "other-scheme"],
)
def test_anything_but_a_feed_pair_is_401(feed_client, headers):
    before = sample_value("receiver_auth_failures_total", reason="invalid")

    response = get(feed_client, "/feed/events", headers=headers)

    assert response.status_code == 401
    # Counted as the feed's, not in the webhook's auth-failure alert.
    assert sample_value("receiver_auth_failures_total", reason="invalid") == before


def test_rotation_accepts_each_configured_feed_pair(make_feed_client):
    client = make_feed_client(feed_basic_auth=(("crm", "old"), ("crm", "new pass:with colon")))
    assert get(client, "/feed/events", headers=feed_auth("crm", "old")).status_code == 200
    assert (
        get(client, "/feed/events", headers=feed_auth("crm", "new pass:with colon")).status_code
        == 200
    )
    assert get(client, "/feed/events", headers=feed_auth("crm", "older")).status_code == 401


def test_without_feed_credentials_the_feed_is_404(client):
    """Closed by default: the `client` fixture configures Campaign's credentials only."""
    for path in ("/feed/events", "/feed/status-changes"):
        for headers in ({}, basic(), feed_auth()):
            response = get(client, path, headers=headers, wait=5)
            assert response.status_code == 404
            assert response.json == {"error": "feed not enabled"}
            assert response.headers["X-Request-Id"]


def test_campaigns_source_allow_list_does_not_apply_to_the_feed(make_feed_client):
    client = make_feed_client(allowed_networks=(ipaddress.ip_network("193.169.180.1/32"),))

    assert post(client, body(status_event("open", "r", T0, "x"))).status_code == 403
    assert get(client, "/feed/events").status_code == 200


# --- metrics and the log line --------------------------------------------------------------


def test_each_request_is_counted_and_logged_apart_from_the_webhooks(
    make_feed_client, database_url, request_lines
):
    client = make_feed_client(trusted_proxies=1)
    deliver(client, status_event("singleoptin", "a", T0, "o1"), status_event("open", "a", T0, "x1"))
    settle(database_url)
    request_lines.clear()
    ok = sample_value("receiver_feed_requests_total", feed="events", outcome="ok")
    rows = sample_value("receiver_feed_rows_total", feed="events")
    webhook = sample_value("receiver_requests_total", outcome="ok", status="200")
    headers = {**feed_auth(), "X-Forwarded-For": "203.0.113.9", "X-Request-Id": "crm-42"}

    response = get(client, "/feed/events", headers=headers)
    assert get(client, "/feed/events", headers=basic()).status_code == 401

    assert response.headers["X-Request-Id"] == "crm-42"
    assert sample_value("receiver_feed_requests_total", feed="events", outcome="ok") == ok + 1
    assert sample_value("receiver_feed_rows_total", feed="events") == rows + 2
    assert sample_value("receiver_requests_total", outcome="ok", status="200") == webhook
    served, refused = request_lines
    assert (served["outcome"], served["feed"], served["rows"], served["status"]) == (
        "ok",
        "events",
        2,
        200,
    )
    assert served["client_addr"] == "203.0.113.9"  # X-Forwarded-For read as for the webhook
    assert served["request_id"] == "crm-42" and "error" not in served
    assert (refused["outcome"], refused["error"]) == ("unauthorized", "invalid")
    # Never a secret, never content.
    text = json.dumps(request_lines)
    assert FEED_PASSWORD not in text and "s3cret-pass" not in text and "x1" not in text
