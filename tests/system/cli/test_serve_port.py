"""`receiver serve` on a port something already listens on: one line that says so and how to
choose another, exit status 2, before a database is started or a credential printed."""

import os
import socket
import subprocess
import sys

import pytest

SECRET = "pw-that-must-not-show"


@pytest.fixture
def busy_port():
    """A port a real socket listens on for the test."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield busy.getsockname()[1]


def serve(args, tmp_path, **settings):
    """`receiver serve ARGS` with no DATABASE_URL, RECEIVER_ setting or PORT but `settings`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "RECEIVER_")) and k != "PORT"
    }
    env.update(RECEIVER_STATE_DIR=str(tmp_path / "state"), **settings)
    return subprocess.run(
        [sys.executable, "-m", "receiver", "serve", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_busy_port_in_development_mode_says_so_and_how_to_choose_another(busy_port, tmp_path):
    result = serve(["--bind", f"127.0.0.1:{busy_port}"], tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"receiver: cannot listen on 127.0.0.1:{busy_port}: ")
    assert f"port {busy_port} is already in use" in line
    assert "`receiver serve --bind HOST:PORT`" in line
    # PORT without DATABASE_URL would make serve refuse (a deployment): no advice here.
    assert "PORT)" not in line and "configuration error" not in line
    assert not (tmp_path / "state").exists()


def test_a_busy_port_from_the_port_variable_says_so_and_names_it(busy_port, tmp_path):
    url = f"postgresql://receiver:{SECRET}@127.0.0.1:1/receiver"  # never reached: port first
    result = serve(
        [], tmp_path, DATABASE_URL=url, RECEIVER_BASIC_AUTH="campaign:s", PORT=str(busy_port)
    )
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"receiver: cannot listen on 0.0.0.0:{busy_port}: ")
    assert f"port {busy_port} is already in use" in line
    assert "`receiver serve --bind HOST:PORT` (or set PORT)" in line
    assert SECRET not in result.stdout + result.stderr
