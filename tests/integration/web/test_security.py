"""Security properties test_auth.py does not cover: every route but the probes is closed, secrets
and payloads stay out of logs, answers and metrics, and SQL injection is stored as plain text.

test_auth.py already checks the credential logic itself (wrong user or password, keyAuth, rotation,
the allow-list, no echo of a refused password in the 401); this file checks the surroundings.
That all SQL is parameterised is a static scan of the package: tests/unit/test_security.py.
"""

import base64
import json
import logging
import os
import uuid

import psycopg
import pytest

from receiver import create_app
from receiver.config import Config, KeyAuth
from receiver.storage import db as receiver_db
from receiver.web import requestlog

from support import PASSWORD, USER, admin_execute, basic, body, event, post, with_database

# Answer without credentials by design: the platform's probes and Prometheus' scrape.
PUBLIC = {("/healthz", "GET"), ("/readyz", "GET"), ("/metrics", "GET")}

API_KEY = "key-Secret-7f3a91"
DB_PASSWORD = "db-Pa55-Secret-c41e"
EMAIL = "jane.doe+private@example.org"


def token(user, password):
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def answer_text(response) -> str:
    """Everything a client sees of an answer: status line, headers and body."""
    return f"{response.status}\n{response.headers}\n{response.get_data(as_text=True)}"


def count(query, table):
    return query(f"SELECT count(*) FROM {table}")[0][0]  # noqa: S608 (fixed table names)


# --- closed by default ---


@pytest.fixture(scope="module")
def closed_receiver(server_url, template_db):
    """A receiver (Basic and keyAuth) for the many refusal cases, on one database that must end
    up with nothing in it; (client, count of rows in events and quarantine)."""
    name = f"receiver_security_{uuid.uuid4().hex[:12]}"
    admin_execute(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    url = with_database(server_url, name)
    app = create_app(
        Config(
            database_url=url,
            basic_auth=((USER, PASSWORD),),
            key_auth=(KeyAuth("X-Api-Key", API_KEY),),
        )
    )

    def stored():
        with psycopg.connect(url) as conn:
            return conn.execute(
                "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM quarantine)"
            ).fetchone()[0]

    yield app.test_client(), stored
    receiver_db.close_pool(app)
    admin_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def routes(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            values = {name: "1" for name in rule.arguments}
            yield rule.rule, method, app.url_map.bind("localhost").build(rule.endpoint, values)


def test_every_route_but_the_probes_refuses_anonymous_requests(make_client, query):
    # With the change feed on: without readers its routes do not exist at all (404,
    # tests/integration/web/test_feed.py), which would prove nothing here.
    client = make_client(feed_basic_auth=(("crm", "feed-pass"),))
    checked = []
    for rule, method, url in routes(client.application):
        if (rule, method) in PUBLIC:
            continue
        response = client.open(url, method=method, data=body(event(id="anonymous")))
        assert response.status_code == 401, (method, rule, response.status_code)
        assert response.headers["WWW-Authenticate"].startswith("Basic")
        checked.append((rule, method))

    assert ("/webhook", "POST") in checked
    assert count(query, "events") == 0
    assert count(query, "quarantine") == 0


@pytest.mark.parametrize(
    "headers",
    [{}, basic(password="wrong"), {"Authorization": "Basic !!!"}],
    ids=["anonymous", "wrong-password", "malformed"],
)
def test_unauthenticated_content_is_never_parsed_or_quarantined(client, query, headers):
    # Anyone can reach the URL: without credentials a body must not reach the quarantine
    # (or anyone could fill the table), nor be parsed at all.
    for data in (b"<not json>", b"[" * 5000, body(event(id="x")), b"\xff" * 100):
        response = post(client, data, headers)
        assert response.status_code == 401
    assert count(query, "events") == 0
    assert count(query, "quarantine") == 0


def test_an_oversized_anonymous_body_is_refused_without_being_read(make_client, query):
    client = make_client(max_body_bytes=2048)

    response = post(client, b"[" + b" " * 100_000 + b"]", {})

    assert response.status_code == 401  # not 413: the body was never read
    assert count(query, "quarantine") == 0


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        (f"/webhook?user={USER}&password={PASSWORD}", {}),
        (f"/webhook?username={USER}&pass={PASSWORD}", {}),
        (f"/webhook?api_key={API_KEY}", {}),
        (f"/webhook?X-Api-Key={API_KEY}", {}),
        (f"/webhook?access_token={API_KEY}", {}),
        (f"/webhook?authorization=Basic%20{token(USER, PASSWORD)}", {}),
        ("/webhook", {"Proxy-Authorization": f"Basic {token(USER, PASSWORD)}"}),
        ("/webhook", {"X-Authorization": f"Basic {token(USER, PASSWORD)}"}),
        ("/webhook", {"Cookie": f"Authorization=Basic {token(USER, PASSWORD)}"}),
        ("/webhook", {"Cookie": f"X-Api-Key={API_KEY}"}),
        ("/webhook", {"X-Api-Key-Override": API_KEY}),
    ],
)
def test_credentials_anywhere_but_their_header_are_ignored(closed_receiver, url, headers):
    client, stored = closed_receiver

    response = post(client, body(event()), headers, path=url)

    assert response.status_code == 401
    assert stored() == 0


