"""`receiver prune --require-export DIR` (and RECEIVER_PRUNE_REQUIRE_EXPORT for `receiver
maintain`): a month goes only once its export is verified; without the option, prune as ever."""

import sys
from datetime import UTC, datetime, timedelta

import pytest

from receiver.cli import main
from receiver.cli.maintain import export_guard
from receiver.export import month
from receiver.maintenance import retention
from receiver.storage import partitions

from support.export import NOVEMBER, OCTOBER, deliver, month_event

SEPTEMBER = datetime(2025, 9, 1, tzinfo=UTC)
NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)
KEEP = timedelta(days=400)  # horizon 2025-11-01 12:00: October is wholly older


def count(conn, since=SEPTEMBER, until=datetime(2025, 12, 1, tzinfo=UTC)):
    query = "SELECT count(*) FROM events WHERE created_at >= %s AND created_at < %s"
    return conn.execute(query, (since, until)).fetchone()[0]


def partition_names(conn):
    return {p.name for p in partitions.list_partitions(conn)}


def test_nothing_exported_nothing_goes(october, conn, tmp_path):
    report = retention.prune(conn, KEEP, now=NOW, keep_month=export_guard(tmp_path))
    assert report.dropped == [] and report.default_rows_deleted == 0
    assert [(m, why.split(":")[0]) for m, why in report.kept] == [
        (SEPTEMBER, "export not verified"),  # its stray row in the default partition
        (OCTOBER, "export not verified"),
        (NOVEMBER, "export not verified"),
    ]
    assert "not exported (no " in report.kept[1][1]
    assert count(conn) == 28 and "events_2025_10" in partition_names(conn)
    assert report.mailings_deleted == 0


def test_verified_months_go_and_the_rest_stays_whole(october, conn, tmp_path):
    for which in (SEPTEMBER, OCTOBER):
        month.export_month(conn, tmp_path, which)
    report = retention.prune(conn, KEEP, now=NOW, keep_month=export_guard(tmp_path))
    assert [name for name, _ in report.dropped] == ["events_2025_10"]
    assert [m for m, _ in report.kept] == [NOVEMBER]
    # September's stray row went; November's rows, older than the horizon too, stayed whole.
    assert report.default_rows_deleted == 1
    assert count(conn) == 4 and count(conn, since=NOVEMBER) == 4


def test_a_month_with_events_since_its_export_is_kept(october, client, conn, tmp_path):
    month.export_month(conn, tmp_path, OCTOBER)
    deliver(client, [month_event(OCTOBER, 200)])
    report = retention.prune(conn, KEEP, now=NOW, keep_month=export_guard(tmp_path), dry_run=True)
    assert report.dropped == []
    assert "23 rows exported, 24 in the database" in dict(report.kept)[OCTOBER]


def test_without_the_option_prune_is_unchanged(october, conn, tmp_path):
    assert export_guard(None) is None
    report = retention.prune(conn, KEEP, now=NOW)
    assert [name for name, _ in report.dropped] == ["events_2025_10"]
    assert report.kept == [] and report.default_rows_deleted == 5
    assert count(conn) == 0


@pytest.fixture
def cli_env(monkeypatch, database_url):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("RECEIVER_PRUNE_REQUIRE_EXPORT", raising=False)


def test_prune_command_refuses_an_unexported_month_and_drops_a_verified_one(
    october, conn, cli_env, tmp_path, capsys
):
    # The real clock: 30 days keeps far less than a year; 2025's months are all old enough.
    assert main(["prune", "--older-than", "30d", "--require-export", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"prune: kept 2025-10: export not verified: not exported (no {tmp_path}" in out
    assert "events_2025_10" in partition_names(conn)
    for which in ("2025-09", "2025-10", "2025-11"):
        assert main(["export", "--dir", str(tmp_path), "--month", which]) == 0
    capsys.readouterr()
    assert main(["prune", "--older-than", "30d", "--require-export", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "prune: dropped events_2025_10" in out and "kept 2025" not in out
    assert "events_2025_10" not in partition_names(conn) and count(conn) == 0


def test_the_setting_guards_maintain_as_well(october, conn, cli_env, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECEIVER_PRUNE_REQUIRE_EXPORT", str(tmp_path))
    monkeypatch.setenv("RECEIVER_RETENTION", "30d")
    assert main(["export", "--dir", str(tmp_path), "--month", "2025-09"]) == 0
    assert main(["maintain"]) == 0
    out = capsys.readouterr().out
    assert "prune: deleted 1 stray old event(s)" in out  # September's, exported
    assert "prune: kept 2025-10: export not verified" in out
    assert "prune: kept 2025-11: export not verified" in out
    assert count(conn) == 27 and "events_2025_10" in partition_names(conn)
    assert main(["prune", "--older-than", "30d", "--dry-run"]) == 0
    assert "prune: kept 2025-10" in capsys.readouterr().out  # the setting, for prune too


def test_require_export_without_pyarrow_is_one_line_and_status_2(
    cli_env, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert main(["prune", "--older-than", "30d", "--require-export", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'receiver[export]'" in err
