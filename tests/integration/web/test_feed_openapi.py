"""The change feed (GET /feed/...) against receiver/openapi.yaml: schemathesis generates requests
from the document, the real app answers them from a real database holding events and status
changes of every kind, and every answer (status, headers, content type, body) must be the
document's.

The behaviour behind the answers (paging, long-polls, credentials): test_feed.py beside this one.
The webhook against the same document: test_fuzz.py.
"""

import os
import pathlib
import time

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note
from hypothesis import strategies as st
from schemathesis import GenerationMode

import receiver
from receiver import create_app
from receiver.config import Config
from receiver.storage import db
from receiver.storage import feed as storage_feed
from receiver.web import feed

from support import PASSWORD, USER, basic, cloned_database, post, sample, wait_until
from support.openapi import CONFORMANCE
from support.reporting import MINUTE, OTHER_CLIENT, T0, deliver, status_event

SPEC = pathlib.Path(receiver.__file__).resolve().parent / "openapi.yaml"
SCHEMA = schemathesis.openapi.from_path(SPEC)
FEED = SCHEMA.include(path_regex="^/feed/")
OPERATIONS = {"/feed/status-changes": "changes", "/feed/events": "events"}
FEED_USER, FEED_PASSWORD = "crm", "feed-s3cret"
FEED_AUTH = basic(FEED_USER, FEED_PASSWORD)
# schemathesis' own generation draws from `random` inside strategies: its warning, not ours.
SCHEMATHESIS_USES_RANDOM = "ignore::hypothesis.errors.HypothesisDeprecationWarning"
FUZZ = settings(
    max_examples=300 if os.environ.get("HYPOTHESIS_PROFILE") == "long" else 60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
    print_blob=True,
)


@pytest.fixture(scope="module")
def feed_database_url(server_url, template_db):
    """One database for the module, filled once: the cases only read."""
    with cloned_database(server_url, template_db, "receiver_feed_api") as url:
        yield url


@pytest.fixture(scope="module")
def feed_app(feed_database_url):
    """The app with a feed reader, over events and status changes of every kind. Long-polling
    off (RECEIVER_FEED_MAX_WAITING=0): a generated `wait` on an empty page is answered at once
    instead of holding the case for up to 30 s (test_feed.py tests the waiting)."""
    config = Config(
        database_url=feed_database_url,
        basic_auth=((USER, PASSWORD),),
        feed_basic_auth=((FEED_USER, FEED_PASSWORD),),
        feed_max_waiting=0,
    )
    app = create_app(config)
    client = app.test_client()
    assert post(client, sample("open-batch.json")).status_code == 200
    assert post(client, sample("bounce-event.json")).status_code == 200
    big = b'[{"type":"newtype","clientId":"42","created":"-1000","n":%s,"f":1e400}]' % (b"7" * 400)
    assert post(client, big).status_code == 200
    every_status = [
        ("singleoptin", {}),
        ("unsubscribe", {}),
        ("bounce", {"category": "hardbounce"}),
        ("doubleoptin", {}),
        ("blocklist", {}),
        ("confirmedoptin", {}),
        ("spamcomplaint", {}),
    ]
    for step, (kind, fields) in enumerate(every_status):
        deliver(client, status_event(kind, "r@x", T0 + step * MINUTE, f"s{step}", **fields))
    deliver(client, *(status_event("singleoptin", f"r{i}", T0, f"o{i}") for i in range(30)))
    deliver(client, status_event("click", "r1", T0, "c1", link="https://x", device="mobile"))
    deliver(
        client, status_event("unsubscribe", "r2", T0, "u2", mailing=None, client_id=OTHER_CLIENT)
    )
    with psycopg.connect(feed_database_url, autocommit=True) as conn:
        marker = conn.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0]
        wait_until(lambda: storage_feed.horizon(conn) > marker, timeout=60)
    yield app
    db.close_pool(app)  # the feed's pool too


def call(case, app, credentials):
    """The case's request with `credentials` as its only Authorization: schemathesis makes up
    values for the security scheme (negated ones in negative mode), which would win over ours;
    refusals of credentials have their own test. Buffered (every call here): the answer read
    whole and closed, as a server does, which gives its feed place back."""
    case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    return case.call(app=app, headers=credentials, buffered=True)


def valid_cursor(case) -> bool:
    """Whether the case's `after` is one the feed takes (absent or empty: the beginning)."""
    tie = "id" if case.operation.path == "/feed/status-changes" else "event"
    try:
        storage_feed.Cursor.parse((case.query or {}).get("after"), tie)
    except storage_feed.BadCursor:
        return False
    return True


def test_every_column_the_feed_answers_is_documented(feed_app):
    """The seeded rows, read whole, against the schemas (additionalProperties: false)."""
    for path, key in OPERATIONS.items():
        case = SCHEMA[path]["GET"].Case(query={"limit": feed.MAX_LIMIT})
        response = case.call(app=feed_app, headers=FEED_AUTH, buffered=True)
        case.validate_response(response, checks=CONFORMANCE)
        assert response.status_code == 200 and len(response.json()[key]) > 10