@pytest.mark.parametrize(
    "authorization",
    [
        f"Basic {token(USER.upper(), PASSWORD)}",
        f"Basic {token(USER.capitalize(), PASSWORD)}",
        f"Basic {token(USER + ' ', PASSWORD)}",
        f"Basic {token(' ' + USER, PASSWORD)}",
        f"Basic {token(USER, PASSWORD + ' ')}",
        f"Basic {token(USER, PASSWORD + chr(10))}",
        f"Basic {token(USER, PASSWORD + chr(0))}",
        f"Basic {token(USER, PASSWORD.upper())}",
        f"Basic {token(USER, PASSWORD.replace('s', chr(0xFF53), 1))}",  # fullwidth s (NFKC)
        f"Basic {token(USER, PASSWORD.replace('-', '%2D'))}",  # URL-encoded
        f"Basic {token(PASSWORD, USER)}",
        f"Basic {token('', PASSWORD)}",
        f"Basic {token(USER, '')}",
        f"Basic {token(USER + ':' + PASSWORD, '')}",
        f"Basic {base64.b64encode(f'{USER}{chr(0)}{PASSWORD}'.encode()).decode()}",
        f"Basic {token(USER, PASSWORD)} {token(USER, PASSWORD)}",
        f"Basic {token(USER, PASSWORD)},Basic {token(USER, 'x')}",
        f"Basic {token(USER, 'x')}, Basic {token(USER, PASSWORD)}",
        f"Basic\t{token(USER, 'x')}",
        f"Basic {PASSWORD}",  # the password in clear instead of base64
        f"{USER}:{PASSWORD}",
        f"Bearer {PASSWORD}",
        f"Basic {'A' * 8000}",
        "Basic \u00e9\u00e8",  # not ASCII (latin-1 on the wire)
        "Basic",
        "Basic ",
    ],
)
def test_basic_lookalikes_are_refused_and_never_crash(closed_receiver, authorization):
    client, stored = closed_receiver

    response = post(client, body(event()), {"Authorization": authorization})

    assert response.status_code == 401
    assert stored() == 0


def test_a_key_for_another_header_name_or_from_a_removed_rotation_is_refused(make_client, query):
    client = make_client(
        basic_auth=(("campaign", "new-pass"),), key_auth=(KeyAuth("X-Api-Key", API_KEY),)
    )

    for headers in (
        basic("campaign", "old-pass"),  # rotated out while a key is configured too
        {"X-Api-Key": API_KEY.upper()},
        {"Authorization": API_KEY},
        {"Authorization": f"Bearer {API_KEY}"},
        {"X-Api-Key-2": API_KEY},
        {"Api-Key": API_KEY},
    ):
        assert post(client, body(event()), headers).status_code == 401, headers
    assert count(query, "events") == 0


# --- nothing revealed by the probes, metrics and answers ---


