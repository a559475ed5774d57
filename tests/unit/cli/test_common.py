"""What the commands share (receiver.cli.common): naming a database without its password, and
telling a connection failure from a failed statement."""

import psycopg
import pytest

from receiver.cli.common import (
    DEVELOPMENT_DATABASE,
    CommandError,
    command_database,
    connect_timeout,
    database_address,
    diagnose,
    is_connection_failure,
    server_said,
)
from receiver.config import ConfigError


@pytest.mark.parametrize(
    "url, address",
    [
        ("postgresql://u:s3cret@db.example.com:6432/receiver", "db.example.com:6432/receiver"),
        ("postgresql://u:s3cret@db.example.com/receiver", "db.example.com:5432/receiver"),
        ("postgresql://u:s3cret@a,b:5433/receiver", "a:5432,b:5433/receiver"),
        ("postgresql://u:s3cret@a,b/receiver", "a:5432,b:5432/receiver"),
        ("postgresql://u:s3cret@a:1,b:2/receiver", "a:1,b:2/receiver"),
        ("host=db user=u password=s3cret dbname=r", "db:5432/r"),
        ("postgresql:///r?host=/run/pg", "/run/pg:5432/r"),
        ("postgresql://u:s3cret@[::1]:5432/r", "::1:5432/r"),
    ],
)
def test_a_database_is_named_by_host_port_and_name_never_its_password(url, address):
    assert database_address(url) == address


def test_a_malformed_url_is_refused_without_quoting_it():
    with pytest.raises(CommandError) as refused:
        database_address("postgresql://u:s3cret@host:5432/db?no_such_option=1 garbage")
    assert "s3cret" not in str(refused.value)
    assert str(refused.value).startswith("DATABASE_URL is not a PostgreSQL URL")


def test_the_url_or_the_environment_sets_the_connect_timeout(monkeypatch):
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    assert connect_timeout("postgresql://h/d") == 5
    assert connect_timeout("postgresql://h/d?connect_timeout=30") == 30
    assert connect_timeout("postgresql://h/d?connect_timeout=1") == 2  # libpq's minimum
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "12")
    assert connect_timeout("postgresql://h/d") == 12


def test_a_development_database_that_refuses_is_a_stopped_serve():
    error = psycopg.OperationalError("connection failed: ... No such file or directory")
    cause, hint = diagnose(error, DEVELOPMENT_DATABASE)
    assert cause == "it is not running"
    assert "start `receiver serve`" in hint


def test_the_server_says_one_line_without_fatal():
    text = (
        'connection failed: connection to server at "h", port 5432 failed: FATAL:  '
        "sorry, something\n\tmore"
    )
    assert server_said(text) == "sorry, something more"


@pytest.mark.parametrize(
    "error, failure",
    [
        (psycopg.OperationalError("connection failed"), True),
        (psycopg.errors.ConnectionTimeout("timeout expired"), True),
        (psycopg.errors.InvalidPassword("password authentication failed"), True),
        (psycopg.errors.InvalidCatalogName('database "x" does not exist'), True),
        (psycopg.errors.AdminShutdown("terminating connection"), True),
        (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"), False),
        (psycopg.errors.LockNotAvailable("could not obtain lock"), False),
        (psycopg.errors.UniqueViolation("duplicate key"), False),
    ],
)
def test_a_connection_failure_is_told_from_a_failed_statement(error, failure):
    assert is_connection_failure(error) is failure


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://user:p@ss@db.example/receiver",  # libpq: host "ss@db.example"
        "postgresql://user:pa/ss@db.example/receiver",  # libpq: port "pa", the rest a path
        "postgres://user:p@ss:w@rd@db.example:5432/receiver",
    ],
)
def test_a_password_with_a_raw_at_or_slash_is_refused_without_showing_it(url):
    with pytest.raises(CommandError) as refused:
        database_address(url)
    message = str(refused.value)
    assert not any(secret in message for secret in ("p@ss", "pa/ss", "ss@db", "w@rd"))
    assert "percent-encoded" in message


def test_an_encoded_password_and_an_at_in_the_query_are_fine():
    assert database_address("postgresql://u:p%40ss@db/r") == "db:5432/r"
    assert database_address("postgresql://db/r?user=me@example.com") == "db:5432/r"


def test_the_commands_use_the_maintenance_url_and_refuse_a_transaction_pooler_alone():
    direct = "postgresql://owner@db:5432/receiver"
    pooled = {"DATABASE_URL": "postgresql://web@pgbouncer:6432/receiver"}
    assert command_database(pooled) == (pooled["DATABASE_URL"], "DATABASE_URL")
    with_direct = {**pooled, "RECEIVER_MAINTENANCE_DATABASE_URL": direct}
    assert command_database(with_direct) == (direct, "RECEIVER_MAINTENANCE_DATABASE_URL")
    behind_pooler = {**pooled, "RECEIVER_DATABASE_POOLER": "transaction"}
    with pytest.raises(ConfigError, match="set RECEIVER_MAINTENANCE_DATABASE_URL"):
        command_database(behind_pooler)
    both = {**behind_pooler, "RECEIVER_MAINTENANCE_DATABASE_URL": direct}
    assert command_database(both)[0] == direct


def test_the_commands_read_the_database_url_from_its_secret_file(tmp_path):
    """`kubectl exec … receiver report` in a pod that has DATABASE_URL_FILE, not DATABASE_URL."""
    secret = tmp_path / "database-url"
    secret.write_text("postgresql://u:s3cret@db:5432/receiver\n")
    env = {"DATABASE_URL_FILE": str(secret)}
    assert command_database(env) == ("postgresql://u:s3cret@db:5432/receiver", "DATABASE_URL")
