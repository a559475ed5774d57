"""A month exported, then pruned: the export keeps every event it has, whatever the database has
left. Events stored for the month after the prune (a replay from quarantine) are added as late
parts, numbered on after the final one; the parts there are never written again, and a part
that is damaged is refused rather than written again with fewer rows."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from receiver.cli import main
from receiver.cli.maintain import export_guard
from receiver.export import ExportError, month, parts
from receiver.maintenance import retention
from receiver.storage import partitions

from support.export import (
    NOVEMBER,
    OCTOBER,
    database_rows,
    deliver,
    file_rows,
    folder_state,
    month_event,
)

PRUNE = ["prune", "--older-than", "30d", "--require-export"]  # 2025's months are old enough


def export(conn, root, which=OCTOBER, rows_per_file=5, **kwargs):
    return month.export_month(conn, root, which, rows_per_file=rows_per_file, **kwargs)


def stored(conn, which=OCTOBER):
    query = "SELECT count(*) FROM events WHERE created_at >= %s AND created_at < %s"
    return conn.execute(query, (which, partitions.add_months(which, 1))).fetchone()[0]


def forget(conn, which=OCTOBER):
    """What a prune does to a month: its rows leave the database (partition and default)."""
    end = partitions.add_months(which, 1)
    conn.execute("DELETE FROM events WHERE created_at >= %s AND created_at < %s", (which, end))


def times(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


@pytest.fixture
def cli_env(monkeypatch, database_url):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("RECEIVER_PRUNE_REQUIRE_EXPORT", raising=False)


@pytest.fixture
def run(cli_env, capsys):
    """`receiver ARGS`: (exit status, stdout, stderr)."""

    def invoke(*args):
        status = main([str(arg) for arg in args])
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return invoke


def test_an_event_stored_after_the_prune_is_added_and_the_archive_kept_whole(
    october, client, conn, run, tmp_path
):
    for which in ("2025-09", "2025-10", "2025-11"):
        assert run("export", "--dir", tmp_path, "--month", which, "--rows-per-file", 5)[0] == 0
    folder = month.folder_of(tmp_path, OCTOBER)
    archived, archived_times = folder_state(folder), times(folder)
    exported = file_rows(sorted(folder.glob("part-*.parquet")))
    status, out, _ = run(*PRUNE, tmp_path)
    assert status == 0 and "prune: dropped events_2025_10" in out and stored(conn) == 0
    # A replay from quarantine: an October event, stored after its month was dropped, whose key
    # sorts between the keys of the exported parts (client 1001, "sent", October 9th).
    deliver(client, [month_event(OCTOBER, 200)])
    assert stored(conn) == 1

    status, out, _ = run(*PRUNE, tmp_path)
    assert status == 0
    assert (
        "prune: kept 2025-10: export not verified: 1 event(s) in the database are in no part "
        "of the export: stored since the month was pruned (23 rows exported, 1 in the "
        "database); `receiver export --month 2025-10` adds them in a part of their own, the "
        "parts there stay as they are\n"
    ) in out
    assert stored(conn) == 1  # kept until it is exported

    status, out, _ = run("export", "--dir", tmp_path, "--month", "2025-10", "--rows-per-file", 5)
    assert status == 0
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("export: wrote part-00005.parquet (1 rows, ")
    assert lines[1] == (
        "export: 2025-10: pruned since its export, 1 of its events left in the database: 1 of "
        "them added in late part(s), the other parts unchanged: 6 part(s), 24 rows"
    )
    after = folder_state(folder)
    assert {name: after[name] for name in archived} == archived
    assert {name: t for name, t in times(folder).items() if name in archived} == archived_times
    assert set(after) - set(archived) == {"part-00005.parquet", "_part-00005.json"}
    late = json.loads(after["_part-00005.json"])
    assert late["rows"] == 1 and late["source"]["late"] is True
    assert late["source"]["month"] == "2025-10"
    assert file_rows([folder / "part-00005.parquet"]) == database_rows(conn, OCTOBER)
    assert file_rows(sorted(folder.glob("part-*.parquet")))[:23] == exported

    status, out, _ = run("export", "verify", "--dir", tmp_path, "--month", "2025-10", "--database")
    assert (status, out) == (
        0,
        "verify: 2025-10 ok: 6 part(s), 24 rows (pruned: 1 of its events left in the database)\n",
    )
    status, out, _ = run("export", "--dir", tmp_path, "--month", "2025-10")
    assert status == 0 and out == (
        "export: 2025-10: already exported (pruned since its export, 1 of its events left in "
        "the database; none missing from the export): 6 part(s), 24 rows\n"
    )
    assert folder_state(folder) == after

    status, out, _ = run(*PRUNE, tmp_path)
    assert status == 0 and "kept" not in out
    assert "prune: deleted 1 stray old event(s)" in out  # exported: it may go now
    assert stored(conn) == 0 and folder_state(folder) == after


def test_a_pruned_month_exported_again_is_left_as_it_is(october, conn, run, tmp_path):
    assert run("export", "--dir", tmp_path, "--month", "2025-10", "--rows-per-file", 5)[0] == 0
    folder = month.folder_of(tmp_path, OCTOBER)
    archived, archived_times = folder_state(folder), times(folder)
    assert run(*PRUNE, tmp_path)[0] == 0
    assert "events_2025_10" not in {p.name for p in partitions.list_partitions(conn)}
    assert stored(conn) == 0

    status, out, err = run("export", "--dir", tmp_path, "--month", "2025-10")
    assert (status, err) == (0, "")
    assert out == (
        "export: 2025-10: already exported (pruned since its export, 0 of its events left in "
        "the database; none missing from the export): 5 part(s), 23 rows\n"
    )
    assert folder_state(folder) == archived and times(folder) == archived_times
    status, out, _ = run("export", "verify", "--dir", tmp_path, "--month", "2025-10", "--database")
    assert (status, out) == (
        0,
        "verify: 2025-10 ok: 5 part(s), 23 rows (pruned: 0 of its events left in the database)\n",
    )


def test_as_many_new_events_as_were_pruned_are_still_found(october, client, conn, tmp_path):
    """The counts agree (4 exported, 4 in the database), the events do not: the new ones were
    stored by newer transactions than any in the files."""
    export(conn, tmp_path, NOVEMBER, rows_per_file=100)
    folder = month.folder_of(tmp_path, NOVEMBER)
    archived = folder_state(folder)
    forget(conn, NOVEMBER)
    deliver(client, [month_event(NOVEMBER, n) for n in range(100, 104)])
    assert stored(conn, NOVEMBER) == 4
    check = month.verify_month(tmp_path, NOVEMBER, conn)
    assert check.problem.startswith("4 event(s) in the database are in no part of the export")
    assert month.verify_month(tmp_path, NOVEMBER).ok  # the files alone are fine
    result = export(conn, tmp_path, NOVEMBER, rows_per_file=100)
    assert (result.pruned, result.skipped, result.parts, result.rows) == (True, False, 2, 8)
    assert [m["file"] for m in result.written] == ["part-00001.parquet"]
    assert {name: folder_state(folder)[name] for name in archived} == archived
    assert file_rows([folder / "part-00001.parquet"]) == database_rows(conn, NOVEMBER)
    assert month.verify_month(tmp_path, NOVEMBER, conn).ok


def test_an_exported_event_stored_again_is_not_exported_twice(october, client, conn, tmp_path):
    export(conn, tmp_path)
    folder = month.folder_of(tmp_path, OCTOBER)
    forget(conn)
    # The same event as one exported (same key), and a new one, in one batch.
    deliver(client, [month_event(OCTOBER, 3), month_event(OCTOBER, 201)])
    check = month.verify_month(tmp_path, OCTOBER, conn)
    assert check.problem.startswith("1 event(s) in the database are in no part of the export")
    result = export(conn, tmp_path, rows_per_file=1)  # one late part per event, if it were two
    assert [m["rows"] for m in result.written] == [1]
    new = [row for row in database_rows(conn, OCTOBER) if row["event_id"] == "202510-201"]
    assert file_rows([folder / "part-00005.parquet"]) == new
    check = month.verify_month(tmp_path, OCTOBER, conn)
    assert check.ok and check.note == "pruned: 2 of its events left in the database"


def test_a_month_that_lost_a_row_and_gained_one_keeps_the_lost_one(october, client, conn, tmp_path):
    """Not a prune (the partition is there), the same count: the part holding the row the
    database lost is not written again; the new row is added."""
    export(conn, tmp_path)
    folder = month.folder_of(tmp_path, OCTOBER)
    archived = folder_state(folder)
    gone = file_rows([folder / "part-00001.parquet"])[2]
    conn.execute("DELETE FROM events WHERE event_key = %s", (gone["event_key"],))
    deliver(client, [month_event(OCTOBER, 200)])
    assert stored(conn) == 23
    assert not month.verify_month(tmp_path, OCTOBER, conn).ok
    result = export(conn, tmp_path)
    assert result.pruned and [m["rows"] for m in result.written] == [1]
    after = folder_state(folder)
    assert {name: after[name] for name in archived} == archived
    assert gone in file_rows(sorted(folder.glob("part-*.parquet")))
    assert month.verify_month(tmp_path, OCTOBER, conn).ok


def test_a_late_part_left_without_its_manifest_is_written_again(
    october, client, conn, tmp_path, monkeypatch
):
    export(conn, tmp_path)
    forget(conn)
    deliver(client, [month_event(OCTOBER, n) for n in (200, 201, 202)])
    real = parts.write_durably

    def die_on_the_late_manifest(path, text):
        if path.name == "_part-00005.json":
            raise OSError("disk gone")
        real(path, text)

    monkeypatch.setattr(parts, "write_durably", die_on_the_late_manifest)
    with pytest.raises(OSError):
        export(conn, tmp_path)
    monkeypatch.setattr(parts, "write_durably", real)
    folder = month.folder_of(tmp_path, OCTOBER)
    assert (folder / "part-00005.parquet").exists()
    assert "part-00005.parquet has no manifest" in month.verify_month(tmp_path, OCTOBER).problem
    result = export(conn, tmp_path)
    assert [m["file"] for m in result.written] == ["part-00005.parquet"]
    assert file_rows([folder / "part-00005.parquet"]) == database_rows(conn, OCTOBER)
    assert month.verify_month(tmp_path, OCTOBER, conn).ok


def test_a_damaged_part_of_a_pruned_month_is_refused_and_left_alone(october, conn, run, tmp_path):
    export(conn, tmp_path)
    forget(conn)
    folder = month.folder_of(tmp_path, OCTOBER)
    damaged = folder / "part-00003.parquet"
    damaged.write_bytes(damaged.read_bytes()[:-20] + b"\0" * 20)
    before = folder_state(folder)
    with pytest.raises(ExportError, match="exported events are never removed"):
        export(conn, tmp_path)
    assert folder_state(folder) == before
    status, out, err = run("export", "--dir", tmp_path, "--month", "2025-10")
    assert (status, out) == (2, "") and err.count("\n") == 1
    assert err.startswith(
        "receiver: export: 2025-10: part-00003.parquet: sha256 differs from its manifest; "
        "part-00000.parquet holds events the database no longer has, so the export will not "
        "write its parts again"
    )
    assert folder_state(folder) == before


def test_the_guard_keeps_a_pruned_months_new_events_until_they_are_exported(
    october, client, conn, tmp_path
):
    now, keep = datetime(2026, 12, 6, 12, tzinfo=UTC), timedelta(days=400)
    export(conn, tmp_path)
    forget(conn)
    deliver(client, [month_event(OCTOBER, 200)])
    guard = export_guard(tmp_path)
    report = retention.prune(conn, keep, now=now, keep_month=guard)
    why = dict(report.kept)[OCTOBER]
    assert why.startswith("export not verified: 1 event(s) in the database are in no part")
    assert stored(conn) == 1
    export(conn, tmp_path)
    report = retention.prune(conn, keep, now=now, keep_month=guard)
    assert OCTOBER not in dict(report.kept) and stored(conn) == 0
