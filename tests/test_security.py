"""Security properties test_auth.py does not cover: every route but the probes is closed, secrets
and payloads stay out of logs, answers and metrics, and all SQL is parameterised.

test_auth.py already checks the credential logic itself (wrong user or password, keyAuth, rotation,
the allow-list, no echo of a refused password in the 401); this file checks the surroundings.
"""

import ast
import base64
import builtins
import json
import logging
import os
import pathlib
import textwrap
import uuid
from collections import defaultdict

import psycopg
import pytest

import receiver
from receiver import create_app, requestlog
from receiver import db as receiver_db
from receiver.config import Config, KeyAuth

from support import PASSWORD, USER, admin_execute, basic, body, event, with_database

RECEIVER_DIR = pathlib.Path(receiver.__file__).resolve().parent
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
    app = create_app(Config(database_url=url, basic_auth=((USER, PASSWORD),),
                            key_auth=(KeyAuth("X-Api-Key", API_KEY),)))

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


def test_every_route_but_the_probes_refuses_anonymous_requests(client, query):
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
        response = client.post("/webhook", data=data, headers=headers)
        assert response.status_code == 401
    assert count(query, "events") == 0
    assert count(query, "quarantine") == 0


def test_an_oversized_anonymous_body_is_refused_without_being_read(make_client, query):
    client = make_client(max_body_bytes=2048)

    response = client.post("/webhook", data=b"[" + b" " * 100_000 + b"]")

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

    response = client.post(url, data=body(event()), headers=headers)

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

    response = client.post("/webhook", data=body(event()), headers={"Authorization": authorization})

    assert response.status_code == 401
    assert stored() == 0


