"""`receiver export` and `receiver export verify` on the command line: what they print, their
exit statuses, and their one-line refusals."""

import sys

import psycopg
import pytest

from receiver.cli import main
from receiver.export import parts

from support.export import NOVEMBER, OCTOBER, deliver, month_event, settle


@pytest.fixture
def run(database_url, monkeypatch, capsys):
    """Run `receiver ARGS` on the test database; (exit status, stdout, stderr)."""
    monkeypatch.setenv("DATABASE_URL", database_url)

    def invoke(*args):
        status = main([str(arg) for arg in args])
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return invoke


@pytest.fixture
def events(client):
    deliver(client, [month_event(OCTOBER, n) for n in range(12)])
    deliver(client, [month_event(NOVEMBER, n) for n in range(3)])


def test_month_export_then_a_rerun_that_finds_it_done(events, run, tmp_path):
    status, out, _ = run("export", "--dir", tmp_path, "--month", "2025-10", "--rows-per-file", 5)
    lines = out.splitlines()
    assert status == 0 and len(lines) == 4
    assert lines[0].startswith("export: wrote part-00000.parquet (5 rows, ")
    assert lines[2].startswith("export: wrote part-00002.parquet (2 rows, ")
    assert lines[3] == "export: 2025-10: exported: 3 part(s), 12 rows"
    status, out, _ = run("export", "--dir", tmp_path, "--month", "2025-10", "--month", "2025-11")
    assert status == 0
    assert "export: 2025-10: already exported and verified: 3 part(s), 12 rows" in out
    assert "export: 2025-11: exported: 1 part(s), 3 rows" in out


def test_feed_export_prints_the_parts_and_the_cursor(events, run, tmp_path, database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        settle(conn)
    status, out, _ = run("export", "--dir", tmp_path, "--feed")
    assert status == 0
    assert "export: feed: 1 part(s), 15 rows; cursor 0 -> " in out
    cursor = (tmp_path / "events-feed" / "_cursor").read_text().strip()
    assert out.rstrip().endswith(f"-> {cursor}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--month", "2025-10"], "give --dir DIR"),
        (["--dir", "D"], "give --month YYYY-MM or --feed (one of them)"),
        (["--dir", "D", "--month", "2025-10", "--feed"], "give --month YYYY-MM or --feed"),
        (["--dir", "D", "--month", "October"], "--month 'October' is not a month such as 2026-11"),
        (["--dir", "D", "--month", "2999-01"], "2999-01 may still receive events until 2999-02-08"),
    ],
)
def test_mistakes_are_one_line_and_status_2(run, args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, out, err = run("export", *args)
    assert (status, out) == (2, "")
    assert err.startswith(f"receiver: export: {message}") and err.count("\n") == 1
    assert not (tmp_path / "D").exists()


def test_an_open_month_is_exported_with_force(run, tmp_path):
    status, out, _ = run("export", "--dir", tmp_path, "--month", "2999-01", "--force")
    assert status == 0 and "export: 2999-01: exported: 1 part(s), 0 rows" in out


@pytest.mark.parametrize("args", [["--month", "2025-10"], ["--feed"], ["verify"]])
def test_without_pyarrow_the_export_says_what_to_install(run, args, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    status, out, err = run("export", "--dir", tmp_path, *args)
    assert (status, out) == (2, "")
    assert err == (
        "receiver: export: the export writes Parquet with pyarrow: pip install 'receiver[export]'\n"
    )


def test_verify_passes_a_good_export_and_fails_a_damaged_one(events, run, tmp_path):
    run("export", "--dir", tmp_path, "--month", "2025-10", "--rows-per-file", 5)
    run("export", "--dir", tmp_path, "--month", "2025-11")
    status, out, _ = run("export", "verify", "--dir", tmp_path, "--database")
    assert (status, out) == (
        0,
        "verify: 2025-10 ok: 3 part(s), 12 rows\nverify: 2025-11 ok: 1 part(s), 3 rows\n",
    )
    damaged = tmp_path / "events" / "month=2025-10" / "part-00001.parquet"
    damaged.write_bytes(damaged.read_bytes()[::-1])
    status, out, _ = run("export", "verify", "--dir", tmp_path, "--month", "2025-10")
    assert (status, out) == (
        1,
        "verify: 2025-10 FAILED: part-00001.parquet: sha256 differs from its manifest\n",
    )


def test_verify_compares_rows_with_the_database_when_asked(events, client, run, tmp_path):
    run("export", "--dir", tmp_path, "--month", "2025-11")
    deliver(client, [month_event(NOVEMBER, 50)])
    assert run("export", "verify", "--dir", tmp_path)[0] == 0  # the files alone are fine
    status, out, _ = run("export", "verify", "--dir", tmp_path, "--database")
    assert status == 1
    assert out.startswith("verify: 2025-11 FAILED: 3 rows exported, 4 in the database")


def test_verify_of_a_folder_without_an_export_is_a_mistake(run, tmp_path):
    status, _, err = run("export", "verify", "--dir", tmp_path)
    assert status == 2 and err == f"receiver: export: no export in {tmp_path}\n"


def test_a_second_export_at_the_same_time_does_nothing(events, run, tmp_path):
    with parts.locked(tmp_path):
        status, out, err = run("export", "--dir", tmp_path, "--month", "2025-10")
    assert (status, out) == (1, "")
    assert err == f"receiver: export: another export is running in {tmp_path}; nothing done\n"
