"""db.run_prepared, the request path's statements through libpq: prepared once per connection,
and every failure raised as the psycopg exception `execute` would raise, so that a content
error (quarantine), a dead connection (retry, then 503) and a missed deadline are still told
apart by the same tests as before."""

import psycopg
import pytest

from receiver.storage import db, deliveries


@pytest.fixture
def conn(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


def prepared_names(conn):
    rows = conn.execute("SELECT name FROM pg_prepared_statements").fetchall()
    return {name for (name,) in rows}


def test_a_statement_is_prepared_once_per_connection_and_answers(conn):
    for _ in range(3):
        result = db.run_prepared(conn, "SELECT %s::int + 1, '%%'", [b"41"], (0,))
        assert (result.get_value(0, 0), result.get_value(0, 1)) == (b"42", b"%")
    assert len({n for n in prepared_names(conn) if n.startswith("receiver_")}) == 1


def test_a_bytea_parameter_goes_binary(conn):
    digest = bytes(range(32))
    result = db.run_prepared(conn, "SELECT length(%s), %s = %s", [digest] * 3, (db.BYTEA,) * 3)
    assert (result.get_value(0, 0), result.get_value(0, 1)) == (b"32", b"t")


def test_a_refused_value_raises_its_sqlstate_class_a_content_error(conn):
    with pytest.raises(psycopg.errors.InvalidTextRepresentation) as raised:
        db.run_prepared(conn, "SELECT %s::boolean", [b"perhaps"], (0,))
    assert db.is_content_error(raised.value)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE  # usable again
    assert db.run_prepared(conn, "SELECT 1", [], ()).get_value(0, 0) == b"1"


def test_a_connection_gone_under_the_call_is_an_operational_error(conn, database_url):
    pid = conn.info.backend_pid
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(psycopg.OperationalError):
        db.run_prepared(conn, "SELECT 1", [], ())
    assert conn.closed  # the pool discards it
    with pytest.raises(psycopg.OperationalError):  # and it is never used again
        db.run_prepared(conn, "SELECT 1", [], ())


def test_an_unknown_digest_is_no_delivery(conn):
    assert deliveries.find_on(conn, b"\0" * 32) is None
