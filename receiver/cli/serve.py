"""`receiver serve`: gunicorn with the packaged settings; an embedded PostgreSQL in development."""

import errno
import os
import signal
import socket
import subprocess
import sys

import click

from .. import samples
from ..config import NO_CREDENTIALS, ConfigError, load_config, load_credentials, read_url
from ..storage import migrate as migrations
from . import common

# gunicorn's settings are a module of the package, found by import wherever it is installed.
GUNICORN_CONFIG = "python:receiver.web.gunicorn_conf"
DEFAULT_BIND = "127.0.0.1:8000"

CREDENTIAL_VARIABLES = (
    "RECEIVER_BASIC_AUTH",
    "RECEIVER_BASIC_AUTH_FILE",
    "RECEIVER_KEY_AUTH",
    "RECEIVER_KEY_AUTH_FILE",
)
# Set without DATABASE_URL, these say "deployment": a platform assigns PORT, and credentials are
# configured for a sender that expects its events kept, not on one machine's disk.
DEPLOYMENT_VARIABLES = (*CREDENTIAL_VARIABLES, "PORT")


@click.command()
@click.option("--bind", help="host:port (default $PORT on all interfaces, else 127.0.0.1:8000)")
@click.option("--workers", type=click.IntRange(min=1), help="gunicorn workers (default 2)")
@click.option(
    "--dev",
    is_flag=True,
    help="use the embedded development database even though credentials or PORT are set "
    "(not with DATABASE_URL)",
)
def serve(bind, workers, dev):
    """Run the receiver under gunicorn, migrating the database first.

    With DATABASE_URL it serves that database and requires configured credentials
    (RECEIVER_BASIC_AUTH, RECEIVER_KEY_AUTH or their _FILE forms).

    With nothing set (no DATABASE_URL, no credentials, no PORT) it runs in development mode: an
    embedded PostgreSQL in the state directory ($RECEIVER_STATE_DIR, default
    ~/.local/share/receiver), credentials generated there once, both printed.

    Without DATABASE_URL but with credentials or PORT set (a deployment, whose events would be
    kept on this machine's disk only) it refuses to start; --dev starts the embedded database
    anyway, with the configured credentials if there are any."""
    env = dict(os.environ)
    development = development_mode(env, dev)  # before anything is started or printed
    configured = set_variables(env, CREDENTIAL_VARIABLES)
    basic_auth, key_auth = load_credentials(env)  # a malformed one stops the boot here too
    if not (basic_auth or key_auth) and (configured or not development):
        raise ConfigError(NO_CREDENTIALS)  # only the development mode generates a pair
    bind = bind or (f"0.0.0.0:{env['PORT']}" if env.get("PORT") else DEFAULT_BIND)
    ensure_port_free(bind, development)  # before a banner with credentials promises a receiver
    state = common.state_dir(env)
    if development:
        from ..storage.embedded import start_embedded

        server = start_embedded(state.pgdata)  # stops when this process exits
        env["DATABASE_URL"] = server.get_uri()
    # DATABASE_URL or the file DATABASE_URL_FILE names (read by every worker itself: the
    # password is never put into the environment).
    url = read_url("DATABASE_URL", env)
    # Migrations take session locks: behind a transaction pooler they go to PostgreSQL itself
    # (RECEIVER_MAINTENANCE_DATABASE_URL), as every command does.
    migrate_url = url if development else common.command_database(env)[0]
    if not development:
        # One line and exit 2 within the connect timeout, before anything else: an unreachable
        # database is the most common failed start, and libpq alone would wait for ever.
        common.check_database(url)
        if migrate_url != url:
            common.check_database(migrate_url, common.MAINTENANCE_URL)
    try:
        migrations.migrate(migrate_url)
    except migrations.ServerTooOld as error:
        raise ConfigError(str(error)) from None
    config = load_config(env)
    if development and configured:
        print_configured_development_banner(state, config, configured, bind, env["DATABASE_URL"])
    elif development:
        user, password = common.development_credentials(state)
        env["RECEIVER_BASIC_AUTH"] = f"{user}:{password}"
        print_development_banner(state, user, password, bind, env["DATABASE_URL"])
    command = [sys.executable, "-m", "gunicorn", "-c", GUNICORN_CONFIG, "--bind", bind]
    if workers:
        command += ["--workers", str(workers)]
    return run_forwarding_signals([*command, "receiver:create_app()"], env)


def set_variables(env, names) -> list[str]:
    """Those of `names` set to something other than blanks (empty counts as unset, as for every
    setting)."""
    return [name for name in names if env.get(name, "").strip()]


