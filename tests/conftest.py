"""Real PostgreSQL for every test: TEST_DATABASE_URL when set, otherwise an embedded server.

A template database is migrated once per session and cloned per test (CREATE DATABASE ...
TEMPLATE), so each test starts from a fresh, fully migrated schema in tens of milliseconds.
"""

import os
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from receiver import create_app, db
from receiver.config import Config
from receiver.embedded import start_embedded
from receiver.migrate import migrate

from support import PASSWORD, USER, OwnedPostgres, admin_execute, with_database


@pytest.fixture(scope="session")
def server_url():
    """The PostgreSQL server the tests create their databases on."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    # Not under pytest's basetemp: concurrent pytest sessions prune each other's basetemp.
    data_dir = Path(tempfile.mkdtemp(prefix="receiver-test-pg-")) / "data"
    server = start_embedded(data_dir, cleanup_mode="delete")
    yield server.get_uri()


@pytest.fixture(scope="session")
def template_db(server_url):
    """A migrated database to clone; dropped at the end of the session."""
    name = f"receiver_template_{uuid.uuid4().hex[:8]}"
    admin_execute(server_url, f'CREATE DATABASE "{name}"')
    migrate(with_database(server_url, name))
    yield name
    admin_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(server_url, template_db):
    """A fresh migrated database for one test."""
    name = f"receiver_test_{uuid.uuid4().hex[:12]}"
    admin_execute(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield with_database(server_url, name)
    admin_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def config(database_url):
    return Config(database_url=database_url, basic_auth=((USER, PASSWORD),))


@pytest.fixture
def make_client(config):
    """Build a test client for the config with some fields replaced; pools closed afterwards."""
    apps = []

    def build(**changes):
        app = create_app(replace(config, **changes))
        apps.append(app)
        return app.test_client()

    yield build
    for app in apps:
        db.close_pool(app)


@pytest.fixture
def client(make_client):
    return make_client()


@pytest.fixture
def query(database_url):
    """Run SQL against the test database and return all rows."""

    def run(sql, params=None):
        with psycopg.connect(database_url) as conn:
            return conn.execute(sql, params).fetchall()

    return run


@pytest.fixture
def owned_postgres(tmp_path):
    """A cluster of the test's own, to stop and start (never the shared server)."""
    postgres = OwnedPostgres(tmp_path / "pg")
    yield postgres
    postgres.close()
