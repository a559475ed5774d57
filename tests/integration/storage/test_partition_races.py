"""Creating a month's partition while batches write to that month (receiver.storage.partitions):
reproduced with two real connections, the writer's transaction open across the maintenance."""

import threading
import time
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from receiver.storage import partitions

from support import body, event, post

JANUARY_2028 = datetime(2028, 1, 1, tzinfo=UTC)
INSERT = """
INSERT INTO events (event_key, event_id, client_id, type, created_at, payload)
VALUES (%s, %s, 42, 'sent', %s, '{}')
"""


def insert(conn, key, day=15):
    conn.execute(INSERT, (key, key, JANUARY_2028.replace(day=day)))


def stray_event(key):
    """A webhook event of January 2028, a month with no partition yet."""
    created = int(JANUARY_2028.replace(day=20).timestamp() * 1000)
    return event("sent", id=key, created=created)


def placed(conn) -> dict:
    """{event_key: the table that holds it}."""
    rows = conn.execute("SELECT event_key, tableoid::regclass::text FROM events ORDER BY 1")
    return dict(rows.fetchall())


def in_thread(work):
    """Start `work()` in a thread; the thread, with `.result` or `.error` once it ends."""

    def run():
        try:
            thread.result = work()
        except Exception as error:  # handed to the test, which asserts on it
            thread.error = error

    thread = threading.Thread(target=run)
    thread.result = thread.error = None
    thread.start()
    return thread


def test_a_row_committed_while_the_month_is_being_attached_ends_in_its_partition(database_url):
    with (
        psycopg.connect(database_url, autocommit=True) as maintenance,
        psycopg.connect(database_url, autocommit=True) as writer,
    ):
        insert(writer, "stray-1")  # already in events_default, committed
        with writer.transaction():
            insert(writer, "stray-2")  # a batch in flight when maintenance starts
            creating = in_thread(lambda: partitions.create_month(maintenance, JANUARY_2028))
            # The old code moved stray-1 and then waited in ATTACH for this transaction; its
            # commit put a row of the month into events_default under ATTACH's nose, and ATTACH
            # failed with CheckViolation. Committing well within one lock_timeout reproduces it.
            time.sleep(0.1)
        creating.join(timeout=30)
        assert creating.error is None and creating.result is True
        assert placed(writer) == {"stray-1": "events_2028_01", "stray-2": "events_2028_01"}


def test_a_batch_waiting_while_the_month_is_attached_is_stored_in_the_new_partition(
    client, database_url
):
    with (
        psycopg.connect(database_url, autocommit=True) as maintenance,
        psycopg.connect(database_url, autocommit=True) as reader,
        psycopg.connect(database_url, autocommit=True) as writer,
    ):
        insert(writer, "stray-1")
        # A reader of the default partition keeps ATTACH waiting once the month's rows have
        # moved, with the default partition closed to new rows; a batch of the month arrives.
        with reader.transaction():
            reader.execute("SELECT count(*) FROM events_default").fetchone()
            creating = in_thread(lambda: partitions.create_month(maintenance, JANUARY_2028))
            time.sleep(0.1)
            writing = in_thread(lambda: post(client, body(stray_event("stray-2"))))
            time.sleep(0.1)
        creating.join(timeout=30)
        writing.join(timeout=30)
        assert creating.error is None and creating.result is True
        # PostgreSQL routed the waiting row by the partitions it saw before ATTACH, and refuses
        # it in events_default ("violates partition constraint"): a routing race, not bad
        # content. The receiver tries it again, and it is stored, not quarantined.
        assert writing.error is None and writing.result.status_code == 200
        assert writing.result.json["stored"] == 1
        assert placed(writer) == {"stray-1": "events_2028_01", "stray-2": "events_2028_01"}
        assert writer.execute("SELECT count(*) FROM quarantine").fetchone() == (0,)


def test_the_new_partition_adopts_its_indexes_instead_of_building_a_second_set(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        insert(conn, "stray-1")
        partitions.create_month(conn, JANUARY_2028)
        indexes = conn.execute(
            "SELECT count(*) FROM pg_index WHERE indrelid = 'events_2028_01'::regclass"
        ).fetchone()[0]
        parent = conn.execute(
            "SELECT count(*) FROM pg_index WHERE indrelid = 'events'::regclass"
        ).fetchone()[0]
        attached = conn.execute(
            "SELECT count(*) FROM pg_inherits i JOIN pg_index x ON x.indexrelid = i.inhrelid "
            "WHERE x.indrelid = 'events_2028_01'::regclass"
        ).fetchone()[0]
        comment = conn.execute("SELECT obj_description('events_2028_01'::regclass)").fetchone()
    assert indexes == parent == attached  # one index per parent index, each attached to it
    assert comment == (None,)


def test_an_interrupted_creation_is_redone_and_a_foreign_table_left_alone(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        insert(conn, "stray-1")
        bounds = (JANUARY_2028.isoformat(), datetime(2028, 2, 1, tzinfo=UTC).isoformat())
        with conn.transaction():  # the first step, then the process died
            partitions.prepare_table(conn, "events_2028_01", bounds)
        assert partitions.table_state(conn, "events_2028_01") == partitions.BEING_CREATED
        assert partitions.create_month(conn, JANUARY_2028) is True
        assert placed(conn) == {"stray-1": "events_2028_01"}

        # An operator's own table of a month's name (an archive, say) is not ours to take.
        conn.execute("CREATE TABLE events_2029_03 (note text)")
        assert partitions.create_month(conn, datetime(2029, 3, 1, tzinfo=UTC)) is False
        assert partitions.table_state(conn, "events_2029_03") == partitions.FOREIGN


def test_a_partition_bound_refusal_is_transient_and_a_named_check_is_content(database_url):
    from receiver.storage import db

    with psycopg.connect(database_url, autocommit=True) as conn:
        this_month = partitions.partition_name(partitions.month_start(datetime.now(UTC)))
        try:  # a row outside the partition's bound, as a stale routing puts it
            statement = sql.SQL(
                "INSERT INTO {} (event_key, client_id, type, created_at, payload) "
                "VALUES ('k', 1, 'sent', '1999-01-01', '{{}}')"
            )
            conn.execute(statement.format(sql.Identifier(this_month)))
        except psycopg.errors.CheckViolation as error:
            bound = error
        try:  # recipient_status's own CHECK on its status
            conn.execute(
                "INSERT INTO recipient_status (client_id, recipient_id, status, status_at, "
                "status_event_type, status_event_key, status_rank, changed_at) "
                "VALUES (1, 'r', 'bogus', now(), 'x', 'k', 1, now())"
            )
        except psycopg.errors.CheckViolation as error:
            named = error
    assert db.is_routing_race(bound) and not db.is_content_error(bound)
    assert not db.is_routing_race(named) and db.is_content_error(named)
