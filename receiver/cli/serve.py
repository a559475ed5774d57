"""`receiver serve`: gunicorn with the packaged settings; an embedded PostgreSQL in development."""

import os
import signal
import socket
import subprocess
import sys

import click

from .. import samples
from ..config import NO_CREDENTIALS, ConfigError, load_config
from ..storage import migrate as migrations
from . import common

# gunicorn's settings are a module of the package, found by import wherever it is installed.
GUNICORN_CONFIG = "python:receiver.web.gunicorn_conf"


@click.command()
@click.option("--bind", help="host:port (default $PORT on all interfaces, else 127.0.0.1:8000)")
@click.option("--workers", type=click.IntRange(min=1), help="gunicorn workers (default 2)")
def serve(bind, workers):
    """Run the receiver under gunicorn, migrating the database first.

    Without DATABASE_URL (local development) it starts an embedded PostgreSQL in the state
    directory ($RECEIVER_STATE_DIR, default ~/.local/share/receiver), generates credentials
    there once and prints them; with DATABASE_URL it requires configured credentials."""
    env = dict(os.environ)
    bind = bind or (f"0.0.0.0:{env['PORT']}" if env.get("PORT") else "127.0.0.1:8000")
    ensure_port_free(bind)  # before a banner with credentials promises a receiver there
    development = not env.get("DATABASE_URL")
    state = common.state_dir(env)
    if development:
        from ..storage.embedded import start_embedded

        server = start_embedded(state.pgdata)  # stops when this process exits
        env["DATABASE_URL"] = server.get_uri()
    migrations.migrate(env["DATABASE_URL"])
    config = load_config(env)
    if not config.has_credentials:
        if not development:
            raise ConfigError(NO_CREDENTIALS)
        user, password = common.development_credentials(state)
        env["RECEIVER_BASIC_AUTH"] = f"{user}:{password}"
        print_development_banner(state, user, password, bind, env["DATABASE_URL"])
    command = [sys.executable, "-m", "gunicorn", "-c", GUNICORN_CONFIG, "--bind", bind]
    if workers:
        command += ["--workers", str(workers)]
    return run_forwarding_signals([*command, "receiver:create_app()"], env)


def ensure_port_free(bind):
    """Refuse early when something already listens on `bind` (gunicorn would fail later)."""
    host, _, port = bind.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        port_number = int(port)
    except ValueError:
        raise ConfigError(f"--bind {bind!r} is not host:port") from None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            probe.bind((host, port_number))
        except OSError as error:
            raise ConfigError(f"cannot listen on {bind}: {error.strerror}") from None


def print_development_banner(state, user, password, bind, database_url):
    host, _, port = bind.rpartition(":")
    host = "127.0.0.1" if host in ("", "0.0.0.0", "[::]") else host
    sample = samples.path("open-batch.json")
    click.echo(
        "receiver: development mode\n"
        f"  state         {state.path} (embedded PostgreSQL in pgdata/, credentials)\n"
        f"  user          {user}\n"
        f"  password      {password}\n"
        f"  DATABASE_URL  {database_url}\n"
        '  SQL           receiver psql   (or: psql "$DATABASE_URL" with the line above)\n'
        "Send the vendor's sample batch:\n"
        f"  curl -u {user}:{password} --data-binary @{sample} http://{host}:{port}/webhook\n"
        "Or a Campaign-like load, checked against the table:\n"
        "  receiver simulate --events 10000 --verify\n"
    )
    sys.stdout.flush()


def run_forwarding_signals(command, env) -> int:
    """Run gunicorn as a child, pass it our signals, and return its exit status.

    This process stays alive until gunicorn has stopped, so the embedded database it started
    is stopped last, after the workers have committed or rolled back."""
    child = subprocess.Popen(command, env=env)

    def forward(signum, _frame):
        child.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    return child.wait()


def register(group):
    group.add_command(serve)