def test_a_key_for_another_header_name_or_from_a_removed_rotation_is_refused(make_client, query):
    client = make_client(basic_auth=(("campaign", "new-pass"),),
                         key_auth=(KeyAuth("X-Api-Key", API_KEY),))

    for headers in (
        basic("campaign", "old-pass"),  # rotated out while a key is configured too
        {"X-Api-Key": API_KEY.upper()},
        {"Authorization": API_KEY},
        {"Authorization": f"Bearer {API_KEY}"},
        {"X-Api-Key-2": API_KEY},
        {"Api-Key": API_KEY},
    ):
        assert client.post("/webhook", data=body(event()), headers=headers).status_code == 401, (
            headers
        )
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
        client.post("/webhook", data=body(event("click", id="c1", **private)), headers=basic()),
        client.post("/webhook", data=body(event("leaky-type-Private", **private)),
                    headers={"X-Api-Key": API_KEY}),
        # an event for the quarantine (no clientId), holding the same personal data
        client.post("/webhook", data=body({"type": "open", "note": EMAIL}), headers=basic()),
        client.post("/webhook", data=body(event("open", x=EMAIL + "\x00")), headers=basic()),
        # not JSON, with the personal data and the password itself inside
        client.post("/webhook", data=f'[{{"recipientId": "{EMAIL}", "p": "{PASSWORD}"'.encode(),
                    headers=basic()),
        client.post("/webhook", data=body(event()), headers=basic(password=guessed_password)),
        client.post("/webhook", data=body(event()), headers={"X-Api-Key": guessed_key}),
        client.post("/webhook", data=body(event()),
                    headers={"Authorization": f"Basic {PASSWORD}"}),
        client.post("/webhook", data=body(event()), headers={"Authorization": PASSWORD}),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 400, 401, 401, 401, 401]
    secrets = [
        PASSWORD, guessed_password, API_KEY, guessed_key, token(USER, PASSWORD),
        token(USER, guessed_password), EMAIL, "tok-Secret-55aa", "device-Private-e1",
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
        client.post("/webhook", data=body(event()), headers=basic()),
        client.post("/webhook", data=b"not json", headers=basic()),
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
    answers.append(too_large.post("/webhook", data=body(event(recipientId=EMAIL, pad="x" * 2000)),
                                  headers=basic()))
    offline = unreachable_database(make_client, log_level=log_level)
    answers.append(offline.post("/webhook", data=body(event(recipientId=EMAIL)), headers=basic()))
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


# --- SQL is parameterised ---


class SqlScan:
    """Find values formatted into the SQL text given to `.execute()` / `.executemany()`.

    A value is fine when it is constant: literals, module constants built from literals (the
    column list of storage.INSERT_EVENTS), builtins applied to constants. Names are followed to
    their assignments in the function and the module, and calls to functions of the module into
    their return values. psycopg.sql composition (`sql.SQL(...).format(sql.Identifier(...))`) is
    the safe way to build dynamic SQL and is not a string format."""

    METHODS = {"execute", "executemany"}

    def __init__(self, source, filename):
        self.filename = filename
        self.tree = ast.parse(source, filename)
        self.module_values = defaultdict(list)
        self.functions = {}
        for statement in self.tree.body:
            if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
                self.functions[statement.name] = statement
            for name, value in _bindings(statement, top_level=True):
                self.module_values[name].append(value)
        self.parents = {}
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node

    def calls(self):
        for node in ast.walk(self.tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in self.METHODS
            ):
                sql = node.args[0] if node.args else next(
                    (k.value for k in node.keywords if k.arg == "query"), None
                )
                if sql is not None:
                    yield node, sql

    def findings(self):
        """(call, SQL argument, value) for every non-constant value formatted into SQL."""
        for call, sql in self.calls():
            scope = Scope(self, self.enclosing_function(call))
            for value in scope.formatted(sql):
                yield call, sql, value

    def enclosing_function(self, node):
        while node in self.parents:
            node = self.parents[node]
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                return node
        return None


def _bindings(statement, top_level=False):
    """(name, value) for the names a statement binds; value is None when unknowable."""
    nodes = [statement] if top_level else ast.walk(statement)
    for node in nodes:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                for name in _names(target):
                    yield name, node.value if isinstance(target, ast.Name) else None
        elif isinstance(node, ast.AnnAssign | ast.NamedExpr) and node.value is not None:
            yield from ((name, node.value) for name in _names(node.target))
        elif isinstance(node, ast.AugAssign):
            yield from ((name, ast.BinOp(node.target, node.op, node.value))
                        for name in _names(node.target))
        elif isinstance(node, ast.For | ast.AsyncFor):
            yield from ((name, ("iterates", node.iter)) for name in _names(node.target))
        elif isinstance(node, ast.With | ast.AsyncWith):
            for item in node.items:
                if item.optional_vars is not None:
                    yield from ((name, None) for name in _names(item.optional_vars))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                yield (alias.asname or alias.name).split(".")[0], None
        elif isinstance(node, ast.ExceptHandler) and node.name:
            yield node.name, None


def _names(target):
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, ast.Tuple | ast.List):
        return [n for element in target.elts for n in _names(element)]
    if isinstance(target, ast.Starred):
        return _names(target.value)
    return []


