"""`receiver export --feed` (receiver.export.incremental): runs one after another export every
event once, whatever arrives in between and wherever a run is interrupted."""

import itertools

import pytest

from receiver.export import ExportError, incremental, parts

from support.export import NOVEMBER, OCTOBER, deliver, file_rows, month_event, settle


def export(conn, root, rows_per_file=1000, **kwargs):
    settle(conn)
    return incremental.export_feed(conn, root, rows_per_file=rows_per_file, **kwargs)


def exported_keys(root):
    """The event keys of every part, in name (feed) order."""
    files = sorted(incremental.folder_of(root).glob("part-*.parquet"))
    return [row["event_key"] for row in file_rows(files)]


def stored_keys(conn):
    return [
        key
        for (key,) in conn.execute(
            'SELECT event_key FROM events ORDER BY xid, client_id, type COLLATE "C", created_at, '
            'event_key COLLATE "C"'
        )
    ]


def ranges(root):
    """(from, to) of each part, in order."""
    names = sorted(p.name for p in incremental.folder_of(root).glob("part-*.parquet"))
    return [tuple(int(n) for n in name[5:-8].split("-")) for name in names]


def test_runs_export_what_arrived_since_the_last_one_without_gap_or_repeat(
    october, client, conn, tmp_path
):
    first = export(conn, tmp_path)
    assert (len(first.written), first.rows, first.start) == (1, 28, 0)
    assert (tmp_path / "events-feed" / "_cursor").read_text() == f"{first.cursor}\n"
    empty = export(conn, tmp_path)
    assert (empty.written, empty.cursor) == ([], first.cursor)  # nothing new: no file
    deliver(client, [month_event(NOVEMBER, n) for n in range(4, 10)], batch=2)
    second = export(conn, tmp_path)
    assert (len(second.written), second.rows, second.start) == (1, 6, first.cursor)
    deliver(client, [month_event(OCTOBER, n) for n in range(100, 103)])
    export(conn, tmp_path)
    assert exported_keys(tmp_path) == stored_keys(conn)  # each once, in feed order
    spans = ranges(tmp_path)
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert incremental.verify_feed(tmp_path).ok


def test_a_part_ends_at_the_first_transaction_boundary_after_rows_per_file(october, conn, tmp_path):
    result = export(conn, tmp_path, rows_per_file=7)
    # Batches of 5, 5, 5, 5, 3, 4 and 1 events: a transaction is never split.
    assert [m["rows"] for m in result.written] == [10, 10, 7, 1]
    assert exported_keys(tmp_path) == stored_keys(conn)
    assert [m["source"]["to"] for m in result.written][:2] == [
        str(end) for _, end in ranges(tmp_path)[:2]
    ]


def test_interrupted_before_the_cursor_moved_the_next_run_only_moves_it(october, conn, tmp_path):
    def crash(manifest):
        raise KeyboardInterrupt  # the part and its manifest are durable, the cursor is not

    with pytest.raises(KeyboardInterrupt):
        export(conn, tmp_path, rows_per_file=7, on_part=crash)
    assert incremental.read_cursor(incremental.folder_of(tmp_path)) == 0
    first = ranges(tmp_path)
    result = export(conn, tmp_path, rows_per_file=7)
    assert [m["rows"] for m in result.written] == [10, 7, 1]  # the first is not written again
    assert ranges(tmp_path)[0] == first[0]
    assert exported_keys(tmp_path) == stored_keys(conn)


def test_a_part_left_without_its_manifest_is_written_again_over_the_same_rows(
    october, client, conn, tmp_path, monkeypatch
):
    real = parts.write_durably

    def die_writing_a_manifest(path, text):
        if path.name.startswith("_part-"):
            raise OSError("disk gone")
        real(path, text)

    monkeypatch.setattr(parts, "write_durably", die_writing_a_manifest)
    with pytest.raises(OSError):
        export(conn, tmp_path, rows_per_file=7)
    monkeypatch.setattr(parts, "write_durably", real)
    (left,) = incremental.folder_of(tmp_path).glob("part-*.parquet")
    orphan = left.read_bytes()
    assert not incremental.verify_feed(tmp_path).ok
    # Events arrive meanwhile: the part keeps its range; they go into the next one.
    deliver(client, [month_event(NOVEMBER, n) for n in range(4, 9)])
    export(conn, tmp_path, rows_per_file=7)
    assert left.read_bytes() == orphan  # the same range, the same bytes
    assert exported_keys(tmp_path) == stored_keys(conn)
    assert incremental.verify_feed(tmp_path).ok


def test_verify_finds_a_gap_a_damaged_part_and_a_part_past_the_cursor(october, conn, tmp_path):
    export(conn, tmp_path, rows_per_file=7)
    folder = incremental.folder_of(tmp_path)
    check = incremental.verify_feed(tmp_path)
    assert (check.ok, check.parts, check.rows) == (True, 4, 28)
    middle = incremental.part_name(*ranges(tmp_path)[1])
    saved = (folder / middle).read_bytes()
    (folder / middle).write_bytes(saved[:100])
    assert (
        incremental.verify_feed(tmp_path).problem == f"{middle}: sha256 differs from its manifest"
    )
    parts.remove_part(folder, middle)
    assert (
        "does not start where the part before it ended" in incremental.verify_feed(tmp_path).problem
    )
    (folder / "_cursor").write_text("5\n")
    assert "ends after the cursor" in incremental.verify_feed(tmp_path).problem


def test_a_cursor_this_export_did_not_write_is_refused(tmp_path):
    folder = incremental.folder_of(tmp_path)
    folder.mkdir(parents=True)
    (folder / "_cursor").write_text("12:abc\n")
    with pytest.raises(ExportError, match="does not hold a position this export wrote"):
        incremental.read_cursor(folder)


@pytest.mark.parametrize("pruned", [False, True])
def test_a_damaged_part_at_the_cursor_is_written_again_only_if_its_events_are_all_there(
    october, conn, tmp_path, pruned
):
    def crash(manifest):
        raise KeyboardInterrupt  # the part and its manifest are durable, the cursor is not

    with pytest.raises(KeyboardInterrupt):
        export(conn, tmp_path, rows_per_file=7, on_part=crash)
    (part,) = incremental.folder_of(tmp_path).glob("part-*.parquet")
    clean = part.read_bytes()
    part.write_bytes(clean[:100])
    if pruned:  # what a prune does to October's events
        conn.execute(
            "DELETE FROM events WHERE created_at >= %s AND created_at < %s", (OCTOBER, NOVEMBER)
        )
        with pytest.raises(ExportError, match="exported events are never removed"):
            export(conn, tmp_path, rows_per_file=7)
        assert part.read_bytes() == clean[:100]  # left as it was, for a copy to restore
    else:
        export(conn, tmp_path, rows_per_file=7)
        assert part.read_bytes() == clean
        assert exported_keys(tmp_path) == stored_keys(conn)
