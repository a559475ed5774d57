"""Stopping gunicorn while a reader long-polls the change feed (receiver/web/gunicorn_conf.py,
post_worker_init): the long-poll answers at once with its empty page, and the stop takes no
longer than without it, not gunicorn's graceful_timeout (20 s) ending in a cut connection."""

import threading
import time

import requests
from prometheus_client.parser import text_string_to_metric_families

FEED_READER = ("crm", "feed-reader-pass")


def waiting_requests(server) -> float:
    text = requests.get(server.url + "/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        if family.name == "receiver_feed_waiting_requests":
            return sum(sample.value for sample in family.samples)
    return 0.0


def test_a_long_poll_answers_at_once_when_gunicorn_stops(gunicorn_factory, database_url):
    server = gunicorn_factory(
        {"DATABASE_URL": database_url, "RECEIVER_FEED_BASIC_AUTH": ":".join(FEED_READER)},
        workers=1,
    )
    url = server.url + "/feed/status-changes"
    after = requests.get(url, auth=FEED_READER, timeout=10).json()["next"]
    answer = {}

    def poll():
        params = {"after": after, "wait": 30}
        answer["response"] = requests.get(url, params=params, auth=FEED_READER, timeout=40)
        answer["at"] = time.monotonic()

    reader = threading.Thread(target=poll)
    reader.start()
    deadline = time.monotonic() + 5
    while waiting_requests(server) < 1:
        assert time.monotonic() < deadline, "the long-poll never waited"
        time.sleep(0.05)
    stopping = time.monotonic()

    assert server.stop() == 0
    stopped = time.monotonic()
    reader.join(10)

    assert stopped - stopping < 5, f"the stop took {stopped - stopping:.1f} s"
    response = answer["response"]
    assert answer["at"] - stopping < 2
    assert response.status_code == 200
    assert response.json()["changes"] == [] and response.json()["more"] is False
    assert int(response.json()["next"]) >= int(after)