class Scope:
    """What a name means at one place: a function's locals and parameters, then the module."""

    def __init__(self, scan, function, constant_names=frozenset(), constant_parameters=False):
        self.scan = scan
        self.function = function
        self.constant_names = set(constant_names)
        self.parameters = set()
        self.local_values = defaultdict(list)
        if function is not None:
            arguments = function.args
            for argument in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                             arguments.vararg, arguments.kwarg]:
                if argument is not None:
                    self.parameters.add(argument.arg)
            if constant_parameters:
                self.constant_names |= self.parameters
            body = function.body if isinstance(function.body, list) else [function.body]
            for statement in body:
                for name, value in _bindings(statement):
                    self.local_values[name].append(value)
        self.resolving = set()

    def with_constants(self, names):
        """This scope with more names known to be constant (comprehension variables)."""
        scope = Scope(self.scan, None, self.constant_names | set(names))
        scope.function, scope.parameters, scope.local_values = (
            self.function, self.parameters, self.local_values
        )
        return scope

    def module(self):
        return Scope(self.scan, None)

    # -- is a value constant?

    def constant(self, node):
        if node is None:
            return False
        if isinstance(node, tuple):  # ("iterates", iterable): a loop variable
            return self.constant(node[1])
        if isinstance(node, ast.Constant):
            return True
        if isinstance(node, ast.Name):
            return self.constant_name(node.id)
        if isinstance(node, ast.Attribute):
            return self.constant(node.value)
        if isinstance(node, ast.JoinedStr):
            return all(self.constant(v) for v in node.values)
        if isinstance(node, ast.FormattedValue):
            return self.constant(node.value) and (
                node.format_spec is None or self.constant(node.format_spec)
            )
        if isinstance(node, ast.BinOp):
            return self.constant(node.left) and self.constant(node.right)
        if isinstance(node, ast.UnaryOp):
            return self.constant(node.operand)
        if isinstance(node, ast.BoolOp):
            return all(self.constant(v) for v in node.values)
        if isinstance(node, ast.Compare):
            return self.constant(node.left) and all(self.constant(c) for c in node.comparators)
        if isinstance(node, ast.IfExp):
            return all(self.constant(n) for n in (node.test, node.body, node.orelse))
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            return all(self.constant(e) for e in node.elts)
        if isinstance(node, ast.Dict):
            return all(self.constant(n) for n in [*node.values, *(k for k in node.keys if k)])
        if isinstance(node, ast.Subscript):
            return self.constant(node.value) and self.constant(node.slice)
        if isinstance(node, ast.Slice):
            return all(n is None or self.constant(n) for n in (node.lower, node.upper, node.step))
        if isinstance(node, ast.Starred):
            return self.constant(node.value)
        if isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
            return self.constant_comprehension(node)
        if isinstance(node, ast.Call):
            return self.constant_call(node)
        return False

    def constant_name(self, name):
        if name in self.constant_names:
            return True
        if name in self.resolving:  # a cycle proves nothing: not constant
            return False
        self.resolving.add(name)
        try:
            if self.function is not None and name in self.parameters:
                return False
            if self.function is not None and name in self.local_values:
                return all(self.constant(v) for v in self.local_values[name])
            if name in self.scan.module_values:
                module = self.module()
                return all(module.constant(v) for v in self.scan.module_values[name])
            return name in self.scan.functions or hasattr(builtins, name)
        finally:
            self.resolving.discard(name)

    def constant_comprehension(self, node):
        bound = set()
        for generator in node.generators:
            if not self.with_constants(bound).constant(generator.iter):
                return False
            bound |= set(_names(generator.target))
        inner = self.with_constants(bound)
        parts = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
        parts += [test for generator in node.generators for test in generator.ifs]
        return all(inner.constant(p) for p in parts)

    def constant_call(self, node):
        arguments = [*node.args, *(k.value for k in node.keywords)]
        if not all(self.constant(a) for a in arguments):
            return False
        function = self.module_function(node.func)
        if function is not None:  # a helper of the module called with constants
            inner = Scope(self.scan, function, constant_parameters=True)
            return all(inner.constant(r.value) for r in _returns(function))
        return self.constant(node.func)

    def module_function(self, func):
        shadowed = self.function is not None and getattr(func, "id", None) in self.local_values
        if isinstance(func, ast.Name) and func.id in self.scan.functions and not shadowed:
            return self.scan.functions[func.id]
        return None

    # -- which non-constant values are formatted into a SQL text?

    def formatted(self, node):
        if isinstance(node, ast.JoinedStr):
            return [v.value for v in node.values
                    if isinstance(v, ast.FormattedValue) and not self.constant(v)]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
            found = []
            for side in (node.left, node.right):
                nested = self.formatted(side)
                if nested:
                    found += nested
                elif not self.constant(side) and (
                    isinstance(node.op, ast.Add) or side is node.right
                ):
                    found.append(side)
            return found
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            receiver_node = node.func.value
            if node.func.attr == "format" and not _is_sql_composable(receiver_node):
                values = [*node.args, *(k.value for k in node.keywords)]
                return [v for v in values if not self.constant(v)] + self.formatted(receiver_node)
            if node.func.attr == "join" and isinstance(receiver_node, ast.Constant):
                return [a for a in node.args if not self.constant(a)]
        if isinstance(node, ast.Call):
            function = self.module_function(node.func)
            if function is not None:
                arguments = [*node.args, *(k.value for k in node.keywords)]
                inner = Scope(self.scan, function,
                              constant_parameters=all(self.constant(a) for a in arguments))
                return [v for r in _returns(function) for v in inner.formatted(r.value)]
        if isinstance(node, ast.Name):
            return self.formatted_name(node.id)
        return []  # a constant, or an opaque value (a parameter, an attribute): not formatted here

    def formatted_name(self, name):
        if name in self.resolving or name in self.constant_names:
            return []
        self.resolving.add(name)
        try:
            if self.function is not None and name in self.parameters:
                return []
            if self.function is not None and name in self.local_values:
                values, scope = self.local_values[name], self
            else:
                values, scope = self.scan.module_values.get(name, []), self.module()
            return [v for value in values if isinstance(value, ast.AST)
                    for v in scope.formatted(value)]
        finally:
            self.resolving.discard(name)


