"""Fixtures of the storage tests: a database as an older release left it."""

import uuid

import psycopg
import pytest

from receiver.storage import migrate

from support import admin_execute, with_database


@pytest.fixture
def database_at_version_2(server_url):
    """A database migrated up to 002, before events were partitioned."""
    name = f"receiver_v2_{uuid.uuid4().hex[:8]}"
    admin_execute(server_url, f'CREATE DATABASE "{name}"')
    url = with_database(server_url, name)
    with psycopg.connect(url) as conn:
        conn.execute(migrate.CREATE_LEDGER)
        for migration in migrate.load_migrations()[:2]:
            conn.execute(migration.sql)
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
    yield url
    admin_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
