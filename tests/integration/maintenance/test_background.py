"""The web worker's background check and `receiver maintain`: the coming months are made."""

from dataclasses import replace
from datetime import UTC, datetime

import psycopg

from receiver.cli import main
from receiver.maintenance import background
from receiver.storage import partitions

from support import wait_until


def future_month_names():
    current = partitions.month_start(datetime.now(UTC))
    return [
        partitions.partition_name(partitions.add_months(current, k))
        for k in range(1, partitions.MONTHS_AHEAD + 1)
    ]


def drop_future_months(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        for name in future_month_names():
            partitions.drop_month(conn, name)


def names(database_url):
    with psycopg.connect(database_url) as conn:
        return {p.name for p in partitions.list_partitions(conn)}


def test_the_background_thread_makes_the_coming_months(config, database_url):
    drop_future_months(database_url)
    assert not set(future_month_names()) & names(database_url)
    thread = background.start(config, interval=3600)
    try:
        wait_until(lambda: set(future_month_names()) <= names(database_url), timeout=20)
    finally:
        thread.stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()


def test_the_background_thread_deletes_expired_delivery_digests(config, database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO deliveries (digest, events, counts, received_at) VALUES"
            " ('\\x01', 1, '{}', now() - interval '5 days'), ('\\x02', 1, '{}', now())"
        )
    thread = background.start(config, interval=3600)

    def digests():
        with psycopg.connect(database_url) as conn:
            return [bytes(d) for (d,) in conn.execute("SELECT digest FROM deliveries")]

    try:
        wait_until(lambda: digests() == [b"\x02"], timeout=20)
    finally:
        thread.stop.set()
        thread.join(timeout=5)


def test_the_background_check_survives_an_unreachable_database(config, caplog):
    unreachable = replace(config, database_url="postgresql://nobody@127.0.0.1:1/none")
    thread = background.start(unreachable, interval=3600)
    wait_until(lambda: "could not check the coming months" in caplog.text, timeout=20)
    thread.stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_maintain_command_makes_the_months_and_says_so(database_url, monkeypatch, capsys):
    drop_future_months(database_url)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("RECEIVER_RETENTION", "")
    assert main(["maintain"]) == 0
    out = capsys.readouterr().out
    assert f"partitions created: {', '.join(future_month_names())}" in out
    assert set(future_month_names()) <= names(database_url)
    assert main(["maintain"]) == 0
    assert "partitions created: none" in capsys.readouterr().out


def test_maintain_refuses_a_retention_inside_the_retry_window(database_url, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("RECEIVER_RETENTION", "3d")
    assert main(["maintain"]) == 2
    assert "refusing to keep less than 7 days" in capsys.readouterr().err
