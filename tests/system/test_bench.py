"""`make bench` (bench/run.py) on a short setting: the database it picks, what it says while it
runs, what it leaves behind (nothing, also after Ctrl-C), and BEFORE naming the very same code.

Each test gives the bench a TMPDIR of its own, so "nothing left behind" is an empty folder.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from support import ROOT, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (shutil.which("wrk") and shutil.which("pgbench")),
        reason="the bench needs wrk and pgbench: apt-get install wrk postgresql-client",
    ),
    # The bench picks its own database whatever TEST_DATABASE_URL says: a second pass against
    # a server (CI's) would only repeat the first.
    pytest.mark.skipif(
        bool(os.environ.get("TEST_DATABASE_URL")),
        reason="the bench ignores TEST_DATABASE_URL: it runs in the embedded pass only",
    ),
]
SHORT = ["--seconds", "1", "--memory-events", "1000"]


@pytest.fixture
def tmp(tmp_path):
    """The bench's TMPDIR: short, as PostgreSQL's socket path must be (under 108 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="rb-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def bench_env(tmp, tmp_path):
    """The environment of a bench run: its own TMPDIR, no server named (so: embedded), and
    pgserver's lock folder elsewhere (without XDG_RUNTIME_DIR it goes under TMPDIR, and stays)."""
    env = {key: value for key, value in os.environ.items() if key != "BENCH_DATABASE_URL"}
    return {**env, "TMPDIR": str(tmp), "XDG_RUNTIME_DIR": str(tmp_path)}


def processes_naming(path):
    """Live processes whose command line or environment mentions `path` (the bench's own)."""
    found = []
    for process in psutil.process_iter():
        try:
            if str(path) in " ".join(process.cmdline()) or any(
                str(path) in value for value in process.environ().values()
            ):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def test_before_naming_the_checked_out_commit_is_skipped_saying_so(tmp, tmp_path):
    """A fresh clone (HEAD = main, nothing changed), as the issue's newcomer ran it."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    # This checkout's bench, committed in the clone: the clone's tree is then clean.
    shutil.copy(ROOT / "bench" / "run.py", clone / "bench" / "run.py")
    git = ["git", "-C", str(clone), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-am", "bench"], check=True)
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--before", "HEAD", *SHORT],
        cwd=clone,
        env=bench_env(tmp, tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "the before runs are skipped" in done.stderr
    assert "make bench BEFORE=HEAD~1" in done.stderr
    assert "--- before -> after: not measured" in done.stdout
    assert "--- before (" not in done.stdout  # no meaningless 1.00x ratios
    assert f"embedded PostgreSQL in {tmp}" in done.stderr
    for line in ("ceiling: pgbench", "run 1/1: fresh batches, 1 s", "run 1/1: done in"):
        assert line in done.stderr
    assert list(tmp.iterdir()) == []


def test_ctrl_c_mid_run_leaves_no_folder_and_no_process(tmp, tmp_path):
    """SIGINT to the whole process group, as a terminal's Ctrl-C, while wrk drives gunicorn
    (1 s into a 6 s phase: the ceiling before it takes as long, so no longer than needed)."""
    log = tmp_path / "stderr"
    with log.open("w") as stderr:
        bench = subprocess.Popen(
            [sys.executable, "bench/run.py", "--seconds", "6"],
            cwd=ROOT,
            env=bench_env(tmp, tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        wait_until(lambda: "fresh batches" in log.read_text(), timeout=120, interval=0.2)
        assert processes_naming(tmp)  # the cluster and gunicorn are running
        time.sleep(1)
        os.killpg(bench.pid, signal.SIGINT)
        assert bench.wait(timeout=120) == 130, log.read_text()
    finally:
        if bench.poll() is None:
            os.killpg(bench.pid, signal.SIGKILL)
    assert "SIGINT: stopping, then cleaning up" in log.read_text()
    assert list(tmp.iterdir()) == []
    assert processes_naming(tmp) == []
