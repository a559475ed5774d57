"""Connection options the pool adds to DATABASE_URL, and the pool's reconnection backoff."""

from receiver.config import load_config
from receiver.storage import db


def kwargs_for(url):
    return db.connection_kwargs(load_config({"DATABASE_URL": url}))


def test_keepalives_and_timeouts_are_added_to_a_plain_url():
    kwargs = kwargs_for("postgresql://u@db.example/receiver")
    assert kwargs == {**db.TCP_DEFAULTS, "connect_timeout": 2, "application_name": "receiver"}


def test_what_the_url_sets_is_never_overridden():
    url = (
        "postgresql://u@h1,h2/receiver?target_session_attrs=read-write&keepalives_idle=60"
        "&tcp_user_timeout=0&connect_timeout=7&application_name=mine"
    )
    kwargs = kwargs_for(url)
    assert not {"keepalives_idle", "tcp_user_timeout", "connect_timeout"} & kwargs.keys()
    assert kwargs["application_name"] == "mine"
    assert kwargs["keepalives_count"] == db.TCP_DEFAULTS["keepalives_count"]


def test_reconnection_backoff_is_capped():
    attempt = db.CappedBackoff(timeout=float("inf"))
    for now in range(10):
        attempt.update_delay(float(now))
    assert attempt.delay == db.CappedBackoff.MAX_DELAY


def test_the_pool_internals_the_capped_backoff_relies_on_are_there():
    import inspect

    import psycopg_pool

    parameters = inspect.signature(psycopg_pool.ConnectionPool._add_connection).parameters
    assert list(parameters)[:3] == ["self", "attempt", "growing"]
