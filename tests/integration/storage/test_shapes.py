"""Learning what Campaign sends (receiver/storage/shapes.py): each change noticed once, every
stored event counted once, silent daily types, the bounds, and the events left as they came."""

import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from receiver.storage import db, shapes

from support import body, post, wait_until
from support.events import BOUNCE, OPEN

CLIENT = BOUNCE["clientId"]


@pytest.fixture
def conn(database_url):
    with db.connect(database_url, "test shapes") as connection:
        yield connection


def send(client, *events):
    response = post(client, body(*events))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def opened(**fields):
    return {**OPEN, "clientId": CLIENT, **fields}


def bounced(n, **fields):
    return {**BOUNCE, "id": f"bounce-{n}", **fields}


def learn(conn, **options) -> shapes.LearnReport:
    """Passes until every event stored so far is counted: a transaction of another database on
    the same server holds the feed's horizon back for a moment (it is cluster-wide)."""
    stored = conn.execute("SELECT max(xid)::text::bigint FROM events").fetchone()[0] or 0
    total = shapes.LearnReport()

    def caught_up():
        report = shapes.learn(conn, **options)
        total.events += report.events
        total.changes += report.changes
        total.caught_up = report.caught_up
        place = conn.execute("SELECT position::text::bigint FROM event_shapes_position")
        return place.fetchone()[0] > stored

    wait_until(caught_up, interval=0.2)
    return total


def end_baseline(conn):
    """Make the client's first day, and the first pass, two days old: what comes now is news."""
    conn.execute("UPDATE event_shapes SET first_seen_at = first_seen_at - interval '2 days'")
    conn.execute("UPDATE event_shapes_position SET started_at = started_at - interval '2 days'")


def changes(conn):
    """The changes noticed (a new type's fields, part of it, left out)."""
    return sorted(
        conn.execute(
            "SELECT change, event_type, field, kind, value FROM event_shapes "
            "WHERE change IS NOT NULL AND NOT (change = 'new_type' AND field IS NOT NULL)"
            " ORDER BY id"
        ).fetchall(),
        key=str,
    )


NEWS = [
    {**BOUNCE, "id": "new-type-1", "type": "webinarregistration"},
    opened(appVersion="7.1", created=1564590055000),
    bounced(2, created=str(BOUNCE["created"] + 1)),
    bounced(3, reason="policy-related"),
]


def test_each_change_is_noticed_once_and_the_events_are_stored_as_sent(client, conn):
    send(client, BOUNCE, opened(), bounced(1, category="hardbounce"))
    first = learn(conn)
    assert first.changes == [] and first.caught_up and first.events == 3
    assert type(first.events) is int  # a count, not a Decimal (bench/run.py divides it)
    end_baseline(conn)

    send(client, *NEWS)
    second = learn(conn)
    expected = [
        ("kind_changed", "bounce", "created", "string", None),
        ("new_field", "open", "appVersion", "string", None),
        ("new_type", "webinarregistration", None, None, None),
        ("new_value", "bounce", "reason", "string", "policy-related"),
    ]
    assert changes(conn) == sorted(expected, key=str)
    assert len(second.changes) == 4
    assert shapes.signals(conn) == {
        (CLIENT, "new_type"): 1,
        (CLIENT, "new_field"): 1,
        (CLIENT, "kind_changed"): 1,
        (CLIENT, "new_value"): 1,
    }

    # Retried, and more of the same: counted, never noticed again.
    send(client, *NEWS)
    send(client, bounced(4, reason="policy-related"), opened(appVersion="7.2", created=1))
    third = learn(conn)
    assert third.changes == [] and changes(conn) == sorted(expected, key=str)
    assert shapes.signals(conn)[CLIENT, "new_value"] == 1
    [(count,)] = conn.execute(
        "SELECT events FROM event_shapes WHERE value = 'policy-related'"
    ).fetchall()
    assert count == 2

    stored = {
        row[0]: row[1]
        for row in conn.execute("SELECT event_key, payload FROM events WHERE event_id LIKE 'new-%'")
    }
    assert stored == {"new-type-1": NEWS[0]}
    [(created,)] = conn.execute(
        "SELECT payload->'created' FROM events WHERE event_id = 'bounce-2'"
    ).fetchall()
    assert created == str(BOUNCE["created"] + 1)  # stored as it came: a string


def test_the_baseline_is_what_the_client_sends_on_its_first_day(client, conn):
    send(client, opened(), opened(device="mobile", appVersion="7.1"))
    send(client, {**BOUNCE, "type": "newsletterping"})
    report = learn(conn)
    assert report.changes == [] and changes(conn) == []
    rows = {(r["event_type"], r["field"], r["value"]): r for r in shapes.report_rows(conn)}
    assert rows["open", "device", "mobile"]["documented"] is False
    assert rows["open", "device", "desktop"]["documented"] is True
    assert rows["newsletterping", None, None]["documented"] is False


