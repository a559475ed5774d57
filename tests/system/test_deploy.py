"""The deploy/ folder, used as shipped: nginx, systemd, Prometheus, TLS from gunicorn.

Tools that are not Python packages (promtool, prometheus, nginx, systemd-analyze, openssl) are
run for real when installed and the test is skipped, naming the package, when not. On Debian or
Ubuntu: apt-get install -y prometheus nginx (openssl and systemd are usually there already).
The same files checked without running anything: tests/unit/test_deploy.py.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import yaml

from receiver import config as receiver_config

import support
from support.deploy import (
    ENV_EXAMPLE,
    NGINX_SITE,
    PROMETHEUS_CONFIG,
    PROMETHEUS_DIR,
    ROOT,
    UNIT,
    UNIT_HOME,
    VENV_BIN,
    alert_rules,
    env_file,
    exported_series,
    gunicorn_setting,
    load_yaml,
    local_command,
    unit_environment,
    unit_settings,
    unit_value,
)

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
)
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
OPENSSL = shutil.which("openssl")

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian/Ubuntu: apt-get install prometheus)"
)
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="prometheus server not installed (Debian/Ubuntu: apt-get install prometheus)",
)
needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx not installed (Debian/Ubuntu: apt-get install nginx)"
)
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed (package systemd)"
)
needs_openssl = pytest.mark.skipif(
    OPENSSL is None, reason="openssl CLI not installed (package openssl)"
)


# --- Prometheus -------------------------------------------------------------------------------


@needs_promtool
@pytest.mark.parametrize(
    "args",
    [
        ["check", "rules", "deploy/prometheus/alerts.yml"],
        ["check", "config", "deploy/prometheus/prometheus.yml"],
        ["test", "rules", "deploy/prometheus/alerts.test.yml"],
    ],
    ids=["check-rules", "check-config", "test-rules"],
)
def test_promtool(args):
    result = subprocess.run(
        [PROMTOOL, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


@contextmanager
def running(command, log_path, **kwargs):
    """A subprocess for the duration of the block, its output in log_path; stopped after."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, **kwargs)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def log_tail(path, lines=40):
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])


