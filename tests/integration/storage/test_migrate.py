"""Migrations (receiver.storage.migrate): a fresh database migrates to the expected schema, once,
even concurrently."""

import threading

import psycopg

from receiver.storage.events import EVENT_COLUMNS
from receiver.storage.migrate import load_migrations, migrate, pending

# The columns a fresh table must refuse NULL in; the rest of the list is the code's own.
NOT_NULL_EVENT_COLUMNS = {"event_key", "client_id", "type", "created_at", "received_at", "payload"}
EXPECTED_QUARANTINE_COLUMNS = {
    "id",
    "kind",
    "reason",
    "content",
    "content_sha256",
    "received_at",
    "last_received_at",
    "times_received",
    "resolved_at",
    "resolution",
}

EXPECTED_STATUS_CHANGE_COLUMNS = {
    "id",
    "position",
    "client_id",
    "recipient_id",
    "status",
    "previous_status",
    "status_at",
    "status_event_type",
    "mailing_id",
    "status_event_key",
    "changed_at",
}


def columns(conn, table):
    rows = conn.execute(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_name = %s",
        (table,),
    ).fetchall()
    return {name: (kind, nullable) for name, kind, nullable in rows}


def test_fresh_database_migrates_to_the_expected_schema(empty_database):
    applied = migrate(empty_database)
    assert [m.version for m in applied] == [m.version for m in load_migrations()]
    with psycopg.connect(empty_database) as conn:
        table = columns(conn, "events")
        # Exactly the columns the code writes (receiver.storage.events), with the same types,
        # plus received_at and xid (the feed's position), which the database fills in.
        written = {
            name: conn.execute("SELECT %s::regtype::text", (kind,)).fetchone()[0]
            for name, kind in EVENT_COLUMNS
        }
        assert {name: kind for name, (kind, _) in table.items()} == {
            **written,
            "received_at": "timestamp with time zone",
            "xid": "xid8",
        }
        assert {name for name, (_, null) in table.items() if null == "NO"} == NOT_NULL_EVENT_COLUMNS
        assert set(columns(conn, "quarantine")) == EXPECTED_QUARANTINE_COLUMNS
        unique = conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'events_key'"
        ).fetchone()[0]
        assert unique == "UNIQUE (client_id, type, created_at, event_key)"
        partitioned = conn.execute(
            "SELECT pg_get_partkeydef('events'::regclass), to_regclass('events_unpartitioned')"
        ).fetchone()
        assert partitioned == ("RANGE (created_at)", None)
        assert set(columns(conn, "status_changes")) == EXPECTED_STATUS_CHANGE_COLUMNS
        assert pending(conn) == []


def test_migrating_twice_applies_nothing_the_second_time(empty_database):
    migrate(empty_database)
    assert migrate(empty_database) == []


def test_concurrent_migrations_apply_each_file_once(empty_database):
    results, errors = [], []
    barrier = threading.Barrier(4)

    def run():
        barrier.wait()
        try:
            results.append(migrate(empty_database))
        except Exception as error:  # re-raised below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(len(r) for r in results) == [0, 0, 0, len(load_migrations())]
    with psycopg.connect(empty_database) as conn:
        recorded = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0]
    assert recorded == len(load_migrations())


def test_a_migrations_own_warning_reaches_the_caller(empty_database):
    """009 leaves a hand-made publication of its name as it is, and says so."""
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute("CREATE PUBLICATION receiver")
    warnings = []
    migrate(empty_database, warned=warnings.append)
    assert len(warnings) == 1
    assert warnings[0].startswith('publication "receiver" exists and differs')
    assert "publishes deletes makes `receiver maintain` fail" in warnings[0]