def test_every_stored_event_is_counted_once_across_chunks_and_passes(client, conn):
    for n in range(9):
        send(client, *(bounced(f"{n}-{i}") for i in range(7)), opened(created=n))
        if n % 3 == 2:
            learn(conn, chunk_events=5)
    learn(conn, chunk_events=5)
    counted = dict(
        conn.execute("SELECT event_type, events FROM event_shapes WHERE field IS NULL").fetchall()
    )
    stored = dict(conn.execute("SELECT type, count(*) FROM events GROUP BY type").fetchall())
    assert counted == stored == {"bounce": 63, "open": 9}
    [(fields_counted,)] = conn.execute(
        "SELECT events FROM event_shapes WHERE event_type = 'bounce' AND field = 'id'"
    ).fetchall()
    assert fields_counted == 63
    days = conn.execute("SELECT sum(events) FROM event_type_days").fetchone()[0]
    assert days == 72


def test_two_passes_at_once_take_turns(client, conn, database_url):
    send(client, BOUNCE)
    with db.connect(database_url, "other pass") as other:
        with db.session_lock_if_free(other, shapes.LOCK_ID) as held:
            assert held
            assert shapes.learn(conn).skipped
        assert learn(conn).events == 1


def insert_sent(conn, received_at, n):
    conn.execute(
        "INSERT INTO events (event_key, client_id, type, created_at, received_at, payload) "
        "VALUES (%s, %s, 'sent', %s, %s, %s)",
        (f"sent-{n}", CLIENT, received_at, received_at, json.dumps({"type": "sent"})),
    )


def test_a_type_that_arrived_daily_and_stopped_is_silent(client, conn):
    now = datetime.now(UTC)
    for day in range(10, 24):  # every day for two weeks, up to ten days ago
        insert_sent(conn, now - timedelta(days=day), day)
    insert_sent(conn, now - timedelta(days=40), 40)  # a lone one of another month
    learn(conn)
    assert shapes.signals(conn) == {(CLIENT, "silent_type"): 1}
    [row] = [r for r in shapes.report_rows(conn) if r["field"] is None]
    assert row["daily"] and row["silent"]

    shapes.accept(conn, [row["id"]])
    assert shapes.signals(conn) == {}

    insert_sent(conn, datetime.now(UTC), 0)  # back: not silent, and watched for the next silence
    learn(conn)
    [row] = [r for r in shapes.report_rows(conn) if r["field"] is None]
    assert not row["silent"] and row["reviewed_at"] < row["last_seen_at"]


def test_a_type_that_came_now_and_then_is_never_silent(conn):
    now = datetime.now(UTC)
    for day in range(10, 24, 3):
        insert_sent(conn, now - timedelta(days=day), day)
    learn(conn)
    assert shapes.signals(conn) == {}


def test_values_and_fields_beyond_the_bounds_are_not_recorded(client, conn, monkeypatch):
    monkeypatch.setattr(shapes.rules, "MAX_VALUES_PER_FIELD", 3)
    monkeypatch.setattr(shapes.rules, "MAX_FIELDS_PER_TYPE", 14)  # the sample's 12, and 2
    send(client, *(opened(device=f"phone {n}", **{f"extra{n}": n}) for n in range(6)))
    learn(conn)
    [(values,)] = conn.execute(
        "SELECT count(*) FROM event_shapes WHERE field = 'device' AND value IS NOT NULL"
    ).fetchall()
    [(fields,)] = conn.execute(
        "SELECT count(DISTINCT field) FROM event_shapes WHERE event_type = 'open'"
    ).fetchall()
    assert (values, fields) == (3, 14)


def test_examples_are_masked(client, conn):
    send(client, BOUNCE)
    learn(conn)
    end_baseline(conn)
    send(client, bounced(9, phone="+49 170 1234567", score=4242421, reason="policy-related"))
    learn(conn)
    examples = [
        row["example"] for row in shapes.report_rows(conn) if row["change"] or not row["field"]
    ]
    assert examples and all(examples)
    text = json.dumps(examples)
    for secret in ("john.smith", "example.com", "1234567", "4242421", "10227900201", "4P6W8B4"):
        assert secret not in text
    new_value = next(r for r in shapes.report_rows(conn) if r["value"] == "policy-related")
    assert new_value["example"]["reason"] == "policy-related"
    assert new_value["example"]["phone"] == "+00 000 0000000"
    assert new_value["example"]["recipientId"] == "xxxx.xxxxx@xxxxxxx.xxx"


