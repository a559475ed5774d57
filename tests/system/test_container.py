"""The container image (deploy/container/Containerfile), built and run for real with podman.

Built once per session on a Debian base made here (support.container: debootstrap, cached), then
run as production runs it: `receiver migrate` as a one-shot container, the server with a
read-only root filesystem and a tmpfs on /tmp, its secrets from mounted files, stopped with
SIGTERM in the middle of a batch. The containers share the host's network, so the receiver in
them reaches the test PostgreSQL at 127.0.0.1:5432; with the embedded server (a Unix socket)
these tests skip: CI's second pass runs them against 127.0.0.1:5432.
"""

import threading
import time
import uuid

import psycopg
import pytest
import requests
from psycopg.conninfo import conninfo_to_dict

from support import basic, body, event, free_port, wait_until
from support import container as podman

# What a refusal must say, in one line, for each way of starting the image without a database.
NO_DATABASE = "DATABASE_URL is not set"


def report(config, text):
    """Print `text` even with pytest's output capture on: CI's log shows the size and times."""
    with config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        print(text)


@pytest.fixture(scope="session")
def image(server_url, pytestconfig):
    """The image, built from the checkout (once per session, on the cached base)."""
    host = conninfo_to_dict(server_url).get("host") or ""
    if not host or host.startswith("/"):
        pytest.skip(
            "the test PostgreSQL listens on a Unix socket (the embedded server), which a "
            "container does not reach; run with TEST_DATABASE_URL=postgresql://...@127.0.0.1:5432/"
            "... (CI's second pass does)"
        )
    reason = podman.missing_tools()
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    base = podman.base_image()
    based = time.monotonic()
    tag = podman.build_image(base)
    built = time.monotonic()
    size = podman.image_config(tag)["Size"]
    report(
        pytestconfig,
        f"\ncontainer image {tag}: {size / 1e6:.0f} MB; base {based - started:.1f} s, "
        f"build {built - based:.1f} s",
    )
    return tag


def refusal(result) -> str:
    """The one line a container that refused to start said (podman's own log lines left out)."""
    lines = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and not line.startswith("time=")  # podman's, not the container's
    ]
    assert result.returncode != 0, result.stdout + result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


def test_image_is_non_root_has_no_build_tools_and_a_healthcheck(image):
    info = podman.image_config(image)
    config = info["Config"]
    # Numeric, so that Kubernetes' runAsNonRoot can check it.
    assert config["User"] == "10001:10001"
    assert "8000/tcp" in config["ExposedPorts"]
    assert "PORT=8000" in config["Env"]
    assert info["Healthcheck"]["Test"][0] == "CMD"
    assert "/healthz" in " ".join(info["Healthcheck"]["Test"])
    assert config["StopSignal"] in ("SIGTERM", "15")
    # The default command is the Procfile's web: gunicorn with the packaged settings.
    assert config["Cmd"] == [
        "gunicorn", "-c", "python:receiver.web.gunicorn_conf", "receiver:create_app()",
    ]  # fmt: skip
    look = podman.run_once(
        image,
        "sh",
        "-c",
        "id -u; for tool in gcc cc c++ make ld as pip pip3 /opt/receiver/bin/pip; do "
        "command -v $tool; done; "
        "python3 -c 'import setuptools' 2>/dev/null && echo setuptools; "
        "python3 -c 'import pgserver' 2>/dev/null && echo pgserver; true",
        options=["--no-healthcheck"],
    )
    assert look.returncode == 0, look.stderr
    uid, *found = look.stdout.split()
    assert uid == "10001"
    # No compiler, no packaging tools in the receiver's environment, no embedded PostgreSQL.
    # (A base like python:3.11-slim has a pip of its own outside the virtualenv; this one not.)
    assert found == [], found


def test_without_database_url_every_start_refuses_in_one_line(image):
    quiet = ["--no-healthcheck"]
    maintenance = {"RECEIVER_MAINTENANCE_DATABASE_URL": "postgresql://nowhere/x"}
    for argv, env in (
        ([], {}),
        ([], maintenance),  # the commands' database, not the server's
        (["receiver", "migrate"], {}),
        (["receiver", "serve"], maintenance),
    ):
        line = refusal(podman.run_once(image, *argv, env=env, options=quiet))
        assert NO_DATABASE in line and "embedded" in line, (argv, env, line)
    # Set, but no credentials: gunicorn's workers would each print a traceback; one line.
    line = refusal(
        podman.run_once(image, env={"DATABASE_URL": "postgresql://nowhere/x"}, options=quiet)
    )
    assert "no credentials configured" in line
    line = refusal(
        podman.run_once(
            image,
            env={"DATABASE_URL_FILE": "/run/secrets/missing", "RECEIVER_BASIC_AUTH": "a:b"},
            options=quiet,
        )
    )
    assert line == "receiver: DATABASE_URL_FILE: cannot read /run/secrets/missing"


def read_only(tmp_path, secrets: dict) -> list[str]:
    """`podman run` options: a read-only root with a tmpfs on /tmp only (podman's own tmpfs on
    /run and /var/tmp off, as docker and Kubernetes have it), and each secret a file mounted
    read-only under /run/secrets/, mode 0644 (a Kubernetes Secret's default)."""
    options = ["--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp:rw,size=64m"]
    for name, content in secrets.items():
        path = tmp_path / name
        path.write_text(content)
        path.chmod(0o644)
        options += ["-v", f"{path}:/run/secrets/{name}:ro"]
    return options