def _returns(function):
    return [n for n in ast.walk(function) if isinstance(n, ast.Return) and n.value is not None]


def _is_sql_composable(node):
    """`sql.SQL("...")` or `SQL("...")`: psycopg composes identifiers and literals safely."""
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        return name == "SQL"
    return False


def _deliberate_integer_format(filename, sql, value):
    """The one exception: db.py sets the session's statement_timeout with
    f"SET statement_timeout = {int(statement_timeout_ms)}". SET is a utility statement, which
    PostgreSQL does not accept bind parameters ($1) for, so the value must be in the text; int()
    guarantees the text is an optionally signed run of digits, whatever the configuration holds
    (config.py has validated it as a whole number >= 100 already)."""
    return (
        pathlib.Path(filename).name == "db.py"
        and isinstance(sql, ast.JoinedStr)
        and isinstance(sql.values[0], ast.Constant)
        and sql.values[0].value.startswith("SET ")
        and isinstance(value, ast.Call)
        and isinstance(value.func, ast.Name)
        and value.func.id == "int"
        and len(value.args) == 1
        and not value.keywords
    )


def unsafe_sql(source, filename):
    scan = SqlScan(source, filename)
    return [
        f"{pathlib.Path(filename).name}:{call.lineno}: {ast.unparse(value)} formatted into "
        f"{ast.unparse(call)}"
        for call, sql, value in scan.findings()
        if not _deliberate_integer_format(filename, sql, value)
    ]


def test_sql_given_to_execute_never_has_values_formatted_into_it():
    files = sorted(RECEIVER_DIR.glob("*.py"))
    assert RECEIVER_DIR / "storage.py" in files
    calls = 0
    problems = []
    for path in files:
        source = path.read_text(encoding="utf-8")
        calls += len(list(SqlScan(source, str(path)).calls()))
        problems += unsafe_sql(source, str(path))

    assert calls >= 8  # the scan sees the receiver's statements (storage, db, migrate, ...)
    assert problems == []