def secrets_of_a_busy_receiver(make_client):
    """Exercise a receiver with credentials, personal data and failures; return the
    strings that must never come back out, and every answer given."""
    client = make_client(key_auth=(KeyAuth("X-Api-Key", API_KEY),))
    guessed_password, guessed_key = "guess-Pw-6d2b", "guess-Key-90ae"
    private = {
        "recipientId": EMAIL,
        "mediaTypesToAddresses": {"EMAIL": EMAIL},
        "link": "https://example.org/unsubscribe?token=tok-Secret-55aa",
        "device": "device-Private-e1",
    }
    answers = [
        post(client, body(event("click", id="c1", **private))),
        post(client, body(event("leaky-type-Private", **private)), {"X-Api-Key": API_KEY}),
        # an event for the quarantine (no clientId), holding the same personal data
        post(client, body({"type": "open", "note": EMAIL})),
        post(client, body(event("open", x=EMAIL + "\x00"))),
        # not JSON, with the personal data and the password itself inside
        post(client, f'[{{"recipientId": "{EMAIL}", "p": "{PASSWORD}"'.encode()),
        post(client, body(event()), basic(password=guessed_password)),
        post(client, body(event()), {"X-Api-Key": guessed_key}),
        post(client, body(event()), {"Authorization": f"Basic {PASSWORD}"}),
        post(client, body(event()), {"Authorization": PASSWORD}),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 400, 401, 401, 401, 401]
    secrets = [
        PASSWORD,
        guessed_password,
        API_KEY,
        guessed_key,
        token(USER, PASSWORD),
        token(USER, guessed_password),
        EMAIL,
        "tok-Secret-55aa",
        "device-Private-e1",
        "leaky-type-Private",
    ]
    return client, secrets, answers


def test_metrics_and_probes_reveal_no_secret_and_no_payload(make_client):
    client, secrets, answers = secrets_of_a_busy_receiver(make_client)

    probes = {path: client.get(path) for path in ("/metrics", "/healthz", "/readyz")}

    assert [r.status_code for r in probes.values()] == [200, 200, 200]
    metrics = probes["/metrics"].get_data(as_text=True)
    assert "receiver_requests_total" in metrics  # the counts are there...
    assert 'type="other"' in metrics  # ...an unknown type is counted without its name
    for path, response in probes.items():
        text = answer_text(response)
        for secret in secrets:
            assert secret not in text, (path, secret)
    for response in answers:
        text = answer_text(response)
        for secret in secrets:
            assert secret not in text, (response.status, secret)


def unreachable_database(make_client, **changes):
    url = f"postgresql://admin:{DB_PASSWORD}@127.0.0.1:1/private_db"
    return make_client(database_url=url, pool_timeout=0.3, **changes)


def test_an_unreachable_database_is_not_described_to_clients(make_client):
    client = unreachable_database(make_client)

    answers = [
        client.get("/readyz"),
        post(client, body(event())),
        post(client, b"not json"),
    ]

    assert [a.status_code for a in answers] == [503, 503, 503]
    assert answers[0].json == {"status": "database unavailable"}
    for response in answers:
        text = answer_text(response)
        for secret in (DB_PASSWORD, "admin", "private_db", "127.0.0.1:1", "5432", "psycopg"):
            assert secret not in text, (response.status, secret)


# --- nothing secret or personal in the logs ---


class FileDescriptor2:
    """A stream that writes to file descriptor 2, where a deployed receiver's stderr goes."""

    def write(self, text):
        return os.write(2, text.encode("utf-8", "backslashreplace"))

    def flush(self):
        pass


@pytest.fixture
def receiver_stderr(capfd):
    """The receiver's JSON log lines as written to stderr, captured at the file descriptor.

    A plain StreamHandler keeps the sys.stderr of the moment it was created (under pytest some
    earlier test's capture, closed by now): for the duration of the test it is pointed at file
    descriptor 2 itself, which capfd captures. requestlog.StderrHandler follows sys.stderr and
    ignores the assignment; capfd captures sys.stderr as well."""
    requestlog.configure_logging("INFO")  # what create_app does; makes sure the handler exists
    logger = logging.getLogger("receiver")
    level = logger.level
    handlers = [h for h in logger.handlers if isinstance(h.formatter, requestlog.JsonFormatter)]
    assert handlers
    streams = [h.stream for h in handlers]
    for handler in handlers:
        with handler.lock:  # not setStream(): it flushes the old stream, which may be closed
            handler.stream = FileDescriptor2()
    capfd.readouterr()
    yield lambda: capfd.readouterr().err
    for handler, stream in zip(handlers, streams, strict=True):
        with handler.lock:
            handler.stream = stream
    logger.setLevel(level)