@pytest.mark.slow
@needs_prometheus
def test_prometheus_scrapes_a_running_receiver(database_url, tmp_path):
    server = support.Gunicorn(
        {"DATABASE_URL": database_url, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")},
        workers=2,
    )
    try:
        answer = server.post(support.body(support.event(id="x")))
        assert answer.status_code == 200, answer.text
        assert answer.json()["stored"] == 1

        # The shipped configuration, pointed at this receiver, sped up, its alerts loaded,
        # without the Alertmanager (none runs here).
        config = load_yaml(PROMETHEUS_CONFIG)
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
        del config["alerting"]
        (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "receiver"]
        job["scrape_timeout"] = "1s"  # may not exceed the interval
        job["static_configs"] = [{"targets": [f"127.0.0.1:{server.port}"]}]
        config_path = tmp_path / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        port = support.free_port()
        api = f"http://127.0.0.1:{port}/api/v1"
        log = tmp_path / "prometheus.log"
        command = [
            PROMETHEUS,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        with running(command, log) as prometheus:

            def get(path, **params):
                if prometheus.poll() is not None:
                    raise AssertionError(f"prometheus exited:\n{log_tail(log)}")
                try:
                    answer = requests.get(f"{api}/{path}", params=params, timeout=2)
                except requests.ConnectionError:
                    return None
                return answer.json()["data"] if answer.status_code == 200 else None

            def stored_opens():
                data = get("query", query="receiver_events_total") or {"result": []}
                return [
                    series
                    for series in data["result"]
                    if series["metric"].get("type") == "open"
                    and series["metric"].get("outcome") == "stored"
                ]

            (series,) = support.wait_until(stored_opens, timeout=60, interval=0.5)
            assert float(series["value"][1]) == 1
            assert series["metric"]["job"] == "receiver"

            # What /metrics really serves is what exported_series() computes (the dashboard and
            # alert checks rely on it).
            names = {name for name in get("label/__name__/values") if name.startswith("receiver_")}
            assert "receiver_events_total" in names
            assert names <= set(exported_series()), names - set(exported_series())

            # Every alert rule loaded and evaluated against real series without an error.
            def evaluated_rules():
                groups = get("rules") or {"groups": []}
                rules = [rule for group in groups["groups"] for rule in group["rules"]]
                return rules if rules and all(r["health"] != "unknown" for r in rules) else None

            rules = support.wait_until(evaluated_rules, timeout=30, interval=0.5)
            assert {rule["name"] for rule in rules} == {rule["alert"] for rule in alert_rules()}
            assert all(rule["health"] == "ok" for rule in rules), rules
            # The receiver is up and healthy: nothing fires.
            assert not [rule for rule in rules if rule["state"] == "firing"], rules
    finally:
        server.stop()


# --- TLS ----------------------------------------------------------------------------------------


def make_certificate(directory):
    """A self-signed certificate for 127.0.0.1 (and localhost), and its key."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            OPENSSL,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def receiver_env(database_url, tmp_path, **settings):
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "RECEIVER_BASIC_AUTH": f"{support.USER}:{support.PASSWORD}",
        # Our own directory, not a fresh temporary one per process that nobody removes.
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        **settings,
    }


def wait_for_gunicorn(process, log, url, **kwargs):
    def ready():
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited with {process.returncode}:\n{log_tail(log)}")
        try:
            return requests.get(url + "/healthz", timeout=1, **kwargs).status_code == 200
        except (requests.ConnectionError, requests.Timeout):  # booting on a busy machine
            return False

    support.wait_until(ready, timeout=30, interval=0.1)


@pytest.mark.slow
@needs_openssl
def test_gunicorn_serves_tls_itself(database_url, tmp_path):
    """Without a proxy: `--certfile/--keyfile`, the TLS gunicorn does itself."""
    cert, key = make_certificate(tmp_path)
    port = support.free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        support.GUNICORN_CONFIG,
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--certfile",
        str(cert),
        "--keyfile",
        str(key),
        "receiver:create_app()",
    ]
    env = receiver_env(database_url, tmp_path)
    log = tmp_path / "gunicorn.log"
    with running(command, log, env=env, cwd=ROOT) as process:
        url = f"https://127.0.0.1:{port}"
        wait_for_gunicorn(process, log, url, verify=str(cert))

        answer = support.post(url, support.body(support.event(id="x")), verify=str(cert))
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"received": 1, "stored": 1, "duplicates": 0, "quarantined": 0}

        # The same port does not speak plain HTTP: the handshake fails and the connection ends.
        with pytest.raises(requests.ConnectionError):
            support.post(f"http://127.0.0.1:{port}", support.body(support.event(id="y")))
        # And a client that does not trust the certificate refuses it.
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(url + "/healthz", timeout=5)


# --- nginx --------------------------------------------------------------------------------------


def nginx_site_for_test(tls_port, http_port, upstream_port, cert, key):
    """The shipped site with only its addresses and certificate changed."""
    text = NGINX_SITE.read_text()
    replacements = [
        (r"listen \[::\]:(80|443)[^;]*;", ""),  # loopback IPv4 is enough here
        (r"listen 80;", f"listen 127.0.0.1:{http_port};"),
        (r"listen 443 ", f"listen 127.0.0.1:{tls_port} "),
        (r"server 127\.0\.0\.1:8000;", f"server 127.0.0.1:{upstream_port};"),
        (r"ssl_certificate\s+\S+;", f"ssl_certificate {cert};"),
        (r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {key};"),
    ]
    for pattern, replacement in replacements:
        text, count = re.subn(pattern, replacement, text)
        assert count, f"{pattern!r} not found in {NGINX_SITE}"
    return text


def nginx_main_config(directory, site):
    temp = {name: directory / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    return f"""
daemon off;
worker_processes 1;
{"user root;" if os.geteuid() == 0 else ""}
pid {directory / "nginx.pid"};
error_log {directory / "error.log"} info;
events {{ worker_connections 64; }}
http {{
    access_log {directory / "access.log"};
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    include {site};
}}
"""


def body_of_size(size):
    """A valid one-event batch of exactly `size` bytes."""
    base = support.body(support.event(id=f"padded-{size}", padding=""))
    return support.body(support.event(id=f"padded-{size}", padding="x" * (size - len(base))))


@pytest.mark.slow
@needs_nginx
@needs_openssl
def test_nginx_terminates_tls_and_forwards_the_client_address(database_url, tmp_path):
    """The shipped site in front of gunicorn, set up as the docs say (one trusted proxy, an
    allow-list). Loopback has many addresses: 127.0.0.5 plays Campaign, 127.0.0.1 a stranger
    (on this host, so inside the private allow-lists of /metrics and /readyz), 127.0.0.9 a
    client that reaches gunicorn without nginx. nginx connects to gunicorn from 127.0.0.1, the
    trusted proxy address (RECEIVER_TRUSTED_PROXY_IPS' default)."""
    campaign = "127.0.0.5"
    cert, key = make_certificate(tmp_path)
    server = support.Gunicorn(
        {
            "DATABASE_URL": database_url,
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
            "RECEIVER_TRUSTED_PROXIES": "1",
            "RECEIVER_ALLOWED_IPS": campaign,
        },
        workers=1,
    )
    try:
        tls_port, http_port = support.free_port(), support.free_port()
        site = tmp_path / "receiver.conf"
        site.write_text(nginx_site_for_test(tls_port, http_port, server.port, cert, key))
        main = tmp_path / "nginx.conf"
        main.write_text(nginx_main_config(tmp_path, site))
        base = [NGINX, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(main)]
        check = subprocess.run([*base, "-t"], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr

        with running(base, tmp_path / "nginx.out") as nginx:
            from_campaign = support.Client(tls_port, campaign, cert)
            from_stranger = support.Client(tls_port, "127.0.0.1", cert)

            def listening():
                if nginx.poll() is not None:
                    raise AssertionError(log_tail(tmp_path / "error.log"))
                try:
                    return from_campaign.request("GET", "/healthz")[0] == 200
                except OSError:
                    return False

            support.wait_until(listening, timeout=20, interval=0.1)

            # Campaign's batch over TLS: the receiver sees Campaign's address (nginx's hop).
            status, headers, answer = from_campaign.request(
                "POST", "/webhook", support.body(support.event(id="x")), support.basic()
            )
            assert status == 200, answer
            assert json.loads(answer)["stored"] == 1
            # nginx's request id reached the receiver, which echoes it: one id in both logs.
            assert re.fullmatch(r"[0-9a-f]{32}", headers["X-Request-Id"])

            # A flood of wrong passwords leaves no half-dead connection in nginx's upstream pool
            # (`keepalive 4`): each refusal says `Connection: close`, so Campaign's next batch
            # is never sent on a socket gunicorn no longer reads (the hostile review saw 502s;
            # tests/system/web/test_webhook.py reproduces the half-dead connection itself).
            wrong = support.basic(password="wrong")
            refused = [
                from_campaign.request("POST", "/webhook", b"[]", wrong)[0] for _ in range(40)
            ]
            assert set(refused) == {401}
            status, _, answer = from_campaign.request(
                "POST", "/webhook", support.body(support.event(id="after-flood")), support.basic()
            )
            assert status == 200, answer

            # A stranger forging Campaign's address gets nowhere: the receiver reads the hop
            # nginx appended, not the one the client wrote.
            forged = {**support.basic(), "X-Forwarded-For": campaign}
            status, _, _ = from_stranger.request(
                "POST", "/webhook", support.body(support.event(id="y")), forged
            )
            assert status == 403
            # Nor does going around nginx: gunicorn believes X-Forwarded-For only on nginx's
            # connections (from 127.0.0.1); anyone else is judged by its own address.
            status, _, _ = support.Client(server.port, "127.0.0.9").request(
                "POST", "/webhook", support.body(support.event(id="z")), forged
            )
            assert status == 403
            # And a connection from nginx's address that did not pass through nginx has no hop.
            status, _, _ = support.Client(server.port, "127.0.0.1").request(
                "POST", "/webhook", support.body(support.event(id="z")), support.basic()
            )
            assert status == 403

            # Body limit: exactly RECEIVER_MAX_BODY_BYTES passes nginx and is stored; one byte
            # more is refused by nginx itself.
            limit = int(receiver_config.SETTINGS["RECEIVER_MAX_BODY_BYTES"][1])
            status, _, answer = from_campaign.request(
                "POST", "/webhook", body_of_size(limit), support.basic()
            )
            assert status == 200, answer
            assert json.loads(answer)["stored"] == 1
            status, _, answer = from_campaign.request(
                "POST", "/webhook", body_of_size(limit + 1), support.basic()
            )
            assert status == 413
            # nginx's own HTML page, not the receiver's JSON: refused before gunicorn saw it.
            assert b"<title>413 Request Entity Too Large</title>" in answer

            # /healthz is public; /readyz and /metrics only from this host (127.0.0.1) and
            # private networks; the rest 404.
            assert from_campaign.request("GET", "/healthz")[0] == 200
            assert from_campaign.request("GET", "/readyz")[0] == 403
            status, _, text = from_stranger.request("GET", "/readyz")
            assert status == 200
            assert json.loads(text) == {"status": "ready"}
            status, _, text = from_stranger.request("GET", "/metrics")
            assert status == 200
            assert b'receiver_events_total{outcome="stored",type="open"} 3.0' in text
            assert from_campaign.request("GET", "/metrics")[0] == 403
            assert from_campaign.request("GET", "/webhook/../metrics")[0] == 403
            assert from_campaign.request("GET", "/webhook/../readyz")[0] == 403
            assert from_campaign.request("GET", "/")[0] == 404

            # Port 80 only redirects to HTTPS, keeping the method (308).
            status, headers, _ = support.Client(http_port, campaign).request(
                "POST", "/webhook", b"[]", support.basic()
            )
            assert status == 308
            assert headers["Location"] == "https://receiver.example.com/webhook"
    finally:
        server.stop()


# --- systemd ------------------------------------------------------------------------------------


@needs_systemd_analyze
@pytest.mark.parametrize(
    "names",
    [["receiver.service"], ["receiver-maintain.service", "receiver-maintain.timer"]],
    ids=["receiver", "maintain"],
)
def test_systemd_analyze_verifies_the_unit(tmp_path, names):
    units = []
    for name in names:
        unit = tmp_path / name
        text = (UNIT.parent / name).read_text().replace(f"{UNIT_HOME}/.venv/bin", str(VENV_BIN))
        unit.write_text(text.replace(UNIT_HOME, str(ROOT)))
        units.append(str(unit))
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", *units], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 even for unknown keys or bad values; it reports them, so expect silence.
    assert result.returncode == 0, result.stderr
    assert not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


@pytest.mark.slow
def test_systemd_commands_migrate_serve_and_stop_on_sigterm(database_url, tmp_path):
    """The unit's ExecStartPre and ExecStart with the example's settings, as systemd runs them
    (minus systemd: its /run/receiver becomes a temporary directory)."""
    settings = unit_settings()
    # systemd creates the RuntimeDirectory before ExecStartPre; `receiver migrate` needs it too
    # (importing the package declares the metrics, which open their files there).
    (tmp_path / "metrics").mkdir()
    # systemd's LoadCredential= copies /etc/receiver/basic-auth into the credentials directory
    # (%d); here a directory of the test's, holding a password Campaign allows (spaces, colons).
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    password = "pass word: with colons"
    (credentials / "basic-auth").write_text(f"{support.USER}:{password}\n")
    unit_env = {k: v.replace("%d", str(credentials)) for k, v in unit_environment(settings).items()}
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        **env_file(ENV_EXAMPLE),
        **unit_env,
        "DATABASE_URL": database_url,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    migrate = subprocess.run(
        local_command(unit_value(settings, "ExecStartPre")),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert migrate.returncode == 0, migrate.stderr
    assert "migration(s) applied" in migrate.stdout

    port = support.free_port()
    # The unit binds gunicorn's default 127.0.0.1:8000; a test takes a free port instead.
    env["GUNICORN_CMD_ARGS"] = f"--bind 127.0.0.1:{port}"
    log = tmp_path / "gunicorn.log"
    url = f"http://127.0.0.1:{port}"
    with running(local_command(unit_value(settings, "ExecStart")), log, env=env, cwd=ROOT) as (
        process
    ):
        wait_for_gunicorn(process, log, url)
        batch = support.body(support.event(id="x"))
        # Behind nginx (RECEIVER_TRUSTED_PROXIES=1) the client is the hop nginx appends, and
        # only Campaign's address is allowed. The hop is believed on connections from nginx's
        # address, 127.0.0.1 (RECEIVER_TRUSTED_PROXY_IPS), only: the same header from another
        # address (127.0.0.5, a client that reached gunicorn directly) is ignored.
        as_nginx = {**support.basic(password=password), "X-Forwarded-For": "193.169.180.1"}
        status, _, answer = support.Client(port, "127.0.0.1").request(
            "POST", "/webhook", batch, as_nginx
        )
        assert status == 200, answer
        status, _, answer = support.Client(port, "127.0.0.5").request(
            "POST", "/webhook", batch, as_nginx
        )
        assert status == 403, answer
        answer = support.post(url, batch, support.basic(password=password))
        assert answer.status_code == 403

        # systemctl stop: KillSignal to the main process; it must be gone within TimeoutStopSec.
        started = time.monotonic()
        process.send_signal(getattr(signal, unit_value(settings, "KillSignal")))
        assert process.wait(timeout=int(unit_value(settings, "TimeoutStopSec"))) == 0
        assert time.monotonic() - started < gunicorn_setting("graceful_timeout")