@pytest.mark.filterwarnings(SCHEMATHESIS_USES_RANDOM)
@FUZZ
@given(case=FEED.as_strategy())
def test_generated_requests_get_documented_answers(feed_app, case):
    response = call(case, feed_app, FEED_AUTH)

    note(f"{case.operation.path} {response.status_code}")  # --hypothesis-show-statistics
    case.validate_response(response, checks=CONFORMANCE)
    if not valid_cursor(case):
        assert response.status_code == 400
    else:  # whatever the `wait`: one request at a time always has a place
        assert response.status_code == 200


@pytest.mark.filterwarnings(SCHEMATHESIS_USES_RANDOM)
@FUZZ
@given(case=FEED.as_strategy(generation_mode=GenerationMode.NEGATIVE))
def test_requests_outside_the_document_get_documented_refusals(feed_app, case):
    response = call(case, feed_app, FEED_AUTH)

    note(f"{case.operation.path} {response.status_code}")
    case.validate_response(response, checks=CONFORMANCE)
    if response.request.headers.get("Authorization") != FEED_AUTH["Authorization"]:
        # The mutation was the security itself: schemathesis sent no credentials at all.
        assert response.status_code == 401
    else:
        # A mutation HTTP cannot carry (a repeated parameter, of which the first is read) may
        # still be a request the feed takes.
        assert response.status_code in (200, 400)


@pytest.mark.filterwarnings(SCHEMATHESIS_USES_RANDOM)
@settings(FUZZ, max_examples=20)
@given(case=FEED.as_strategy(), credentials=st.sampled_from([{}, basic(), basic(FEED_USER, "x")]))
def test_without_a_feed_credential_the_answer_is_a_documented_401(feed_app, case, credentials):
    response = call(case, feed_app, credentials)

    case.validate_response(response, checks=CONFORMANCE)
    assert response.status_code == 401


@pytest.mark.filterwarnings(SCHEMATHESIS_USES_RANDOM)
@settings(FUZZ, max_examples=10)
@given(case=FEED.as_strategy())
def test_a_feed_without_readers_answers_a_documented_404(client, case):
    response = call(case, client.application, FEED_AUTH)

    case.validate_response(response, checks=CONFORMANCE)
    assert response.status_code == 404


def test_every_place_taken_answers_a_documented_429(feed_app):
    """The generated cases come one at a time and never meet a 429: once for certain, with
    every feed place of the worker taken (as by readers long-polling)."""
    places = feed_app.extensions[feed.REQUESTS]
    taken = [places.take() for _ in range(places.most)]
    try:
        for path in OPERATIONS:
            case = SCHEMA[path]["GET"].Case(query={"limit": 10})

            response = case.call(app=feed_app, headers=FEED_AUTH, buffered=True)

            case.validate_response(response, checks=CONFORMANCE)
            assert response.status_code == 429
    finally:
        for place in taken:
            place.release()


def test_with_long_polling_off_an_empty_page_with_wait_is_answered_at_once(feed_app):
    """RECEIVER_FEED_MAX_WAITING=0 here: no 429 for `wait`, the empty page as without it."""
    everything = feed_app.test_client().get(
        "/feed/events?limit=10000", headers=FEED_AUTH, buffered=True
    )
    case = SCHEMA["/feed/events"]["GET"].Case(query={"after": everything.json["next"], "wait": 30})

    started = time.monotonic()
    response = case.call(app=feed_app, headers=FEED_AUTH, buffered=True)

    assert time.monotonic() - started < 5
    case.validate_response(response, checks=CONFORMANCE)
    assert response.status_code == 200 and response.json()["events"] == []


def test_a_database_in_trouble_answers_a_documented_503(make_client):
    app = make_client(
        database_url="postgresql://postgres@127.0.0.1:1/none",
        pool_timeout=0.2,
        feed_basic_auth=((FEED_USER, FEED_PASSWORD),),
    ).application
    try:
        for path in OPERATIONS:
            case = SCHEMA[path]["GET"].Case(query={})
            response = case.call(app=app, headers=FEED_AUTH, buffered=True)
            # A 5xx, documented: every check but not_a_server_error.
            case.validate_response(response, checks=CONFORMANCE[1:])
            assert response.status_code == 503
    finally:
        db.close_pool(app)


def test_the_feeds_pair_posting_a_batch_gets_the_webhooks_documented_401(feed_app):
    case = SCHEMA["/webhook"]["POST"].Case(body=[], media_type="application/json")
    response = case.call(app=feed_app, headers=FEED_AUTH, buffered=True)
    case.validate_response(response, checks=CONFORMANCE)
    assert response.status_code == 401
