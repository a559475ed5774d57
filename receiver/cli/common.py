"""What several commands share: the development state directory, the database to use, errors.

The development mode (`receiver serve` with no DATABASE_URL, no credentials and no PORT set, or
`receiver serve --dev`) keeps an embedded PostgreSQL and generated credentials in one per-user
directory, not in the working directory: `serve` started from anywhere finds the same database
and credentials, and so do `migrate`, `quarantine`, `simulate` and `psql` while it runs.
"""

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import click
import psycopg
from psycopg.conninfo import conninfo_to_dict

from ..config import ConfigError, read_url

DEV_USER = "campaign"
STATE_DIR_VARIABLE = "RECEIVER_STATE_DIR"
# Seconds a command waits for the database to accept a connection, unless DATABASE_URL (or
# PGCONNECT_TIMEOUT) says otherwise: libpq's own default is to wait forever.
CONNECT_TIMEOUT = 5
DEVELOPMENT_DATABASE = "the development database"


@dataclass(frozen=True)
class StateDir:
    """Where the development mode keeps its database and credentials."""

    path: Path

    @property
    def pgdata(self) -> Path:
        return self.path / "pgdata"

    @property
    def credentials(self) -> Path:
        return self.path / "credentials"


def state_dir(environ=None) -> StateDir:
    """$RECEIVER_STATE_DIR, else $XDG_DATA_HOME/receiver, else ~/.local/share/receiver."""
    env = os.environ if environ is None else environ
    if env.get(STATE_DIR_VARIABLE):
        return StateDir(Path(env[STATE_DIR_VARIABLE]).expanduser().resolve())
    data_home = env.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return StateDir(Path(data_home).expanduser().resolve() / "receiver")


def development_credentials(state: StateDir, create=True) -> tuple[str, str] | None:
    """The development pair, generated once and kept (mode 0600); None if absent and not created."""
    path = state.credentials
    if not path.exists():
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"{DEV_USER}:{secrets.token_urlsafe(18)}\n")
    user, _, password = path.read_text().strip().partition(":")
    return user, password


def running_development_database(state: StateDir) -> str | None:
    """The URI of the development database if its server is running, else None."""
    if not (state.pgdata / "postmaster.pid").exists():
        return None
    from ..storage.embedded import running_server_uri

    return running_server_uri(state.pgdata)


def database_url(environ=None, check=True) -> str:
    """The database the commands use: RECEIVER_MAINTENANCE_DATABASE_URL, else DATABASE_URL, else
    the running development database; ConfigError when there is none, DatabaseUnreachable
    (unless `check` is false) when it does not accept a connection."""
    env = os.environ if environ is None else environ
    url, source = command_database(env)
    if not url:
        raise ConfigError(
            "DATABASE_URL is not set, and no development database is running "
            "(start one with `receiver serve`)"
        )
    if check:
        check_database(url, source)
    return url


MAINTENANCE_URL = "RECEIVER_MAINTENANCE_DATABASE_URL"


def command_database(env) -> tuple[str | None, str]:
    """(URL, the variable it came from) for the commands. They take session advisory locks and
    session settings (migrate, maintain, prune, export, ...), which a pooler in transaction mode
    would leak to the webhook's next transaction: behind one, they need PostgreSQL itself."""
    if maintenance := read_url(MAINTENANCE_URL, env):
        return maintenance, MAINTENANCE_URL
    if url := read_url("DATABASE_URL", env):
        if env.get("RECEIVER_DATABASE_POOLER", "").strip().lower() == "transaction":
            raise ConfigError(
                "DATABASE_URL is a pooler in transaction mode (RECEIVER_DATABASE_POOLER="
                f"transaction): the commands need PostgreSQL itself; set {MAINTENANCE_URL}"
            )
        return url, "DATABASE_URL"
    return running_development_database(state_dir(env)), DEVELOPMENT_DATABASE


class CommandError(Exception):
    """A failure the user can fix, said in one line (exit status 2): the cause, what to do."""


class DatabaseUnreachable(CommandError):
    """The database did not accept a connection; the message names it, never its password."""


def database_address(url, source="DATABASE_URL") -> str:
    """host:port/dbname of a libpq URL or conninfo, for messages: no user, no password."""
    if is_ambiguous_uri(url):
        # libpq would read part of the password as the host, port or database name, and every
        # message naming those would show it.
        raise CommandError(
            f"{source} is malformed: an @ or / in the user or password must be percent-encoded "
            "(@ as %40, / as %2F, : as %3A)"
        )
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        # libpq's message quotes the string, password and all: it is never shown.
        raise CommandError(
            f"{source} is not a PostgreSQL URL: give postgresql://USER:PASSWORD@HOST:PORT/DBNAME"
        ) from None
    hosts = (params.get("host") or params.get("hostaddr") or "localhost").split(",")
    # libpq: one port for every host, or one for all; an empty one is the default.
    ports = [port or "5432" for port in params.get("port", "").split(",")]
    ports += ports[-1:] * (len(hosts) - len(ports))
    where = ",".join(f"{h}:{p}" for h, p in zip(hosts, ports, strict=False))
    return f"{where}/{params.get('dbname', '')}".rstrip("/")


