"""`receiver export --month` (receiver.export.month): the files hold the month's rows exactly,
a re-run changes nothing, an interrupted or outdated export is finished into what a clean run
writes."""

import itertools
import json
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from receiver.export import ExportError, month, parts, schema

from support.export import (
    NOVEMBER,
    OCTOBER,
    database_rows,
    deliver,
    file_rows,
    folder_state,
    month_event,
)


def export(conn, root, which=OCTOBER, rows_per_file=5, **kwargs):
    return month.export_month(conn, root, which, rows_per_file=rows_per_file, **kwargs)


def parquet_files(root, which=OCTOBER):
    return sorted(month.folder_of(root, which).glob("part-*.parquet"))


def test_the_files_hold_the_months_rows_in_key_order_with_parquet_types(october, conn, tmp_path):
    result = export(conn, tmp_path)
    folder = tmp_path / "events" / "month=2025-10"
    assert (result.parts, result.rows, result.skipped) == (5, 23, False)
    assert [p.name for p in parquet_files(tmp_path)] == [f"part-0000{i}.parquet" for i in range(5)]
    expected = database_rows(conn, OCTOBER)
    assert file_rows(parquet_files(tmp_path)) == expected  # every column, payload JSON equal
    assert {row["xid"] for row in expected} and None not in {row["xid"] for row in expected}
    stored = pq.read_schema(folder / "part-00000.parquet")
    assert stored.names == list(schema.NAMES)
    assert stored.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert stored.field("client_id").type == pa.int64()
    assert stored.field("threshold_exceeded").type == pa.bool_()
    assert stored.field("payload").type == pa.string()
    parquet_schema = pq.ParquetFile(folder / "part-00000.parquet").schema
    created = json.loads(
        parquet_schema.column(schema.NAMES.index("created_at")).logical_type.to_json()
    )
    assert (created["Type"], created["isAdjustedToUTC"], created["timeUnit"]) == (
        "Timestamp",
        True,
        "microseconds",
    )


def test_each_manifest_describes_its_file_and_joins_the_one_before(october, conn, tmp_path):
    export(conn, tmp_path)
    folder = month.folder_of(tmp_path, OCTOBER)
    manifests = [json.loads((folder / f"_part-0000{i}.json").read_text()) for i in range(5)]
    assert [m["rows"] for m in manifests] == [5, 5, 5, 5, 3]
    assert [m["source"]["final"] for m in manifests] == [False] * 4 + [True]
    assert manifests[0]["source"]["after"] is None
    for before, after in itertools.pairwise(manifests):
        assert after["source"]["after"] == before["source"]["last"]
    first = manifests[0]
    assert first["sha256"] == parts.sha256_of(folder / "part-00000.parquet")
    assert first["source"]["month"] == "2025-10"
    assert first["columns"][0] == {"name": "xid", "type": "int64"}
    assert first["receiver_version"] and first["compression"] == "zstd"
    rows = database_rows(conn, OCTOBER)[:5]
    assert first["min_created_at"] == min(r["created_at"] for r in rows).astimezone(UTC).isoformat(
        timespec="microseconds"
    )
    assert datetime.fromisoformat(first["max_received_at"]) == max(r["received_at"] for r in rows)


def test_a_second_run_verifies_and_changes_nothing(october, conn, tmp_path):
    export(conn, tmp_path)
    folder = month.folder_of(tmp_path, OCTOBER)
    before = folder_state(folder)
    times = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    again = export(conn, tmp_path)
    assert (again.skipped, again.parts, again.rows, again.written) == (True, 5, 23, [])
    assert folder_state(folder) == before
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == times


def test_an_interrupted_export_resumes_into_the_files_of_a_clean_one(october, conn, tmp_path):
    clean, broken = tmp_path / "clean", tmp_path / "broken"
    export(conn, clean)

    def crash_after_two(manifest):
        if manifest["file"] == "part-00001.parquet":
            raise KeyboardInterrupt  # as a kill would, between two parts

    with pytest.raises(KeyboardInterrupt):
        export(conn, broken, on_part=crash_after_two)
    assert len(parquet_files(broken)) == 2
    written = []
    result = export(conn, broken, on_part=written.append)
    assert [m["file"] for m in written] == [
        "part-00002.parquet",
        "part-00003.parquet",
        "part-00004.parquet",
    ]
    assert (result.parts, result.rows) == (5, 23)
    assert folder_state(month.folder_of(broken, OCTOBER)) == folder_state(
        month.folder_of(clean, OCTOBER)
    )


def test_a_part_without_its_manifest_is_written_again(october, conn, tmp_path, monkeypatch):
    clean, broken = tmp_path / "clean", tmp_path / "broken"
    export(conn, clean)
    real = parts.write_durably

    def die_on_the_third_manifest(path, text):
        if path.name == "_part-00002.json":
            raise OSError("disk gone")  # after part-00002.parquet was renamed into place
        real(path, text)

    monkeypatch.setattr(parts, "write_durably", die_on_the_third_manifest)
    with pytest.raises(OSError):
        export(conn, broken)
    monkeypatch.setattr(parts, "write_durably", real)
    folder = month.folder_of(broken, OCTOBER)
    assert (folder / "part-00002.parquet").exists() and not (folder / "_part-00002.json").exists()
    check = month.verify_month(broken, OCTOBER)
    assert not check.ok and "part-00002.parquet has no manifest" in check.problem
    export(conn, broken)
    assert folder_state(folder) == folder_state(month.folder_of(clean, OCTOBER))


