"""Who may reach what, through real gunicorn: the X-Forwarded-For of a peer that is not the proxy,
/metrics from outside its allow-list, and a keyAuth passphrase sent as UTF-8 bytes.

Loopback has many addresses and gunicorn, bound to 127.0.0.1, accepts connections from any of
them: 127.0.0.1 plays the proxy (nginx on this host, RECEIVER_TRUSTED_PROXY_IPS' default) and
127.0.0.5 a client that reaches gunicorn directly. Requests go out through http.client with the
header bytes given as bytes (requests would re-encode them) from a chosen source address.
"""

import json

import psycopg
import pytest

import support

CAMPAIGN = "193.169.180.1"
PROXY = "127.0.0.1"
STRANGER = "127.0.0.5"
PASSPHRASE = "pässwörd€"  # ä, ö in Latin-1; € only in UTF-8 (and cp1252)


def send(server, method, path, source, headers=None, body=None):
    """One request from `source` to the receiver: (status, headers, body)."""
    return support.Client(server.port, source, timeout=15).request(method, path, body, headers)


def stored_events(database_url) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]


@pytest.fixture
def receiver_env(database_url, tmp_path):
    return {"DATABASE_URL": database_url, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}


def test_a_forwarded_header_from_a_peer_that_is_not_the_proxy_is_ignored(
    gunicorn_factory, receiver_env, database_url
):
    """The walk-around: behind nginx (one trusted proxy, only Campaign allowed), a client that
    reaches gunicorn directly and claims Campaign's address in X-Forwarded-For."""
    server = gunicorn_factory(
        {**receiver_env, "RECEIVER_TRUSTED_PROXIES": "1", "RECEIVER_ALLOWED_IPS": CAMPAIGN},
        workers=1,
    )
    forged = {**support.basic(), "X-Forwarded-For": CAMPAIGN}
    batch = support.body(support.event(id="forged"))

    status, headers, answer = send(server, "POST", "/webhook", STRANGER, forged, batch)

    assert status == 403, answer
    assert json.loads(answer) == {"error": "source address not allowed"}
    assert "WWW-Authenticate" not in headers
    assert stored_events(database_url) == 0

    # The same header on a connection from the proxy's address is nginx's hop, and believed.
    status, _, answer = send(server, "POST", "/webhook", PROXY, forged, batch)
    assert status == 200, answer
    assert json.loads(answer)["stored"] == 1
    assert stored_events(database_url) == 1


def test_metrics_only_for_their_allow_list(gunicorn_factory, receiver_env):
    default = gunicorn_factory(receiver_env, workers=1)
    narrow = gunicorn_factory(
        {**receiver_env, "RECEIVER_METRICS_ALLOWED_IPS": "127.0.0.1"}, workers=1
    )

    # The default: this host (all of 127.0.0.0/8).
    for source in (PROXY, STRANGER):
        status, headers, text = send(default, "GET", "/metrics", source)
        assert status == 200, (source, text)
        assert headers["Content-Type"].startswith("text/plain")
        assert b"# HELP receiver_" in text

    status, _, text = send(narrow, "GET", "/metrics", PROXY)
    assert status == 200
    assert b"# HELP receiver_" in text
    status, headers, text = send(narrow, "GET", "/metrics", STRANGER)
    assert status == 403
    assert headers["Content-Type"] == "application/json"
    assert json.loads(text) == {"error": "forbidden"}
    # A forged header changes nothing: the peer is not a proxy.
    status, _, text = send(narrow, "GET", "/metrics", STRANGER, {"X-Forwarded-For": PROXY})
    assert status == 403
    assert b"receiver_" not in text
    # The probes and the webhook are not affected by the metrics list.
    assert send(narrow, "GET", "/healthz", STRANGER)[0] == 200


def test_metrics_behind_nginx_check_the_forwarded_client(gunicorn_factory, receiver_env):
    """As deploy/systemd/receiver.env.example sets it up beside the nginx site: the private
    networks may scrape through nginx."""
    private = "127.0.0.0/8 ::1 10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 fc00::/7"
    settings = {"RECEIVER_TRUSTED_PROXIES": "1", "RECEIVER_METRICS_ALLOWED_IPS": private}
    server = gunicorn_factory({**receiver_env, **settings}, workers=1)

    assert send(server, "GET", "/metrics", PROXY, {"X-Forwarded-For": "10.0.0.9"})[0] == 200
    assert send(server, "GET", "/metrics", PROXY, {"X-Forwarded-For": CAMPAIGN})[0] == 403
    # Prometheus on this host scraping gunicorn directly (deploy/prometheus/prometheus.yml).
    assert send(server, "GET", "/metrics", PROXY)[0] == 200


def test_a_non_ascii_key_auth_passphrase_sent_as_utf8_bytes_is_accepted(
    gunicorn_factory, receiver_env, database_url
):
    """gunicorn passes header bytes above 0x7f through (decoded as Latin-1, as WSGI wants); the
    receiver compares the bytes, so Campaign's UTF-8 passphrase matches the configured one."""
    server = gunicorn_factory(
        {**receiver_env, "RECEIVER_KEY_AUTH": f"X-Api-Key: {PASSPHRASE}"}, workers=1
    )
    batch = support.body(support.event(id="utf8-key"))

    status, _, answer = send(
        server, "POST", "/webhook", PROXY, {"X-Api-Key": PASSPHRASE.encode("utf-8")}, batch
    )

    assert status == 200, answer
    assert json.loads(answer)["stored"] == 1
    assert stored_events(database_url) == 1
    # Other bytes are refused: the passphrase without its last character, and in UTF-16.
    for wrong in ("pässwörd".encode(), PASSPHRASE.encode("utf-16-le").replace(b"\x00", b"")):
        status, _, _ = send(server, "POST", "/webhook", PROXY, {"X-Api-Key": wrong}, batch)
        assert status == 401, wrong
