"""The `receiver` command: one click group, one module per command group.

Each module defines its commands and a `register(group)`; adding a command group (report,
prune, campaign, ...) is a module here and one line below.
"""

import sys

import click

from .. import __version__
from . import campaign, export, feed, maintain, migrate, psql, quarantine, report, serve, simulate
from .common import ReceiverGroup


@click.group(cls=ReceiverGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="receiver")
def cli():
    """The target URL for Optimizely Campaign webhooks: every event in PostgreSQL exactly once.

    With nothing configured (no DATABASE_URL, credentials or PORT), `receiver serve` runs an
    embedded PostgreSQL with generated credentials, and the other commands find that database
    while it runs."""


COMMANDS = (serve, migrate, maintain, quarantine, simulate, psql, campaign, report, feed, export)
for module in COMMANDS:
    module.register(cli)


def main(argv=None) -> int:
    """Run the command line; return the exit status (for tests and `python -m receiver`)."""
    try:
        result = cli.main(args=argv, prog_name="receiver", standalone_mode=False)
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except click.Abort:
        click.echo("Aborted!", err=True)
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
