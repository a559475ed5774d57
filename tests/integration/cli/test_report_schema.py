"""`receiver report schema` and the receiver_campaign_changes gauge: the issue's four changes
(a new type, a new field, `created` as a string, a new bounce reason) posted through the
webhook, learned by the workers' minutely upkeep, each shown once, then accepted."""

import json

import pytest
from prometheus_client import REGISTRY, generate_latest

from receiver.maintenance import background
from receiver.storage import db

from support import body, post, wait_until
from support.events import BOUNCE, OPEN

CLIENT = BOUNCE["clientId"]
NEWS = [
    {**BOUNCE, "id": "new-type", "type": "webinarregistration"},
    {**OPEN, "clientId": CLIENT, "appVersion": "7.1"},
    {**BOUNCE, "id": "created-text", "created": str(BOUNCE["created"] + 1)},
    {**BOUNCE, "id": "new-reason", "reason": "policy-related"},
]


@pytest.fixture
def upkeep(database_url):
    """One minute of a worker's upkeep: learn, then set the gauges; until every stored event
    is counted (another database's transaction on the server holds the horizon a moment)."""

    def connect():
        return db.connect(database_url, "test upkeep")

    def run():
        with connect() as conn:
            stored = conn.execute("SELECT max(xid)::text::bigint FROM events").fetchone()[0]

        def caught_up():
            assert not background.watch_shapes_quietly(connect, every=None)
            with connect() as conn:
                place = conn.execute("SELECT position::text::bigint FROM event_shapes_position")
                return place.fetchone()[0] > (stored or 0)

        wait_until(caught_up, interval=0.2)

    return run


def gauge(change) -> float | None:
    text = generate_latest(REGISTRY).decode()
    line = f'receiver_campaign_changes{{change="{change}",client_id="{CLIENT}"}} '
    values = [float(row[len(line) :]) for row in text.splitlines() if row.startswith(line)]
    return values[0] if values else None


def test_each_change_shows_once_in_the_report_and_the_metric_until_accepted(
    client, upkeep, report, database_url
):
    assert post(client, body(BOUNCE, OPEN | {"clientId": CLIENT})).status_code == 200
    upkeep()
    with db.connect(database_url, "test") as conn:  # the client's first day is over
        conn.execute("UPDATE event_shapes SET first_seen_at = first_seen_at - interval '2 days'")
    assert post(client, body(*NEWS)).status_code == 200
    upkeep()
    assert post(client, body(*NEWS)).status_code == 200  # a retry: nothing new
    upkeep()

    for change in ("new_type", "new_field", "kind_changed", "new_value"):
        assert gauge(change) == 1, change

    status, out = report("schema", "--client", str(CLIENT))
    assert status == 0
    review = out.split("\nwhat Campaign sends")[0]
    assert "to review (4)" in review
    for needle in ("new_type", "webinarregistration", "new_field", "appVersion", "kind_changed",
                   "policy-related"):  # fmt: skip
        assert needle in review
    assert review.count("example of") == 4
    assert "john.smith" not in out and "xxxx.xxxxx@xxxxxxx.xxx" in review

    status, out = report("schema", "--format", "json")
    rows = [json.loads(line) for line in out.splitlines()]
    created = [r for r in rows if r["field"] == "created"]
    assert {(r["kind"], r["status"]) for r in created} == {
        ("number", "documented"),
        ("string", "kind_changed"),
    }
    assert all(r["documented"] is (r["status"] == "documented") for r in rows)

    status, out = report("schema", "--accept")  # says what it did on stderr, then the rest
    assert status == 0 and "nothing to review" in out and "new_value (reviewed)" in out
    upkeep()
    assert [gauge(change) for change in ("new_type", "new_field", "kind_changed")] == [0, 0, 0]
    status, out = report("schema")
    assert "nothing to review" in out and "kind_changed (reviewed)" in out


def test_since_shows_only_what_is_new(client, upkeep, report):
    assert post(client, body(BOUNCE)).status_code == 200
    upkeep()
    status, out = report("schema", "--since", "1h", "--format", "json")
    assert status == 0 and out  # all first seen in the last hour
    status, out = report("schema", "--since", "2099-01-01", "--format", "json")
    assert status == 0 and out == ""


def test_before_any_pass_it_says_so(report):
    status, out = report("schema")
    assert status == 0 and "never (no pass has run yet)" in out and "(no rows)" in out
