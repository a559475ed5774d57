"""`receiver maintain`: every step runs even when another fails, and the failure is said, with a
non-zero exit status. The failure is a real one: a month whose ATTACH cannot get its lock."""

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from receiver.cli import main
from receiver.maintenance import tasks
from receiver.storage import partitions

from support import body, event, post

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def millis(moment):
    return (moment - EPOCH) // timedelta(milliseconds=1)


@pytest.fixture
def attach_blocked(database_url, monkeypatch):
    """A long report reading the default partition: ATTACH cannot get its exclusive lock, and
    gives up after two short tries instead of twenty."""
    monkeypatch.setattr(partitions, "LOCK_ATTEMPTS", 2)
    with psycopg.connect(database_url) as reader:
        reader.execute("SELECT count(*) FROM events_default").fetchone()  # holds its lock
        yield
        reader.rollback()


def expired_digest(conn):
    conn.execute(
        "INSERT INTO deliveries (digest, events, counts, received_at) "
        "VALUES ('\\x01', 1, '{}', now() - interval '30 days')"
    )


def test_a_failing_step_holds_back_none_of_the_others(client, database_url, attach_blocked):
    now = datetime(2030, 1, 10, tzinfo=UTC)
    post(client, body(event("sent", created=millis(datetime(2030, 6, 15, tzinfo=UTC)), id="s")))
    with psycopg.connect(database_url, autocommit=True) as conn:
        expired_digest(conn)
        report = tasks.maintain(conn, keep=timedelta(days=400), now=now)
        digests = conn.execute("SELECT count(*) FROM deliveries WHERE digest = '\\x01'").fetchone()
    failed = dict(report.failed)
    # DETACH needs the default partition's lock too: retention ran, and failed the same way.
    assert set(failed) == {"partitions", "stray events of events_2030_06", "retention"}
    assert all("lock timeout" in reason for reason in failed.values())
    # The steps between ran all the same: the digest expired.
    assert report.deliveries_deleted >= 1 and digests == (0,)
    assert not report.ok


def test_the_command_names_the_failed_step_and_exits_1(
    client, database_url, attach_blocked, monkeypatch, capsys
):
    soon = partitions.add_months(partitions.month_start(datetime.now(UTC)), 6)
    post(client, body(event("sent", created=millis(soon + timedelta(days=3)), id="s")))
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["maintain"]) == 1
    err = capsys.readouterr().err
    assert f"maintain: FAILED stray events of {partitions.partition_name(soon)}" in err
    assert "lock timeout" in err


def test_a_clean_pass_exits_0(database_url, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["maintain"]) == 0
    assert "FAILED" not in capsys.readouterr().err


def test_the_maintenance_connection_bounds_its_statements_and_watches_its_path(
    database_url, monkeypatch
):
    from receiver.cli import maintain as command

    monkeypatch.setenv("DATABASE_URL", database_url)
    with command.connection() as conn:
        timeout = conn.execute("SHOW statement_timeout").fetchone()[0]
        parameters = conn.info.get_parameters()
    assert timeout == "10min"
    assert (parameters["keepalives"], parameters["tcp_user_timeout"]) == ("1", "9000")


def test_maintain_every_outlives_a_database_that_is_away(tmp_path):
    """A Procfile process: the database away at a pass is a failed pass, not a dead process."""
    import os
    import subprocess
    import sys

    from support import ROOT, free_port, wait_until

    env = {**os.environ, "DATABASE_URL": f"postgresql://u:s3cret@127.0.0.1:{free_port()}/x"}
    log = tmp_path / "stderr"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "receiver", "maintain", "--every", "60"],
            env=env, cwd=ROOT, stderr=stderr, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        wait_until(lambda: "pass failed, next in 60 s" in log.read_text(), timeout=30)
        assert process.poll() is None  # still there for the next pass
        assert "s3cret" not in log.read_text()
    finally:
        process.kill()
        process.wait()
