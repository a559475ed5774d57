"""Migrations: a fresh database migrates to the expected schema, once, even concurrently."""

import threading
import uuid

import psycopg
import pytest

from receiver.migrate import load_migrations, migrate, pending

from support import admin_execute, with_database

EXPECTED_EVENT_COLUMNS = {
    "event_key": ("text", "NO"),
    "event_id": ("text", "YES"),
    "client_id": ("bigint", "NO"),
    "type": ("text", "NO"),
    "created_at": ("timestamp with time zone", "NO"),
    "received_at": ("timestamp with time zone", "NO"),
    "mailing_id": ("bigint", "YES"),
    "user_list_id": ("bigint", "YES"),
    "subscription_id": ("bigint", "YES"),
    "recipient_id": ("text", "YES"),
    "mail_id": ("text", "YES"),
    "media_type": ("text", "YES"),
    "category": ("text", "YES"),
    "reason": ("text", "YES"),
    "threshold_exceeded": ("boolean", "YES"),
    "link": ("text", "YES"),
    "device": ("text", "YES"),
    "operating_system": ("text", "YES"),
    "browser": ("text", "YES"),
    "remote_address": ("text", "YES"),
    "payload": ("jsonb", "NO"),
}
EXPECTED_QUARANTINE_COLUMNS = {
    "id", "kind", "reason", "content", "content_sha256", "received_at", "last_received_at",
    "times_received", "resolved_at", "resolution",
}


@pytest.fixture
def empty_database(server_url):
    name = f"receiver_empty_{uuid.uuid4().hex[:12]}"
    admin_execute(server_url, f'CREATE DATABASE "{name}"')
    yield with_database(server_url, name)
    admin_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def columns(conn, table):
    rows = conn.execute(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_name = %s",
        (table,),
    ).fetchall()
    return {name: (kind, nullable) for name, kind, nullable in rows}


def test_migrations_are_numbered_without_gaps():
    versions = [m.version for m in load_migrations()]
    assert versions == list(range(1, len(versions) + 1))


def test_fresh_database_migrates_to_the_expected_schema(empty_database):
    applied = migrate(empty_database)
    assert [m.version for m in applied] == [m.version for m in load_migrations()]
    with psycopg.connect(empty_database) as conn:
        assert columns(conn, "events") == EXPECTED_EVENT_COLUMNS
        assert set(columns(conn, "quarantine")) == EXPECTED_QUARANTINE_COLUMNS
        unique = conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'events_key'"
        ).fetchone()[0]
        assert unique == "UNIQUE (client_id, type, event_key)"
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
