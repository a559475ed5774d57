"""Several receivers, one PostgreSQL: the database's unique key, not any receiver's memory,
makes each event one row, whoever stores it first."""

import threading

import pytest

from receiver.simulate import deliver, make_plan, verify

from support import PASSWORD, USER, Gunicorn

pytestmark = pytest.mark.slow


def test_two_receivers_given_the_same_batches_at_once_store_each_event_once(database_url):
    first = Gunicorn({"DATABASE_URL": database_url}, workers=2)
    second = Gunicorn({"DATABASE_URL": database_url}, workers=2)
    try:
        plan = make_plan(6000, duplicates=0.2, seed=7)
        tallies = [None, None]

        def send(index, server):
            tallies[index] = deliver(
                plan,
                server.url + "/webhook",
                (USER, PASSWORD),
                concurrency=6,
                retry_delay=0.2,
                give_up_after=60,
            )

        threads = [threading.Thread(target=send, args=pair) for pair in enumerate((first, second))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        first.stop()
        second.stop()
    assert [t.gave_up for t in tallies] == [0, 0]
    assert all("500" not in map(str, t.statuses) for t in tallies)
    result = verify(plan, database_url)
    assert (result.expected, result.found, result.missing, result.duplicated) == (6000, 6000, 0, 0)
