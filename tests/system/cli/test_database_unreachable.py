"""Every command, as a real process, when its database cannot be reached: one line on stderr
with the cause and what to do, exit status 2, no traceback, never the password."""

import os
import socket
import subprocess
import sys
import time

import click
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from receiver.cli import cli

from support import free_port

SECRET = "pw-that-must-not-show"

# What each command that touches the database needs to get that far ({port}: a free port,
# {dir}: a folder of the test's own). A new command fails test_every_command_is_covered until
# it is added here or to NOT_COVERED.
ARGS = {
    ("serve",): ["--bind", "127.0.0.1:{port}"],
    ("migrate",): [],
    ("maintain",): [],
    ("prune",): ["--older-than", "400d"],
    ("partitions",): [],
    ("quarantine", "list"): [],
    ("quarantine", "show"): ["1"],
    ("quarantine", "replay"): [],
    ("simulate",): ["--verify", "--events", "10", "--user", "u", "--password", "p"],
    ("psql",): ["-c", "SELECT 1"],
    ("report", "mailings"): [],
    ("report", "mailing"): ["1"],
    ("report", "links"): ["1"],
    ("report", "recipients"): [],
    ("report", "suppressions"): ["--since", "1d"],
    ("report", "dispatch"): [],
    ("report", "schema"): [],
    ("feed", "status-changes"): [],
    ("feed", "events"): [],
    ("export",): ["--month", "2020-01", "--dir", "{dir}"],
    ("export", "verify"): ["--month", "2020-01", "--database", "--dir", "{dir}"],
}
# Campaign's REST API is what these talk to; setup and status look into the database only
# where they can, and print why not when they cannot (receiver.cli.campaign._ledger).
CAMPAIGN_API = "talks to Campaign's REST API; the database is optional"
NOT_COVERED = {
    ("campaign", "webhooks", name): CAMPAIGN_API
    for name in ("list", "create", "update", "verify", "activate", "deactivate", "delete")
} | {("campaign", name): CAMPAIGN_API for name in ("setup", "status", "teardown")}


def command_paths(group, prefix=()):
    """Every command of the click group, as the words that run it."""
    paths = []
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        if isinstance(command, click.Group):
            if command.invoke_without_command:
                paths.append(path)  # the group runs on its own too (export --month)
            paths += command_paths(command, path)
        else:
            paths.append(path)
    return paths


def receiver(path, database_url, tmp_path, timeout=60):
    """`python -m receiver PATH ARGS` with DATABASE_URL; (status, stdout, stderr, seconds)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "RECEIVER_"))}
    env.pop("PORT", None)
    env.update(
        DATABASE_URL=database_url,
        RECEIVER_BASIC_AUTH="campaign:basic-secret",
        RECEIVER_STATE_DIR=str(tmp_path / "state"),
    )
    words = {"port": str(free_port()), "dir": str(tmp_path / "export")}
    args = [arg.format(**words) for arg in ARGS[path]]
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "receiver", *path, *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result.returncode, result.stdout, result.stderr, time.monotonic() - started


def one_clean_line(status, stdout, stderr) -> str:
    """The single line a failed start must print, checked for what it must never show."""
    assert status == 2, stdout + stderr
    assert "Traceback" not in stdout + stderr
    assert SECRET not in stdout + stderr
    [line] = stderr.splitlines()
    assert line.startswith("receiver: ")
    return line


def test_every_command_is_covered():
    paths = set(command_paths(cli))
    assert paths - set(ARGS) - set(NOT_COVERED) == set(), "add them to ARGS or NOT_COVERED"
    assert set(ARGS) | set(NOT_COVERED) <= paths, "commands that are no more"


@pytest.mark.parametrize(
    "path", [p for p in command_paths(cli) if p not in NOT_COVERED], ids=" ".join
)
def test_a_database_that_refuses_connections_is_one_line(path, tmp_path):
    port = free_port()
    url = f"postgresql://receiver:{SECRET}@127.0.0.1:{port}/receiver"
    status, stdout, stderr, seconds = receiver(path, url, tmp_path)
    line = one_clean_line(status, stdout, stderr)
    assert stdout == ""
    assert f"127.0.0.1:{port}/receiver" in line
    assert "connection refused" in line
    assert "start PostgreSQL, or correct DATABASE_URL" in line
    assert seconds < 20


def silent_server():
    """A socket that accepts connections (the kernel's backlog) and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    return server


@pytest.fixture
def urls(server_url):
    """DATABASE_URLs that fail in each way, by name: (url, what the line must say)."""
    given = conninfo_to_dict(server_url)
    with silent_server() as silent:
        port = silent.getsockname()[1]
        yield {
            "unknown host": (
                f"postgresql://receiver:{SECRET}@no-such-host.invalid:5432/receiver",
                "no-such-host.invalid:5432/receiver (DATABASE_URL): unknown host name",
            ),
            "timeout": (
                f"postgresql://receiver:{SECRET}@127.0.0.1:{port}/receiver?connect_timeout=2",
                "no answer within 2 s",
            ),
            "no such user": (
                make_conninfo(**{**given, "user": "no_such_role", "password": SECRET}),
                "the server knows no such user: correct the user in DATABASE_URL",
            ),
            "no such database": (
                make_conninfo(**{**given, "dbname": "no_such_database", "password": SECRET}),
                "no such database: create it",
            ),
        }


@pytest.mark.parametrize("kind", ["unknown host", "timeout", "no such user", "no such database"])
@pytest.mark.parametrize("path", [("serve",), ("migrate",), ("maintain",), ("report", "mailings")])
def test_every_kind_of_unreachable_database_is_one_line(path, kind, urls, tmp_path):
    url, expected = urls[kind]
    status, stdout, stderr, seconds = receiver(path, url, tmp_path)
    line = one_clean_line(status, stdout, stderr)
    assert expected in line
    assert seconds < 20


def test_serve_does_not_wait_for_ever_for_a_silent_database(tmp_path):
    with silent_server() as silent:
        url = f"postgresql://receiver:{SECRET}@127.0.0.1:{silent.getsockname()[1]}/receiver"
        status, stdout, stderr, seconds = receiver(("serve",), url, tmp_path, timeout=30)
    line = one_clean_line(status, stdout, stderr)
    assert "no answer within 5 s" in line  # CONNECT_TIMEOUT, as libpq alone would wait for ever
    assert seconds < 20
