"""db.connect, the connection of the commands and of maintenance: the pool's TCP keepalives and
tcp_user_timeout unless the URL sets its own, and an optional statement_timeout, all in effect
on a real connection."""

import socket

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from receiver.storage import db


def client_options(conn) -> dict:
    """The libpq options the connection was made with (PQconninfo), as text."""
    return {option.keyword.decode(): (option.val or b"").decode() for option in conn.pgconn.info}


def test_keepalives_and_tcp_user_timeout_are_those_of_the_pool(database_url):
    with db.connect(database_url, "receiver test") as conn:
        options = client_options(conn)
        for name, value in db.TCP_DEFAULTS.items():
            assert options[name] == str(value), name
        assert options["connect_timeout"] == "5"
        # Unchanged by default: the server's own statement_timeout.
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == server_default(
            database_url, "statement_timeout"
        )
        assert conn.execute("SHOW TimeZone").fetchone()[0] == "UTC"


def server_default(url, name):
    with psycopg.connect(url) as conn:
        return conn.execute(f"SHOW {name}").fetchone()[0]


def test_the_kernel_keeps_the_keepalives_on_the_socket(database_url):
    with db.connect(database_url, "receiver test") as conn:
        sock = socket.socket(fileno=conn.pgconn.socket)  # the connection's own; detached below
        try:
            if sock.family == socket.AF_UNIX:
                pytest.skip("a Unix socket has no keepalives: set TEST_DATABASE_URL to a TCP host")
            option = lambda level, name: sock.getsockopt(level, name)  # noqa: E731
            assert option(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert option(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 10
            assert option(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 3
            assert option(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
            assert option(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 9000
        finally:
            sock.detach()


def test_what_the_url_sets_is_kept(database_url):
    url = make_conninfo(database_url, keepalives_idle=60, tcp_user_timeout=0, connect_timeout=7)
    with db.connect(url, "receiver test") as conn:
        options = client_options(conn)
        assert (options["keepalives_idle"], options["tcp_user_timeout"]) == ("60", "0")
        assert options["connect_timeout"] == "7"
        assert options["keepalives_count"] == str(db.TCP_DEFAULTS["keepalives_count"])


def test_a_statement_timeout_bounds_every_statement(database_url):
    with db.connect(database_url, "receiver bounded", statement_timeout_ms=300) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "300ms"
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(2)")
        # The server's own view of the session: the name and the setting both there.
        with psycopg.connect(database_url) as other:
            (name,) = other.execute(
                "SELECT application_name FROM pg_stat_activity WHERE pid = %s",
                (conn.info.backend_pid,),
            ).fetchone()
        assert name == "receiver bounded"


def test_the_lock_timeout_stays_as_it_was(database_url):
    with db.connect(database_url, "receiver test", lock_timeout_ms=1000) as conn:
        assert conn.execute("SHOW lock_timeout").fetchone()[0] == "1s"


def test_the_old_positional_call_still_works(database_url):
    with db.connect(database_url, "receiver test", 250) as conn:
        assert conn.execute("SHOW lock_timeout").fetchone()[0] == "250ms"
