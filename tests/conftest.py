"""Fixtures and the folder rules of the suite.

tests/unit/ runs without any database, tests/integration/ against real PostgreSQL through the
fixtures below, tests/system/ with real processes (gunicorn, nginx, Prometheus, clusters of
their own). Each test is marked `unit`, `integration` or `system` by its folder, and every system
test is also `slow`; a unit test that asks for a database fixture fails.

Real PostgreSQL: TEST_DATABASE_URL when set, otherwise an embedded server. A template database
is migrated once per session and cloned per test (CREATE DATABASE ... TEMPLATE), so each test
starts from a fresh, fully migrated schema in tens of milliseconds.
"""

import contextlib
import os
import queue
import shutil
import tempfile
import threading
import uuid
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from receiver import create_app
from receiver.config import Config
from receiver.storage import db
from receiver.storage.embedded import start_embedded
from receiver.storage.migrate import migrate

from support import PASSWORD, USER, OwnedPostgres, admin_execute, with_database

TESTS = Path(__file__).resolve().parent
KINDS = ("unit", "integration", "system")
# Fixtures that reach a PostgreSQL server (the shared one or a cluster of the test's own). The
# check looks at every fixture a test uses, directly or through others: a test-local fixture built
# on database_url (a pool, a shared client) is caught through database_url.
DATABASE_FIXTURES = frozenset({
    "server_url", "template_db", "database_url", "config", "make_client", "client", "query",
    "pool", "owned_postgres", "databases",
})  # fmt: skip


def kind_of(item) -> str | None:
    """`unit`, `integration` or `system`: the test's top folder under tests/."""
    try:
        top = item.path.relative_to(TESTS).parts[0]
    except ValueError:  # a test outside tests/
        return None
    return top if top in KINDS else None


def pytest_collection_modifyitems(items):
    for item in items:
        kind = kind_of(item)
        if kind is None:
            continue
        item.add_marker(kind)
        if kind == "system":
            item.add_marker("slow")
        if "server_url" not in item.fixturenames:
            # Never on the server TEST_DATABASE_URL names (its own cluster, or no database at
            # all): the same run whatever that says, so CI's second pass leaves it out.
            item.add_marker("any_server")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Fail a unit test that uses a database fixture, before any fixture (or server) starts."""
    if kind_of(item) == "unit":
        used = sorted(DATABASE_FIXTURES.intersection(item.fixturenames))
        if used:
            pytest.fail(
                f"{item.nodeid}: a unit test uses no database, but this one requests "
                f"{', '.join(used)}; move it to tests/integration/",
                pytrace=False,
            )


@pytest.fixture(scope="session")
def server_url():
    """The PostgreSQL server the tests create their databases on."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    # Not under pytest's basetemp: concurrent pytest sessions prune each other's basetemp.
    base = Path(tempfile.mkdtemp(prefix="receiver-test-pg-"))
    server = start_embedded(base / "data", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()  # stops the server and deletes its data directory
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(server_url):
    """A migrated database to clone; dropped at the end of the session."""
    name = f"receiver_template_{uuid.uuid4().hex[:8]}"
    admin_execute(server_url, f'CREATE DATABASE "{name}"')
    migrate(with_database(server_url, name))
    yield name
    admin_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Databases:
    """Each test's database cloned ahead, while the test before it runs, and dropped after it,
    in threads of their own: a test waits for neither (a clone and a drop on fresh connections,
    in line, were a third of the suite's time)."""

    AHEAD = 2  # clones kept ready

    def __init__(self, server_url, template):
        self.server_url, self.template = server_url, template
        self.ready = queue.Queue(maxsize=self.AHEAD)
        self.drops = queue.Queue()
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self.clone_ahead, daemon=True),
            threading.Thread(target=self.drop_queued, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def take(self) -> str:
        """The name of a fresh clone of the template (an error of the clone raised here)."""
        name = self.ready.get()
        if isinstance(name, Exception):
            raise name
        return name

    def drop_later(self, name):
        self.drops.put(name)

    def clone_ahead(self):
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            while not self.stopping.is_set():
                name = f"receiver_test_{uuid.uuid4().hex[:12]}"
                try:
                    conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
                except psycopg.Error as error:
                    self.ready.put(error)
                    return
                self.ready.put(name)  # waits while AHEAD clones are ready

    def drop_queued(self):
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            while (name := self.drops.get()) is not None:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self):
        self.stopping.set()
        made = []
        while self.threads[0].is_alive():  # unblock the cloner, and drop what it made
            with contextlib.suppress(queue.Empty):
                made.append(self.ready.get(timeout=0.1))
        while not self.ready.empty():
            made.append(self.ready.get())
        for name in made:
            if isinstance(name, str):  # not a clone's error
                self.drops.put(name)
        self.drops.put(None)
        self.threads[1].join()


@pytest.fixture(scope="session")
def databases(server_url, template_db):
    manager = Databases(server_url, template_db)
    yield manager
    manager.close()  # before the template and the server go (fixtures end in reverse order)


@pytest.fixture
def database_url(server_url, template_db, databases):
    """A fresh migrated database for one test."""
    name = databases.take()
    yield with_database(server_url, name)
    databases.drop_later(name)


@pytest.fixture
def empty_database(server_url):
    """A database with nothing in it, not even migrations."""
    name = f"receiver_empty_{uuid.uuid4().hex[:12]}"
    admin_execute(server_url, f'CREATE DATABASE "{name}"')
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
def owned_postgres():
    """A cluster of the test's own, to stop and start (never the shared server).

    Not under pytest's tmp_path: the cluster runs as another user (pgserver's), and a second
    pytest session on the machine resets the basetemp's permissions, locking that user out."""
    directory = Path(tempfile.mkdtemp(prefix="receiver-owned-pg-"))
    postgres = OwnedPostgres(directory / "pg")
    yield postgres
    postgres.close()
    shutil.rmtree(directory, ignore_errors=True)