UNSAFE = {
    "f-string": """
        def f(conn, x):
            conn.execute(f"SELECT * FROM t WHERE a = '{x}'")
    """,
    "percent": """
        def f(conn, x):
            conn.execute("SELECT * FROM t WHERE a = '%s'" % x)
    """,
    "percent-tuple": """
        def f(conn, x):
            conn.execute("SELECT %s, %s" % (1, x))
    """,
    "format": """
        def f(conn, x):
            conn.execute("SELECT * FROM t WHERE a = '{}'".format(x))
    """,
    "concatenation": """
        def f(conn, x):
            conn.execute("SELECT * FROM t WHERE a = '" + x + "'")
    """,
    "via-local": """
        def f(conn, x):
            sql = f"SELECT {x}"
            conn.execute(sql)
    """,
    "via-augmented-local": """
        def f(conn, x):
            sql = "SELECT 1"
            sql += x
            conn.execute(sql)
    """,
    "via-helper": """
        def build(x):
            return f"SELECT {x}"
        def f(conn, x):
            conn.execute(build(x))
    """,
    "via-module-name": """
        import os
        QUERY = f"SELECT {os.environ['X']}"
        def f(conn):
            conn.execute(QUERY)
    """,
    "join-of-values": """
        def f(cur, values):
            cur.executemany(" OR ".join(values), [])
    """,
    "loop-over-values": """
        def f(conn, names):
            for name in names:
                conn.execute(f"DROP TABLE {name}")
    """,
    "int-outside-db-py": """
        def f(conn, x):
            conn.execute(f"SET statement_timeout = {int(x)}")
    """,
    "str-in-db-py": """
        def f(conn, x):
            conn.execute(f"SET statement_timeout = {str(x)}")
    """,
    "query-keyword": """
        def f(conn, x):
            conn.execute(query=f"SELECT {x}")
    """,
}
SAFE = {
    "literal": """
        def f(conn, x):
            conn.execute("SELECT * FROM t WHERE a = %s", (x,))
    """,
    "module-constant": """
        QUERY = '''SELECT * FROM t WHERE a = %s'''
        def f(conn, x):
            conn.execute(QUERY, (x,))
    """,
    "columns-from-a-literal-table": """
        COLUMNS = (("a", "text"), ("b", "int8"))
        def _sql():
            names = [name for name, _ in COLUMNS]
            arrays = ", ".join(f"%s::{kind}[]" for _, kind in COLUMNS)
            return f"INSERT INTO t ({', '.join(names)}) SELECT * FROM unnest({arrays})"
        INSERT = _sql()
        def f(conn, rows):
            conn.execute(INSERT, rows)
    """,
    "psycopg-sql-composition": """
        from psycopg import sql
        def f(conn, table):
            conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
    """,
    "sql-from-a-file": """
        def f(conn, migration):
            conn.execute(migration.sql)
    """,
    "int-in-db-py": """
        def configure(conn, timeout):
            conn.execute(f"SET statement_timeout = {int(timeout)}")
    """,
}


@pytest.mark.parametrize("name", UNSAFE)
def test_the_sql_scan_catches_formatted_values(name):
    filename = "db.py" if name == "str-in-db-py" else "example.py"
    assert unsafe_sql(textwrap.dedent(UNSAFE[name]), filename) != []


@pytest.mark.parametrize("name", SAFE)
def test_the_sql_scan_accepts_parameters_and_constants(name):
    filename = "db.py" if name == "int-in-db-py" else "example.py"
    assert unsafe_sql(textwrap.dedent(SAFE[name]), filename) == []


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

    response = client.post("/webhook", data=body(*items), headers=basic())

    assert response.status_code == 200
    assert response.json == {
        "received": len(items), "stored": len(items), "duplicates": 0, "quarantined": 0
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

    assert client.post("/webhook", data=body(invalid), headers=basic()).status_code == 200
    assert client.post("/webhook", data=not_json, headers=basic()).status_code == 400

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
        client.post("/webhook", data=body(event(id=str(uuid.uuid4()))), headers=headers)

    assert count(query, "events") == 1  # the last one, with valid credentials
    assert query("SELECT to_regclass('events')::text") == [("events",)]