@pytest.mark.parametrize("log_level", ["INFO", "DEBUG"])
def test_logs_hold_no_secret_and_no_payload(make_client, receiver_stderr, caplog, log_level):
    caplog.set_level(logging.DEBUG)  # every library's records too (psycopg, werkzeug, ...)

    _, secrets, answers = secrets_of_a_busy_receiver(
        lambda **changes: make_client(log_level=log_level, **changes)
    )
    too_large = make_client(log_level=log_level, max_body_bytes=1024)
    answers.append(post(too_large, body(event(recipientId=EMAIL, pad="x" * 2000))))
    offline = unreachable_database(make_client, log_level=log_level)
    answers.append(post(offline, body(event(recipientId=EMAIL))))
    answers.append(offline.get("/readyz"))
    assert [a.status_code for a in answers[-3:]] == [413, 503, 503]

    stderr = receiver_stderr()
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    request_lines = [line for line in lines if line.get("message") == "request"]
    # The capture works: one line per webhook request, with its status.
    webhook_statuses = [a.status_code for a in answers if a.request.path == "/webhook"]
    assert [line["status"] for line in request_lines] == webhook_statuses, stderr[:3000]
    for text in (stderr, caplog.text, *(str(r.__dict__) for r in caplog.records)):
        for secret in [*secrets, DB_PASSWORD]:
            assert secret not in text, secret


# --- SQL injection: stored verbatim, nothing executed ---


INJECTIONS = [
    "'); DROP TABLE events; --",
    '"; DROP TABLE quarantine; --',
    "' OR '1'='1",
    "'; COMMIT; DROP TABLE events; --",
    "$$; DROP TABLE events; $$",
    "\\'; DELETE FROM events; --",
    "%s",
    "%(payload)s",
    "%%",
    "{0}",
    "$1",
    "E'\\x27'",
    "/* unterminated",
    "\\",
    "'",
    "`backtick`",
]
TEXT_FIELDS = {
    # field: column, for the types whose schema gives the field a column
    "id": "event_id",
    "recipientId": "recipient_id",
    "mailId": "mail_id",
    "mediaType": "media_type",
    "link": "link",
    "device": "device",
    "operatingSystem": "operating_system",
    "browser": "browser",
    "remoteAddress": "remote_address",
}
BOUNCE_FIELDS = {"category": "category", "reason": "reason"}


def test_sql_injection_in_every_text_field_is_stored_verbatim(client, query):
    items = []
    for n, text in enumerate(INJECTIONS):
        values = {field: f"{text}#{n}" for field in TEXT_FIELDS}
        extra = {text: text, "mediaTypesToAddresses": {text: text}}
        items.append(event("click", **values, **extra))
        bounce = {field: f"{text}#{n}" for field in BOUNCE_FIELDS}
        items.append(event("bounce", id=f"bounce-{text}#{n}", **bounce))
        items.append(event(f"{text}#{n}", recipientId=text))  # as the type itself, without id

    response = post(client, body(*items))

    assert response.status_code == 200
    assert response.json == {
        "received": len(items),
        "stored": len(items),
        "duplicates": 0,
        "quarantined": 0,
    }
    assert query("SELECT to_regclass('events')::text, to_regclass('quarantine')::text") == [
        ("events", "quarantine")
    ]
    assert count(query, "events") == len(items)
    columns = {**TEXT_FIELDS, **BOUNCE_FIELDS}
    for item in items:
        kind, key = item["type"], item.get("id")
        selected = [c for f, c in columns.items() if f in item]
        [row] = query(
            "SELECT payload, " + ", ".join(selected) + " FROM events "  # noqa: S608 (constant names)
            "WHERE client_id = %s AND type = %s AND (event_id = %s OR %s::text IS NULL "
            "AND event_id IS NULL AND recipient_id = %s)",
            (item["clientId"], kind, key, key, item.get("recipientId")),
        )
        assert row[0] == item
        assert list(row[1:]) == [item[f] for f in columns if f in item]


def test_sql_injection_in_quarantined_content_is_kept_verbatim(client, query):
    invalid = {"type": "open", "recipientId": INJECTIONS[0], INJECTIONS[1]: INJECTIONS[2]}
    not_json = "\n".join(INJECTIONS).encode()

    assert post(client, body(invalid)).status_code == 200
    assert post(client, not_json).status_code == 400

    rows = dict(query("SELECT kind, content FROM quarantine"))
    assert json.loads(rows["event"]) == invalid
    assert rows["body"] == not_json
    assert count(query, "events") == 0
    assert query("SELECT to_regclass('events')::text") == [("events",)]


def test_sql_injection_in_credentials_and_headers_changes_nothing(client, query):
    for headers in (
        basic(user="campaign'; DROP TABLE events; --"),
        basic(password="' OR '1'='1"),
        {**basic(), "X-Request-Id": "1'; DROP TABLE events; --"},
    ):
        post(client, body(event(id=str(uuid.uuid4()))), headers)

    assert count(query, "events") == 1  # the last one, with valid credentials
    assert query("SELECT to_regclass('events')::text") == [("events",)]
