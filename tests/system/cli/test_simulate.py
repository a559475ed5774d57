"""`receiver simulate` as a newcomer and an operator run it: against nothing, against a receiver
that answers 503, beside `receiver serve`, twice against one database, and what the reports
make of its mailings."""

import json
import os
import pty
import re
import select
import shlex
import subprocess
import sys
import time

import pytest

from receiver.simulate import SIMULATED_CLIENT_ID

from support import PASSWORD, USER, Gunicorn, free_port
from support.devserve import DevServe

pytestmark = pytest.mark.slow

RECEIVER = [sys.executable, "-m", "receiver"]


def receiver(*args, env=None, timeout=120):
    """`python -m receiver ARGS`, from a clean environment plus `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "RECEIVER_"))}
    clean.pop("PORT", None)
    return subprocess.run(
        [*RECEIVER, *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_with_nothing_listening_it_says_so_within_seconds(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/webhook"
    started = time.monotonic()
    result = receiver(
        "simulate", "--url", url, "--user", "u", "--password", "p", "--events", "100",
        env={"RECEIVER_STATE_DIR": str(tmp_path)},
    )  # fmt: skip
    assert time.monotonic() - started < 10
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"receiver: simulate: nothing listens at {url} (connection refused)")
    assert "start `receiver serve`" in line and "--url" in line


@pytest.fixture
def receiver_without_database():
    """A real receiver whose database is not there: it answers the webhook 503."""
    server = Gunicorn({"DATABASE_URL": f"postgresql://r:pw@127.0.0.1:{free_port()}/r"}, workers=1)
    yield server
    server.stop()


SEND_INTO_503 = (
    "--events", "20", "--batch-size", "10", "--duplicates", "0",
    "--retry-delay", "0.5", "--give-up-after", "4",
)  # fmt: skip


def test_503s_are_retried_and_a_log_says_what_it_waits_for(receiver_without_database):
    url = receiver_without_database.url + "/webhook"
    result = receiver(
        "simulate", "--url", url, "--user", USER, "--password", PASSWORD, *SEND_INTO_503
    )
    assert result.returncode == 1, result.stderr  # gave up, as Campaign would after 3 days
    waiting = [line for line in result.stderr.splitlines() if line.startswith("simulate: ")]
    assert waiting, result.stderr
    assert re.fullmatch(
        r"simulate: waiting: \d batch\(es\) to send again every 0\.5 s: "
        r"\d after 503 Service Unavailable",
        waiting[0],
    )
    assert "gave up: 2" in result.stdout
    assert "retries: 0" not in result.stdout


def test_on_a_terminal_the_progress_bar_says_what_it_waits_for(receiver_without_database):
    url = receiver_without_database.url + "/webhook"
    argv = [*RECEIVER, "simulate", "--url", url, "--user", USER, "--password", PASSWORD]
    controller, terminal = pty.openpty()
    process = subprocess.Popen([*argv, *SEND_INTO_503], stdout=terminal, stderr=terminal)
    os.close(terminal)
    shown = b""
    try:
        while select.select([controller], [], [], 30)[0]:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal's other end closed: the process is done
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
        process.wait(timeout=30)
    bars = [frame for frame in shown.decode().split("\r") if "batches" in frame]
    assert any(
        re.search(r"\s0%\s+waiting: \d batch\(es\) to send again every 0\.5 s: "
                  r"\d after 503 Service Unavailable", bar)
        for bar in bars
    ), bars  # fmt: skip
    assert process.returncode == 1


def test_the_banner_names_the_address_and_a_stopped_serve_is_named(tmp_path):
    port = free_port()
    server = DevServe(RECEIVER, tmp_path, tmp_path / "state", port=port)
    try:
        [line] = [line for line in server.banner.splitlines() if "receiver simulate" in line]
        assert f"--url http://127.0.0.1:{port}/webhook" in line
        argv = shlex.split(line.replace("--events 10000", "--events 300"))
        assert argv[:2] == ["receiver", "simulate"]
        ran = subprocess.run(
            [*RECEIVER, *argv[1:]], env=server.env, capture_output=True, text=True, timeout=120
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "expected 300, stored 300, missing 0, extra 0, duplicated 0: OK" in ran.stdout
    finally:
        server.stop()
    again = subprocess.run(
        [*RECEIVER, *argv[1:]], env=server.env, capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 2
    [reason] = again.stderr.splitlines()
    assert reason == (
        "receiver: simulate --verify: the development database is not running, because "
        "`receiver serve` is not: start `receiver serve` (in another terminal), or give "
        "--database-url or DATABASE_URL"
    )
    unverified = [a for a in argv[1:] if a != "--verify"]
    sending = subprocess.run(
        [*RECEIVER, *unverified], env=server.env, capture_output=True, text=True, timeout=60
    )
    assert sending.returncode == 2
    assert sending.stderr.startswith(
        f"receiver: simulate: nothing listens at http://127.0.0.1:{port}/webhook"
    )


@pytest.fixture
def live_receiver(database_url):
    server = Gunicorn({"DATABASE_URL": database_url}, workers=2)
    yield server
    server.stop()


def test_runs_share_one_client_id_and_each_verifies_exactly(live_receiver, database_url, query):
    url = live_receiver.url + "/webhook"
    for _ in range(2):  # the same seed twice: the same events but for the run's own ids
        result = receiver(
            "simulate", "--url", url, "--user", USER, "--password", PASSWORD,
            "--events", "2000", "--seed", "7", "--verify", "--database-url", database_url,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert "expected 2000, stored 2000, missing 0, extra 0, duplicated 0: OK" in result.stdout
    assert query("SELECT client_id, count(*) FROM events GROUP BY 1") == [
        (SIMULATED_CLIENT_ID, 4000)
    ]


def test_simulated_mailings_make_believable_reports(live_receiver, database_url):
    url = live_receiver.url + "/webhook"
    result = receiver(
        "simulate", "--url", url, "--user", USER, "--password", PASSWORD,
        "--events", "8000", "--verify", "--database-url", database_url,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = receiver("report", "mailings", "--format", "json", env={"DATABASE_URL": database_url})
    assert report.returncode == 0, report.stderr
    mailings = [json.loads(line) for line in report.stdout.splitlines()]
    assert len(mailings) >= 2
    for mailing in mailings:
        assert mailing["client_id"] == SIMULATED_CLIENT_ID
        assert mailing["unique_opens"] <= mailing["sent"]
        assert mailing["unique_clicks"] <= mailing["unique_opens"]
        for rate in ("open_rate", "click_rate", "bounce_rate", "unsubscribe_rate"):
            assert 0 <= float(mailing[rate]) <= 1, (rate, mailing)
        assert 0.15 <= float(mailing["open_rate"]) <= 0.5, mailing
        assert 0.03 <= float(mailing["click_rate"]) <= float(mailing["open_rate"])
        assert float(mailing["bounce_rate"]) <= 0.06
        assert float(mailing["click_to_open_rate"]) <= 1
