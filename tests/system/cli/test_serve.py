"""The receiver as deployed: real gunicorn workers, and the `receiver serve` command
(receiver.cli.serve, with receiver.web.gunicorn_conf)."""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from support import (
    GUNICORN_CONFIG,
    ROOT,
    Gunicorn,
    basic,
    body,
    event,
    free_port,
    post,
    sample,
    wait_until,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def gunicorn(database_url):
    server = Gunicorn({"DATABASE_URL": database_url}, workers=2)
    yield server
    server.stop()


def test_one_batch_from_eight_concurrent_clients_is_stored_once(gunicorn, query):
    # Half the events without an id, as in the documented open sample.
    batch = body(*[event(id=f"c-{i}") if i % 2 else event(mailingId=i) for i in range(100)])
    barrier = threading.Barrier(8)
    answers = [None] * 8

    def send(i):
        barrier.wait()
        answers[i] = gunicorn.post(batch)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status_code for a in answers] == [200] * 8
    assert sum(a.json()["stored"] for a in answers) == 100
    assert sum(a.json()["duplicates"] for a in answers) == 700
    assert query("SELECT count(*), count(DISTINCT event_key) FROM events") == [(100, 100)]


def test_chunked_body_over_the_limit_is_413(database_url, query):
    server = Gunicorn({"DATABASE_URL": database_url, "RECEIVER_MAX_BODY_BYTES": "4096"}, workers=1)
    try:
        chunk = body(*[event(id=f"chunk-{i}", pad="x" * 200) for i in range(40)])
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        headers = {"Authorization": requests_auth_header(), "Transfer-Encoding": "chunked"}
        connection.request(
            "POST",
            "/webhook",
            body=iter([chunk[:3000], chunk[3000:]]),
            headers=headers,
            encode_chunked=True,
        )
        assert connection.getresponse().status == 413
        connection.close()
        small = server.post(body(event(id="small")))
        assert small.status_code == 200
    finally:
        server.stop()
    assert query("SELECT event_key FROM events") == [("small",)]


def requests_auth_header():
    return basic()["Authorization"]


def test_receiver_serve_runs_embedded_postgres_with_generated_credentials(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "RECEIVER_"))}
    # The development state (embedded PostgreSQL, credentials) in a directory of the test's own.
    state = tmp_path / "state"
    env["RECEIVER_STATE_DIR"] = str(state)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "receiver", "serve", "--bind", f"127.0.0.1:{port}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        banner = read_until(process.stdout, "curl -u")
        user, password = re.search(r"curl -u (\S+?):(\S+) ", banner).groups()
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: healthy(url), timeout=30)
        opens = post(url, sample("open-batch.json"), basic(user, password))
        assert opens.status_code == 200
        assert opens.json()["stored"] == 1
        for expected_stored in (1, 0):
            bounce = post(url, sample("bounce-event.json"), basic(user, password))
            assert bounce.json()["stored"] == expected_stored
        assert post(url, b"[]", basic(user, "wrong")).status_code == 401
        assert (state / "credentials").stat().st_mode & 0o077 == 0
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0


