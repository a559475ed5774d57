"""`receiver psql`: an interactive psql on the receiver's database, for the README's SQL."""

import os
import shutil

import click

from ..storage.embedded import bin_path
from . import common


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
def psql(psql_args):
    """Open psql on DATABASE_URL (or the development database); extra arguments go to psql,
    e.g. `receiver psql -c 'SELECT count(*) FROM events'`.

    Uses the psql on PATH, else the one shipped with the embedded PostgreSQL."""
    url = common.database_url()
    program = shutil.which("psql") or str(bin_path("psql"))
    os.execv(program, [program, url, *psql_args])  # noqa: S606 (the user's own psql session)


def register(group):
    group.add_command(psql)
