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

from ..config import ConfigError

DEV_USER = "campaign"
STATE_DIR_VARIABLE = "RECEIVER_STATE_DIR"


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


def database_url(environ=None) -> str:
    """DATABASE_URL, or the running development database; ConfigError when there is neither."""
    env = os.environ if environ is None else environ
    url = env.get("DATABASE_URL") or running_development_database(state_dir(env))
    if not url:
        raise ConfigError(
            "DATABASE_URL is not set, and no development database is running "
            "(start one with `receiver serve`)"
        )
    return url


class ReceiverGroup(click.Group):
    """A click group whose commands turn a ConfigError into one line and exit status 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ConfigError as error:
            click.echo(f"receiver: configuration error: {error}", err=True)
            ctx.exit(2)
