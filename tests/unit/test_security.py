"""All SQL is parameterised: a static scan of every module of the package for values formatted
into the SQL text given to execute() (the scan is tested on examples of both kinds).

What hostile content and credentials do to a running receiver:
tests/integration/web/test_security.py.
"""

import ast
import builtins
import pathlib
import textwrap
from collections import defaultdict

import pytest

import receiver

RECEIVER_DIR = pathlib.Path(receiver.__file__).resolve().parent


# --- SQL is parameterised ---


class SqlScan:
    """Find values formatted into the SQL text given to `.execute()` / `.executemany()`.

    A value is fine when it is constant: literals, module constants built from literals (the
    column list of storage.events.INSERT_EVENTS), builtins applied to constants. Names are
    followed to their assignments in the function and the module, and calls to functions of the
    module into their return values. psycopg.sql composition
    (`sql.SQL(...).format(sql.Identifier(...))`) is the safe way to build dynamic SQL and is not a
    string format."""

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
                sql = (
                    node.args[0]
                    if node.args
                    else next((k.value for k in node.keywords if k.arg == "query"), None)
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
            yield from (
                (name, ast.BinOp(node.target, node.op, node.value)) for name in _names(node.target)
            )
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
            for argument in [
                *arguments.posonlyargs,
                *arguments.args,
                *arguments.kwonlyargs,
                arguments.vararg,
                arguments.kwarg,
            ]:
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
            self.function,
            self.parameters,
            self.local_values,
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
            return [
                v.value
                for v in node.values
                if isinstance(v, ast.FormattedValue) and not self.constant(v)
            ]
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
                inner = Scope(
                    self.scan,
                    function,
                    constant_parameters=all(self.constant(a) for a in arguments),
                )
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
            return [
                v for value in values if isinstance(value, ast.AST) for v in scope.formatted(value)
            ]
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
    """The one exception: storage/db.py sets the session's timeouts with
    f"SET statement_timeout = {int(statement_timeout_ms)}" (and lock_timeout likewise). SET is a
    utility statement, which PostgreSQL does not accept bind parameters ($1) for, so the value
    must be in the text; int() guarantees the text is an optionally signed run of digits,
    whatever the configuration holds (config.py has validated it as a whole number >= 100
    already)."""
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
    files = sorted(RECEIVER_DIR.rglob("*.py"))
    assert RECEIVER_DIR / "storage" / "events.py" in files
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