def test_receiver_serve_refuses_to_start_without_credentials_in_production(database_url):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEIVER_")}
    env["DATABASE_URL"] = database_url
    result = subprocess.run(
        [sys.executable, "-m", "receiver", "serve"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no credentials configured" in result.stderr


def deployment_env(tmp_path, **settings):
    """No DATABASE_URL, no RECEIVER_ setting and no PORT but `settings`; a state dir of its own."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "RECEIVER_")) and k != "PORT"
    }
    env["RECEIVER_STATE_DIR"] = str(tmp_path / "state")
    env.update(settings)
    return env


def serve_until_exit(args, env, cwd, timeout=20):
    """`receiver serve ARGS`; its exit status, stdout and stderr. A serve still running after
    `timeout` seconds is stopped (with whatever it started) and fails the test."""
    process = subprocess.Popen(
        [sys.executable, "-m", "receiver", "serve", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # forwarded to gunicorn; the embedded server stops
        stdout, stderr = process.communicate(timeout=60)
        raise AssertionError(f"receiver serve still running after {timeout} s:\n{stdout}") from None
    return process.returncode, stdout, stderr


def refuses_as_a_deployment(result, state, port, variables):
    returncode, stdout, stderr = result
    assert returncode == 2, stdout + stderr
    assert stdout == ""
    [line] = stderr.splitlines()
    assert line.startswith("receiver: configuration error: DATABASE_URL is not set;")
    for variable in variables:
        assert variable in line
    assert "this machine's disk only" in line
    assert "set DATABASE_URL" in line and "--dev" in line
    assert not (state / "pgdata").exists()
    assert not (state / "credentials").exists()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listening


@pytest.mark.parametrize(
    "variable, value",
    [
        ("RECEIVER_BASIC_AUTH", "campaign:s3cret-pass"),
        ("RECEIVER_KEY_AUTH", "X-Api-Key: k"),
        ("RECEIVER_BASIC_AUTH_FILE", "basic-auth"),
        ("RECEIVER_KEY_AUTH_FILE", "key-auth"),
    ],
)
def test_serve_with_credentials_and_no_database_url_refuses_to_keep_events_on_its_disk(
    tmp_path, variable, value
):
    (tmp_path / "basic-auth").write_text("campaign:s3cret-pass\n")
    (tmp_path / "key-auth").write_text("X-Api-Key: k\n")
    if variable.endswith("_FILE"):
        value = str(tmp_path / value)
    env = deployment_env(tmp_path, **{variable: value})
    port = free_port()
    started = time.monotonic()
    result = serve_until_exit(["--bind", f"127.0.0.1:{port}"], env, tmp_path)
    assert time.monotonic() - started < 15
    refuses_as_a_deployment(result, tmp_path / "state", port, [variable])
    assert "s3cret-pass" not in result[1] + result[2]


def test_serve_with_port_alone_and_no_database_url_refuses_to_keep_events_on_its_disk(tmp_path):
    port = free_port()
    env = deployment_env(tmp_path, PORT=str(port))
    started = time.monotonic()
    result = serve_until_exit([], env, tmp_path)
    assert time.monotonic() - started < 15
    refuses_as_a_deployment(result, tmp_path / "state", port, ["PORT"])


def test_serve_dev_with_database_url_is_an_error_before_anything_else(tmp_path, database_url):
    env = deployment_env(tmp_path, DATABASE_URL=database_url)
    with socket.socket() as busy:  # the --dev error comes first, not "cannot listen"
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        returncode, stdout, stderr = serve_until_exit(
            ["--dev", "--bind", f"127.0.0.1:{port}"], env, tmp_path
        )
    assert returncode == 2
    assert stdout == ""
    [line] = stderr.splitlines()
    assert line.startswith("receiver: configuration error: --dev ")
    assert "DATABASE_URL is set" in line
    assert not (tmp_path / "state").exists()


def test_gunicorn_refuses_to_boot_without_credentials(database_url):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEIVER_")}
    env["DATABASE_URL"] = database_url
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            GUNICORN_CONFIG,
            "--bind",
            "127.0.0.1:0",
            "receiver:create_app()",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # The master refuses before any worker starts: one error line, no worker's traceback.
    assert result.returncode == 3
    assert "receiver: configuration error: no credentials configured" in result.stderr
    assert "Traceback" not in result.stderr and "Booting worker" not in result.stderr


def read_until(stream, marker, limit=200):
    seen = []
    for _ in range(limit):
        line = stream.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"{marker!r} never printed; got {''.join(seen)!r}")


def healthy(base):
    try:
        return requests.get(base + "/healthz", timeout=1).status_code == 200
    except requests.RequestException:  # refused, or accepted before a worker answers
        return False


def test_summary_is_json(gunicorn):
    answer = gunicorn.post(body(event(id="json")))
    assert json.loads(answer.text) == {
        "received": 1,
        "stored": 1,
        "duplicates": 0,
        "quarantined": 0,
    }
