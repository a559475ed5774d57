"""The first ten minutes: `receiver serve` in development mode and the commands beside it."""

import os
import signal
import subprocess
import sys

import pytest
import requests

from support import basic, free_port, post, sample, wait_until
from support.devserve import DevServe, development_env, read_until

pytestmark = pytest.mark.slow

RECEIVER = [sys.executable, "-m", "receiver"]


def receiver(*args, env, cwd, timeout=60):
    return subprocess.run(
        [*RECEIVER, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def test_serve_from_another_directory_finds_the_same_database_and_credentials(tmp_path):
    state = tmp_path / "state"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = DevServe(RECEIVER, tmp_path / "a", state)
    try:
        assert (
            subprocess.run(
                [*first.curl_argv(), "-s", "-o", "/dev/null"], timeout=30, cwd=tmp_path / "b"
            ).returncode
            == 0
        )
    finally:
        first.stop()
    second = DevServe(RECEIVER, tmp_path / "b", state)
    try:
        assert (second.user, second.password) == (first.user, first.password)
        result = receiver(
            "psql", "-At", "-c", "SELECT count(*) FROM events", env=second.env, cwd=tmp_path
        )
        assert result.stdout.strip() == "1", result.stderr  # the first run's event is there
    finally:
        second.stop()
    assert list((tmp_path / "a").iterdir()) == list((tmp_path / "b").iterdir()) == []


def test_commands_beside_a_running_serve_use_its_database(tmp_path):
    server = DevServe(RECEIVER, tmp_path, tmp_path / "state")
    try:
        env = server.env
        assert server.database_url in server.banner
        migrate = receiver("migrate", env=env, cwd=tmp_path)
        assert (migrate.returncode, migrate.stdout.strip()) == (
            0,
            "receiver: 0 migration(s) applied",
        )
        listing = receiver("quarantine", "list", env=env, cwd=tmp_path)
        assert listing.returncode == 0 and "0 unresolved row(s)" in listing.stdout
        simulate = receiver(
            "simulate",
            "--events",
            "300",
            "--verify",
            "--url",
            server.base + "/webhook",
            env=env,
            cwd=tmp_path,
        )
        assert simulate.returncode == 0, simulate.stdout + simulate.stderr
        assert "missing 0, extra 0, duplicated 0: OK" in simulate.stdout
        assert "XDG_RUNTIME_DIR" not in simulate.stderr + listing.stderr + migrate.stderr
        # Posting an empty body (curl with a file that is not there) leaves nothing behind.
        argv = [a if not a.startswith("@") else "@does-not-exist.json" for a in server.curl_argv()]
        subprocess.run([*argv, "-s", "-o", "/dev/null"], cwd=tmp_path, timeout=30)
        assert "0 unresolved row(s)" in receiver("quarantine", "list", env=env, cwd=tmp_path).stdout
    finally:
        server.stop()
    stopped = receiver("quarantine", "list", env=env, cwd=tmp_path)
    assert stopped.returncode == 2
    assert "no development database is running" in stopped.stderr


def test_a_second_serve_on_a_busy_port_fails_before_printing_credentials(tmp_path):
    server = DevServe(RECEIVER, tmp_path, tmp_path / "state")
    try:
        again = receiver(
            "serve", "--bind", f"127.0.0.1:{server.port}", env=server.env, cwd=tmp_path
        )
    finally:
        server.stop()
    assert again.returncode == 2
    assert "cannot listen on" in again.stderr
    assert server.password not in again.stdout + again.stderr


def test_serve_without_credentials_and_with_a_database_refuses(tmp_path, database_url):
    env = development_env(tmp_path / "state", {"DATABASE_URL": database_url})
    result = receiver("serve", "--bind", f"127.0.0.1:{free_port()}", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "no credentials configured" in result.stderr
    assert not os.path.exists(tmp_path / "state" / "credentials")


def test_serve_dev_with_configured_credentials_uses_them_and_never_prints_the_password(tmp_path):
    state = tmp_path / "state"
    secret = "pass word:with a colon"
    (tmp_path / "basic-auth").write_text(f"tester:{secret}\n")
    env = development_env(state, {"RECEIVER_BASIC_AUTH_FILE": str(tmp_path / "basic-auth")})
    env.pop("PORT", None)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with open(tmp_path / "stderr", "w") as stderr:
        process = subprocess.Popen(
            [*RECEIVER, "serve", "--dev", "--bind", f"127.0.0.1:{port}"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        banner = read_until(process.stdout, "receiver simulate")
        assert banner.startswith("receiver: development mode\n")
        assert "  credentials   from RECEIVER_BASIC_AUTH_FILE (not shown)\n" in banner
        assert "curl -u tester --data-binary @" in banner
        assert "\n  password" not in banner and "pass word" not in banner

        def ready():
            assert process.poll() is None, f"receiver serve exited with {process.returncode}"
            try:
                return requests.get(base + "/readyz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(ready, timeout=40)
        opens = post(base, sample("open-batch.json"), basic("tester", secret))
        assert opens.status_code == 200
        assert opens.json()["stored"] == 1
        assert post(base, b"[]", basic("tester", "wrong")).status_code == 401
        count = receiver("psql", "-At", "-c", "SELECT count(*) FROM events", env=env, cwd=tmp_path)
        assert count.stdout.strip() == "1", count.stderr  # in the embedded database
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        process.stdout.close()
    assert (state / "pgdata").is_dir()
    assert not (state / "credentials").exists()  # nothing generated
    assert "pass word" not in (tmp_path / "stderr").read_text()