def test_a_feed_place_past_the_horizon_restarts_at_it(client, conn):
    conn.execute("INSERT INTO event_shapes_position VALUES ('999999999999', now(), now())")
    send(client, BOUNCE)
    report = learn(conn)
    assert report.caught_up and report.events == 1  # the event stored after the restore
    with pytest.raises(psycopg.errors.UniqueViolation):  # the key still makes one row per shape
        conn.execute(
            "INSERT INTO event_shapes (client_id, event_type, events, first_seen_at, last_seen_at)"
            " VALUES (1, 'x', 1, now(), now()), (1, 'x', 1, now(), now())"
        )


def test_personal_data_never_reaches_the_table_or_the_examples(client, conn):
    send(client, BOUNCE)
    learn(conn)
    end_baseline(conn)
    smtp = "550 5.1.1 <jane.doe@example.org>: Recipient address rejected"
    send(client, bounced(20, reason=smtp, **{"jane.doe@example.org": 1, "info": {"Max": "x"}}))
    learn(conn)
    text = json.dumps([list(row) for row in conn.execute("TABLE event_shapes")], default=str)
    assert "jane" not in text and "example.org" not in text and "Max" not in text
    assert ("new_value", "bounce", "reason", "string", "(text)") in changes(conn)
    assert ("new_field", "bounce", "xxxx.xxx@xxxxxxx.xxx", "number", None) in changes(conn)


def test_a_new_field_in_several_kinds_and_a_documented_field_on_another_type(client, conn):
    send(client, opened(), BOUNCE)
    learn(conn)
    end_baseline(conn)
    send(client, opened(appVersion=7, created=1), opened(appVersion="7.1", created=2))
    send(client, opened(reason="other", created=3))  # a bounce's field, on an open
    learn(conn)
    found = changes(conn)
    assert ("new_field", "open", "appVersion", "number", None) in found
    assert ("new_field", "open", "appVersion", "string", None) in found
    assert ("new_field", "open", "reason", "string", None) in found
    signals = shapes.signals(conn)
    assert signals == {(CLIENT, "new_field"): 2}  # appVersion once, reason once


def test_a_held_horizon_holds_the_learned_time_back(client, conn, database_url):
    send(client, BOUNCE)
    learn(conn)
    with psycopg.connect(database_url) as held:  # a writer left open: the horizon stops here
        held.execute("SELECT pg_current_xact_id()")
        send(client, bounced(30))
        arrived = conn.execute("SELECT max(received_at) FROM events").fetchone()[0]
        shapes.learn(conn)
        assert shapes.learned_until(conn) <= arrived  # not counted, so not "learned"
    learn(conn)
    assert shapes.learned_until(conn) > arrived


def test_a_backlog_is_no_silence(conn):
    now = datetime.now(UTC)
    for day in range(0, 40):  # daily up to today
        insert_sent(conn, now - timedelta(days=40 - day), day)
    shapes.learn(conn, chunk_events=1, budget_seconds=0)  # one chunk: the oldest day only
    assert shapes.signals(conn) == {}  # behind, not silent
    learn(conn)
    assert shapes.signals(conn) == {}


def test_one_pass_a_minute_whatever_the_workers(client, conn):
    send(client, BOUNCE)
    first = learn(conn)
    send(client, bounced(40))
    assert shapes.learn(conn, min_interval=timedelta(seconds=55)).skipped
    assert not first.skipped


def test_junk_keys_are_bounded_in_the_database(client, conn, monkeypatch):
    monkeypatch.setattr(shapes.rules, "MAX_FIELDS_PER_TYPE", 20)
    send(client, opened())
    learn(conn)
    junk = [opened(created=n, **{f"k{n}_{i}": i for i in range(300)}) for n in range(5)]
    send(client, *junk)
    rows = conn.execute(shapes.COUNT_CHUNK, {
        "start": 0, "end": 2**62, "enumerations": list(shapes.rules.ENUMERATIONS),
        "value_pattern": shapes.rules.VALUE_PATTERN, "text": shapes.rules.TEXT,
        "max_field": 200, "max_clients": 100, "max_types": 100, "max_fields": 20,
        "max_values": 50,
    }).fetchall()  # fmt: skip
    fields = {row[2] for row in rows if row[2] is not None}
    assert len(fields) == 20 and {"type", "clientId", "created", "recipientId"} <= fields
    learn(conn)
    [(recorded,)] = conn.execute(
        "SELECT count(DISTINCT field) FROM event_shapes WHERE event_type = 'open'"
    ).fetchall()
    assert recorded == 20