def start_server(image, env, options):
    """The default command in a detached container on a free port; (container, seconds from
    `podman run` to /readyz answering 200)."""
    port = free_port()
    started = time.monotonic()
    server = podman.Container(image, env={"PORT": str(port), **env}, options=options)
    server.url = f"http://127.0.0.1:{port}"

    def ready():
        if not server.running():
            raise AssertionError(f"the container exited:\n{server.logs()}")
        try:
            return requests.get(server.url + "/readyz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_until(ready, timeout=60, interval=0.05)
    except BaseException:
        server.remove()
        raise
    return server, time.monotonic() - started


def stored(database_url, client_id) -> int:
    with psycopg.connect(database_url) as conn:
        query = "SELECT count(*) FROM events WHERE client_id = %s"
        return conn.execute(query, (client_id,)).fetchone()[0]


def test_migrate_then_serve_read_only_with_secrets_from_files(
    image, empty_database, tmp_path, pytestconfig
):
    password = "pa ss:w0rd"  # a file's password may hold blanks and colons
    options = read_only(
        tmp_path, {"database-url": empty_database + "\n", "basic-auth": f"campaign:{password}\n"}
    )
    secrets = {
        "DATABASE_URL_FILE": "/run/secrets/database-url",
        "RECEIVER_BASIC_AUTH_FILE": "/run/secrets/basic-auth",
    }
    # The release step, a one-shot container of its own, on an empty database.
    migrate = podman.run_once(
        image, "receiver", "migrate", env=secrets, options=[*options, "--no-healthcheck"]
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert "migration(s) applied" in migrate.stdout

    server, seconds = start_server(image, secrets, options)
    try:
        report(pytestconfig, f"\ncontainer: {seconds:.2f} s from `podman run` to /readyz 200")
        client_id = uuid.uuid4().int % 10**12
        answer = requests.post(
            server.url + "/webhook",
            data=body(event(clientId=client_id)),
            headers=basic("campaign", password),
            timeout=15,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["stored"] == 1
        assert stored(empty_database, client_id) == 1
        anonymous = requests.post(server.url + "/webhook", data=body(event()), timeout=15)
        assert anonymous.status_code == 401
        assert requests.get(server.url + "/healthz", timeout=5).json() == {"status": "ok"}

        assert server.inspect()["HostConfig"]["ReadonlyRootfs"] is True
        assert server.exec("id", "-u").stdout.strip() == "10001"
        denied = server.exec("sh", "-c", "touch /opt/receiver/x || touch /x")
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr
        # The workers' metric files live on the tmpfs, and /metrics sums them (from 127.0.0.1,
        # the default RECEIVER_METRICS_ALLOWED_IPS, over the host's network).
        assert server.exec("ls", "/tmp/receiver-metrics").stdout.strip()
        metrics = requests.get(server.url + "/metrics", timeout=5).text
        assert 'receiver_requests_total{outcome="ok",status="200"} 1.0' in metrics
        # The image's HEALTHCHECK, run by the container engine.
        check = podman.podman("healthcheck", "run", server.name, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        server.remove()


def test_sigterm_during_a_batch_commits_it_before_the_answer(image, database_url, tmp_path):
    """A stop in the middle of a batch: the batch is answered 200 and committed, or it is not
    acknowledged at all; never 200 without the row."""
    server, _ = start_server(
        image,
        {"DATABASE_URL": database_url, "RECEIVER_BASIC_AUTH_FILE": "/run/secrets/basic-auth"},
        read_only(tmp_path, {"basic-auth": "campaign:s3cret\n"}),
    )
    client_id = uuid.uuid4().int % 10**12
    answers = []
    try:
        with psycopg.connect(database_url) as blocker:
            # Inserts into events wait for this lock: the batch is in flight until it goes.
            blocker.execute("LOCK TABLE events IN SHARE MODE")

            def send():
                try:
                    answers.append(
                        requests.post(
                            server.url + "/webhook",
                            data=body(event(clientId=client_id)),
                            headers=basic("campaign", "s3cret"),
                            timeout=30,
                        )
                    )
                except requests.RequestException as error:  # not acknowledged
                    answers.append(error)

            sender = threading.Thread(target=send)
            sender.start()
            with psycopg.connect(database_url, autocommit=True) as watcher:
                wait_until(
                    lambda: watcher.execute(
                        "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock'"
                    ).fetchone(),
                    timeout=15,
                )
            server.signal("TERM")  # what `podman stop`, docker and the kubelet send
            time.sleep(1.0)
            assert server.running(), "the stop did not wait for the batch in flight"
        # The lock is gone (the blocker's transaction ended): the batch commits, then answers.
        sender.join(timeout=30)
        assert server.wait(timeout=30) == 0, server.logs()
    finally:
        server.remove()
    (answer,) = answers
    if isinstance(answer, requests.Response) and answer.status_code == 200:
        assert stored(database_url, client_id) == 1, "acknowledged but not stored"
    else:
        pytest.fail(f"the batch in flight was not finished by the graceful stop: {answer!r}")