def development_mode(env, dev) -> bool:
    """Whether to run the embedded development database; ConfigError when that is unsafe.

    Development mode is the default only when nothing says "deployment": no DATABASE_URL, no
    configured credentials, no PORT. `--dev` forces it, and contradicts DATABASE_URL."""
    if read_url("DATABASE_URL", env):
        if dev:
            raise ConfigError(
                "--dev runs the embedded development database, but DATABASE_URL is set: "
                "drop --dev to serve DATABASE_URL, or unset DATABASE_URL for development"
            )
        return False
    deployment = set_variables(env, DEPLOYMENT_VARIABLES)
    if deployment and not dev:
        raise ConfigError(
            "DATABASE_URL is not set; the embedded development database is not started because "
            f"{' and '.join(deployment)} {'is' if len(deployment) == 1 else 'are'} set, which "
            "looks like a deployment, and events acknowledged to Campaign would be kept on this "
            "machine's disk only: set DATABASE_URL to your PostgreSQL, or pass --dev to use the "
            "embedded development database anyway"
        )
    return True


def ensure_port_free(bind, development=True):
    """Refuse early when `bind` cannot be listened on (gunicorn would fail later), saying why
    and how to choose another address."""
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
            raise common.CommandError(
                f"cannot listen on {bind}: {bind_problem(error, port_number, development)}"
            ) from None


def bind_problem(error, port, development) -> str:
    """Why an address cannot be listened on, and how to choose another."""
    # PORT without DATABASE_URL makes serve refuse (a deployment), so it is no advice there.
    other = "choose another with `receiver serve --bind HOST:PORT`" + (
        "" if development else " (or set PORT)"
    )
    if error.errno == errno.EADDRINUSE:
        return (
            f"port {port} is already in use (another `receiver serve`?): stop what listens "
            f"there, or {other}"
        )
    if error.errno == errno.EACCES:
        return f"no permission to listen on port {port} (below 1024 needs privileges): {other}"
    if error.errno == errno.EADDRNOTAVAIL:
        return f"that address is not one of this machine's: {other}, e.g. 127.0.0.1:{port}"
    return f"{error.strerror}: {other}"


def print_development_banner(state, user, password, bind, database_url):
    sample = samples.path("open-batch.json")
    click.echo(
        "receiver: development mode\n"
        f"  state         {state.path} (embedded PostgreSQL in pgdata/, credentials)\n"
        f"  user          {user}\n"
        f"  password      {password}\n"
        f"  DATABASE_URL  {database_url}\n"
        '  SQL           receiver psql   (or: psql "$DATABASE_URL" with the line above)\n'
        "Send the vendor's sample batch:\n"
        f"  curl -u {user}:{password} --data-binary @{sample} {webhook_url(bind)}\n"
        "Or a Campaign-like load, checked against the table:\n"
        f"  receiver simulate --events 10000 --verify{url_option(bind)}\n"
    )
    sys.stdout.flush()


def print_configured_development_banner(state, config, sources, bind, database_url):
    """The development banner with credentials from the environment: it never shows a secret."""
    sample = samples.path("open-batch.json")
    if config.basic_auth:
        user = config.basic_auth[0][0]
        send = (
            "Send the vendor's sample batch (curl asks for the password):\n"
            f"  curl -u {user} --data-binary @{sample} {webhook_url(bind)}\n"
            "Or a Campaign-like load, checked against the table:\n"
            f"  receiver simulate --events 10000 --verify{url_option(bind)} --user {user}"
            "   (the password in $RECEIVER_SIMULATE_PASSWORD)\n"
        )
    else:
        header = config.key_auth[0].header
        send = (
            "Send the vendor's sample batch (with the header's value in place of …):\n"
            f"  curl -H '{header}: …' --data-binary @{sample} {webhook_url(bind)}\n"
        )
    click.echo(
        "receiver: development mode\n"
        f"  state         {state.path} (embedded PostgreSQL in pgdata/)\n"
        f"  credentials   from {' and '.join(sources)} (not shown)\n"
        f"  DATABASE_URL  {database_url}\n"
        '  SQL           receiver psql   (or: psql "$DATABASE_URL" with the line above)\n' + send
    )
    sys.stdout.flush()


def webhook_url(bind):
    host, _, port = bind.rpartition(":")
    host = "127.0.0.1" if host in ("", "0.0.0.0", "[::]", "::") else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address in a URL
    return f"http://{host}:{port}/webhook"


def url_option(bind) -> str:
    """` --url URL` for `receiver simulate`: the address serve listens on, whatever --bind."""
    return f" --url {webhook_url(bind)}"


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