def test_a_damaged_part_is_found_and_written_again(october, conn, tmp_path):
    export(conn, tmp_path)
    folder = month.folder_of(tmp_path, OCTOBER)
    clean = folder_state(folder)
    damaged = folder / "part-00003.parquet"
    damaged.write_bytes(damaged.read_bytes()[:-20] + b"\0" * 20)
    check = month.verify_month(tmp_path, OCTOBER)
    assert check.problem == "part-00003.parquet: sha256 differs from its manifest"
    written = []
    export(conn, tmp_path, on_part=written.append)
    assert [m["file"] for m in written] == ["part-00003.parquet", "part-00004.parquet"]
    assert folder_state(folder) == clean


def test_events_arriving_after_the_export_rewrite_their_part_and_the_later_ones(
    october, client, conn, tmp_path
):
    export(conn, tmp_path)
    folder = month.folder_of(tmp_path, OCTOBER)
    before = folder_state(folder)
    assert month.verify_month(tmp_path, OCTOBER, conn).ok
    # A late event (a replay from quarantine, say) whose key sorts into the third part.
    third = file_rows([folder / "part-00002.parquet"])
    late = month_event(OCTOBER, 1, clientId=third[0]["client_id"], id="late")
    late["type"], late["created"] = third[0]["type"], third[1]["payload"]["created"]
    deliver(client, [late])
    check = month.verify_month(tmp_path, OCTOBER, conn)
    assert check.problem.startswith("23 rows exported, 24 in the database")
    result = export(conn, tmp_path)
    assert (result.parts, result.rows) == (5, 24)
    assert result.written[0]["file"] == "part-00002.parquet"
    after = folder_state(folder)
    for name in ("part-00000.parquet", "part-00001.parquet", "_part-00001.json"):
        assert after[name] == before[name]
    assert file_rows(parquet_files(tmp_path)) == database_rows(conn, OCTOBER)
    assert month.verify_month(tmp_path, OCTOBER, conn).ok


def test_a_month_without_a_partition_is_read_from_the_default_one(october, conn, tmp_path):
    result = export(conn, tmp_path, NOVEMBER, rows_per_file=100)
    assert (result.parts, result.rows) == (1, 4)
    assert file_rows(parquet_files(tmp_path, NOVEMBER)) == database_rows(conn, NOVEMBER)


def test_a_month_without_events_is_one_empty_final_part(october, conn, tmp_path):
    empty = datetime(2024, 2, 1, tzinfo=UTC)
    result = export(conn, tmp_path, empty)
    assert (result.parts, result.rows) == (1, 0)
    assert pq.read_table(parquet_files(tmp_path, empty)[0]).num_rows == 0
    assert month.verify_month(tmp_path, empty, conn).ok


def test_a_part_as_large_as_the_rest_of_the_month_is_the_final_one(october, conn, tmp_path):
    result = export(conn, tmp_path, rows_per_file=23)
    assert (result.parts, result.rows) == (1, 23)
    result = export(conn, tmp_path / "other", rows_per_file=22)
    assert [m["rows"] for m in result.written] == [22, 1]


def test_months_that_may_still_receive_events_are_refused():
    now = datetime(2026, 12, 6, tzinfo=UTC)
    for still_open in ("2026-11", "2026-12", "2027-01"):
        with pytest.raises(ExportError, match="may still receive events until"):
            month.refuse_open(month.parse_month(still_open), now)
    month.refuse_open(month.parse_month("2026-11"), datetime(2026, 12, 8, tzinfo=UTC))
    month.refuse_open(month.parse_month("2026-10"), now)


@pytest.mark.parametrize("text", ["2026-13", "2026-00", "26-11", "2026-1", "2026/11", "0000-01"])
def test_a_month_is_yyyy_mm(text):
    with pytest.raises(ExportError, match="is not a month"):
        month.parse_month(text)


def test_verify_names_what_is_wrong(october, conn, tmp_path):
    assert month.verify_month(tmp_path, OCTOBER).problem.startswith("not exported")
    export(conn, tmp_path)
    folder = month.folder_of(tmp_path, OCTOBER)
    assert month.verify_month(tmp_path, OCTOBER).ok
    (folder / "part-00007.parquet").write_bytes(b"stray")  # a loader would read it too
    assert month.verify_month(tmp_path, OCTOBER).problem == (
        "part-00007.parquet comes after the final part"
    )
    (folder / "part-00007.parquet").unlink()
    (folder / "_part-00004.json").unlink()
    (folder / "part-00004.parquet").unlink()
    assert month.verify_month(tmp_path, OCTOBER).problem == (
        "the export ends at part-00003.parquet, before the month's final part"
    )
    (folder / "_part-00001.json").write_text("{not json")
    assert month.verify_month(tmp_path, OCTOBER).problem == (
        "_part-00001.json is not a manifest of this export"
    )
