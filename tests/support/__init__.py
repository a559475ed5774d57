"""Helpers shared by the tests (fixtures live in tests/conftest.py).

`from support import ...` works from every test folder: setup.cfg puts tests/ on sys.path.
Data and parsers that only some test files share live in this package's modules
(support.events, support.deploy).
"""

import base64
import http.client
import json
import os
import pathlib
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager

import psutil
import psycopg
import requests
from pgserver._commands import pg_ctl
from psycopg.conninfo import make_conninfo

from receiver import samples
from receiver.storage.embedded import start_embedded

ROOT = pathlib.Path(__file__).resolve().parents[2]
USER, PASSWORD = "campaign", "s3cret-pass"
# How production starts gunicorn (Procfile, deploy/systemd/receiver.service, `receiver serve`).
GUNICORN_CONFIG = "python:receiver.web.gunicorn_conf"


def basic(user=USER, password=PASSWORD):
    """An Authorization header for Basic Auth."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def sample(name) -> bytes:
    """A documented vendor payload shipped in receiver/samples/, as bytes."""
    return samples.read(name)


def event(kind="open", **fields):
    """A minimal valid event of `kind`; keyword arguments add or replace fields."""
    base = {"type": kind, "clientId": 123456789001, "created": 1564590054000}
    base.update(fields)
    return base


def body(*events) -> bytes:
    return json.dumps(list(events)).encode()


def post(client_or_url, data, headers=None, path="/webhook", **kwargs):
    """POST `data` to /webhook with Basic Auth (USER, PASSWORD) unless `headers` are given
    (`{}`: no credentials at all).

    `client_or_url` is a Flask test client, or the base URL of a running receiver
    (http://127.0.0.1:PORT), posted to with requests; keyword arguments go to either."""
    headers = basic() if headers is None else headers
    if isinstance(client_or_url, str):
        kwargs.setdefault("timeout", 15)
        return requests.post(client_or_url + path, data=data, headers=headers, **kwargs)
    return client_or_url.post(path, data=data, headers=headers, **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout=20.0, interval=0.05):
    """Poll `predicate` until it returns a truthy value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


class Gunicorn:
    """The receiver under real gunicorn (receiver.web.gunicorn_conf), as production runs it."""

    def __init__(self, env, workers=2, extra_args=(), port=None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, "RECEIVER_BASIC_AUTH": f"{USER}:{PASSWORD}", **env}
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            GUNICORN_CONFIG,
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(workers),
            *extra_args,
            "receiver:create_app()",
        ]
        self.process = subprocess.Popen(command, env=full_env, cwd=ROOT)
        wait_until(self._ready, timeout=30)

    def worker_pids(self):
        """The master's current worker processes."""
        return [child.pid for child in psutil.Process(self.process.pid).children()]

    def _ready(self):
        if self.process.poll() is not None:
            raise AssertionError(f"gunicorn exited with {self.process.returncode}")
        try:
            return requests.get(self.url + "/healthz", timeout=1).status_code == 200
        except requests.RequestException:  # refused, or accepted before a worker answers
            return False

    def post(self, data, headers=None, **kwargs):
        return post(self.url, data, headers, **kwargs)

    def stop(self):
        self.process.terminate()
        return self.process.wait(timeout=30)


class Client:
    """HTTP(S) from a chosen loopback source address (requests cannot pick one): loopback has
    many addresses, so one host plays Campaign, a stranger and a proxy. Header values may be
    bytes, sent as they are."""

    def __init__(self, port, source="127.0.0.1", cert=None, timeout=30):
        self.port, self.source, self.cert, self.timeout = port, source, cert, timeout

    def request(self, method, path, body=None, headers=None):
        if self.cert:
            context = ssl.create_default_context(cafile=str(self.cert))
            connection = http.client.HTTPSConnection(
                "127.0.0.1",
                self.port,
                context=context,
                source_address=(self.source, 0),
                timeout=self.timeout,
            )
        else:
            connection = http.client.HTTPConnection(
                "127.0.0.1", self.port, source_address=(self.source, 0), timeout=self.timeout
            )
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()


@contextmanager
def table_locked(url, *tables, release_after=None):
    """ACCESS EXCLUSIVE locks on `tables`, held by a connection of their own until the block
    ends, or `release_after` seconds after they were taken if that comes first."""
    held, release = threading.Event(), threading.Event()

    def hold():
        with psycopg.connect(url) as conn:
            conn.execute(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
            held.set()
            release.wait(release_after if release_after is not None else 60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10), f"could not lock {tables}"
        yield
    finally:
        release.set()
        holder.join()


class OwnedPostgres:
    """A PostgreSQL cluster this test may stop and start (never the shared server)."""

    def __init__(self, data_dir):
        self.server = start_embedded(data_dir, cleanup_mode="delete")
        self.info = self.server.get_postmaster_info()
        self.url = self.server.get_uri()

    def stop(self, mode="fast"):
        self._pg_ctl(["-w", "-m", mode, "stop"])

    def close(self):
        """Stop the cluster if it runs. pgserver's own clean-up only knows the first postmaster:
        after a restart it would delete the data directory under a running server."""
        status = subprocess.run(
            [str(self._bin("pg_ctl")), "-D", str(self.info.pgdata), "status"],
            capture_output=True,
            user=self.server.system_user,
        )
        if status.returncode == 0:
            self.stop("immediate")

    @staticmethod
    def _bin(name):
        from pgserver._commands import POSTGRES_BIN_PATH

        return POSTGRES_BIN_PATH / name

    def start(self):
        socket_option = f"-k {self.info.socket_dir}"
        log = str(self.info.pgdata / "log")
        self._pg_ctl(["-w", "-o", '-h ""', "-o", socket_option, "-l", log, "start"])

    def _pg_ctl(self, args):
        pg_ctl(args, pgdata=self.info.pgdata, user=self.server.system_user, timeout=30)


@contextmanager
def cloned_database(server_url, template, prefix):
    """A database of its own cloned from `template` (its URL), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin_execute(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield with_database(server_url, name)
    finally:
        admin_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def with_database(url, name):
    """The connection string `url` with its database replaced by `name`."""
    return make_conninfo(url, dbname=name)


def admin_execute(url, sql):
    """Run one statement outside a transaction (CREATE/DROP DATABASE)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)
