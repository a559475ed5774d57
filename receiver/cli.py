"""The `receiver` command: serve, migrate, simulate, quarantine."""

import argparse
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

from . import migrate as migrations
from . import quarantine, simulate
from .config import ConfigError, load_config

STATE_DIR = Path(".receiver")
GUNICORN_CONF = Path(__file__).resolve().parent.parent / "deploy" / "gunicorn.conf.py"
DEV_USER = "campaign"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="receiver", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the receiver under gunicorn")
    serve.add_argument(
        "--bind", help="host:port (default $PORT on all interfaces, else 127.0.0.1:8000)"
    )
    serve.add_argument("--workers", type=int, help="gunicorn workers (default from the config)")
    commands.add_parser("migrate", help="apply pending database migrations")
    quarantine.add_parser(commands)
    simulate.add_arguments(commands.add_parser("simulate", help="send like Campaign, and verify"))
    args = parser.parse_args(argv)
    try:
        if args.command == "simulate":
            return simulate.run(args, os.environ)
        if args.command == "quarantine":
            return quarantine.command(args)
        return {"serve": serve_command, "migrate": migrate_command}[args.command](args)
    except ConfigError as error:
        print(f"receiver: configuration error: {error}", file=sys.stderr)
        return 2


def migrate_command(args):
    """Apply pending migrations to DATABASE_URL."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise ConfigError("DATABASE_URL is not set")
    applied = migrations.migrate(url)
    print(
        f"receiver: {len(applied)} migration(s) applied"
        + "".join(f"\n  {m.version:03d}_{m.name}" for m in applied)
    )
    return 0


def serve_command(args):
    """Run gunicorn with deploy/gunicorn.conf.py; embedded PostgreSQL when DATABASE_URL is unset."""
    env = dict(os.environ)
    development = not env.get("DATABASE_URL")
    if development:
        from .embedded import start_embedded

        server = start_embedded(STATE_DIR / "pgdata")  # stops when this process exits
        env["DATABASE_URL"] = server.get_uri()
    migrations.migrate(env["DATABASE_URL"])
    config = load_config(env)
    bind = args.bind or (f"0.0.0.0:{env['PORT']}" if env.get("PORT") else "127.0.0.1:8000")
    if not config.has_credentials:
        if not development:
            raise ConfigError(
                "no credentials configured: set RECEIVER_BASIC_AUTH or "
                "RECEIVER_KEY_AUTH (only the local development mode makes some)"
            )
        user, password = development_credentials(STATE_DIR / "credentials")
        env["RECEIVER_BASIC_AUTH"] = f"{user}:{password}"
        print_development_banner(user, password, bind)
    command = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "--bind", bind]
    if args.workers:
        command += ["--workers", str(args.workers)]
    return run_forwarding_signals([*command, "receiver:create_app()"], env)


def development_credentials(path: Path):
    """The local development pair, generated once and kept (mode 0600) under .receiver/."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"{DEV_USER}:{secrets.token_urlsafe(18)}\n")
    user, _, password = path.read_text().strip().partition(":")
    return user, password


def print_development_banner(user, password, bind):
    host, _, port = bind.rpartition(":")
    host = "127.0.0.1" if host in ("", "0.0.0.0", "[::]") else host
    print(
        "receiver: development mode: embedded PostgreSQL in .receiver/pgdata, generated "
        f"credentials in .receiver/credentials\n"
        f"  user {user}  password {password}\n"
        "Send a test batch:\n"
        f"  curl -u {user}:{password} --data-binary @tests/samples/open-batch.json "
        f"http://{host}:{port}/webhook\n",
        flush=True,
    )


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


if __name__ == "__main__":
    sys.exit(main())