def is_ambiguous_uri(url) -> bool:
    """Whether a postgresql:// URI has an @ that libpq and a reader would split differently: more
    than one before the path, or one after it (a password with a raw @ or /)."""
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.lower() not in ("postgresql", "postgres"):
        return False
    before_query = rest.split("?", 1)[0]
    authority, _, path = before_query.partition("/")
    return authority.count("@") > 1 or "@" in path


def check_database(url, source="DATABASE_URL"):
    """Connect once and close; DatabaseUnreachable if that fails. `source` says where `url`
    came from (DATABASE_URL, --database-url, DEVELOPMENT_DATABASE), for the hint."""
    address = database_address(url, source)
    timeout = connect_timeout(url)
    try:
        psycopg.connect(url, autocommit=True, connect_timeout=timeout).close()
    except psycopg.OperationalError as error:
        raise DatabaseUnreachable(unreachable(error, address, source, timeout)) from None


def connect_timeout(url) -> int:
    """The URL's connect_timeout, else $PGCONNECT_TIMEOUT, else CONNECT_TIMEOUT seconds."""
    given = conninfo_to_dict(url).get("connect_timeout") or os.environ.get("PGCONNECT_TIMEOUT")
    try:
        return max(2, int(given)) if given else CONNECT_TIMEOUT  # libpq's minimum is 2
    except ValueError:
        return CONNECT_TIMEOUT


def unreachable(error, address, source, timeout=None) -> str:
    """One line for a failed connection: which database, why, and what to do about it."""
    cause, hint = diagnose(error, source, timeout)
    named = "" if source == DEVELOPMENT_DATABASE else f" ({source})"
    whose = DEVELOPMENT_DATABASE if source == DEVELOPMENT_DATABASE else "the database"
    return f"cannot connect to {whose} at {address}{named}: {cause}: {hint}"


def diagnose(error, source, timeout=None) -> tuple[str, str]:
    """(cause, what to do) for a connection error, from libpq's message."""
    text = str(error)
    if source == DEVELOPMENT_DATABASE:
        if "Connection refused" in text or "No such file or directory" in text:
            return "it is not running", "start `receiver serve` (it runs the development database)"
        return server_said(text), "restart `receiver serve`"
    if isinstance(error, psycopg.errors.ConnectionTimeout) or "timeout expired" in text:
        waited = f" within {timeout} s" if timeout else ""
        return f"no answer{waited}", f"check the host and port in {source}, and firewalls between"
    if "Connection refused" in text or "No such file or directory" in text:
        return "connection refused, nothing listens there", f"start PostgreSQL, or correct {source}"
    if "resolve host" in text or "translate host name" in text:
        return "unknown host name", f"correct the host in {source}"
    if "role" in text and "does not exist" in text:
        return "the server knows no such user", f"correct the user in {source}"
    if "authentication failed" in text or "password" in text or "pg_hba.conf" in text:
        return "the server refused the login", (
            f"check the user and password in {source} (and the server's pg_hba.conf)"
        )
    if "database" in text and "does not exist" in text:
        return "no such database", f"create it, or correct the database name in {source}"
    if "starting up" in text or "shutting down" in text or "recovery mode" in text:
        return "the server is starting or stopping", "try again in a moment"
    if "too many" in text or "connection slots" in text:
        return "the server has no connection free", "try again later, or raise max_connections"
    return server_said(text), f"check the server and {source}"


def server_said(text) -> str:
    """The gist of libpq's message, on one line: what follows the last "failed:", no FATAL."""
    line = " ".join(text.split())
    line = line.rpartition(" failed: ")[2] or line
    return line.removeprefix("FATAL: ").strip() or "connection failed"


def is_connection_failure(error) -> bool:
    """Whether a psycopg error means the database could not be reached (or was lost), not
    that a statement failed: libpq's own errors have no SQLSTATE; 08 is connection
    exception, 28 invalid authorization, 3D000 no such database, 57P0x the server going."""
    sqlstate = error.sqlstate
    if sqlstate is None:
        return isinstance(error, psycopg.OperationalError)
    return sqlstate[:2] in ("08", "28") or sqlstate in ("3D000", "57P01", "57P02", "57P03")


def failure_address(error) -> str:
    """host:port/dbname of the connection an error came from, if psycopg kept it."""
    pgconn = getattr(error, "pgconn", None)
    if pgconn is None:
        return "the database"
    try:
        host, port, dbname = (pgconn.host or b"").decode(), pgconn.port.decode(), pgconn.db.decode()
    except (AttributeError, psycopg.Error, UnicodeDecodeError):
        return "the database"
    return f"the database at {host or 'localhost'}:{port}/{dbname}"


class ReceiverGroup(click.Group):
    """A click group whose commands say a ConfigError, a CommandError or a database that cannot
    be reached in one line, with exit status 2: never a traceback for what the user can fix."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ConfigError as error:
            click.echo(f"receiver: configuration error: {error}", err=True)
            ctx.exit(2)
        except CommandError as error:
            click.echo(f"receiver: {error}", err=True)
            ctx.exit(2)
        except psycopg.Error as error:
            if not is_connection_failure(error):
                raise
            # A command that connected without check_database (or lost its connection later).
            cause, hint = diagnose(error, "DATABASE_URL")
            click.echo(f"receiver: cannot use {failure_address(error)}: {cause}: {hint}", err=True)
            ctx.exit(2)
