"""`receiver psql`: an interactive psql on the receiver's database, for the docs' SQL."""

import os
import shutil

import click
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..storage.embedded import bin_path
from . import common


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
def psql(psql_args):
    """Open psql on DATABASE_URL (or the development database); extra arguments go to psql,
    e.g. `receiver psql -c 'SELECT count(*) FROM events'`.

    Uses the psql on PATH, else the one shipped with the embedded PostgreSQL."""
    program = shutil.which("psql") or str(bin_path("psql"))
    argv, env = invocation(program, common.database_url(), psql_args, os.environ)
    os.execve(program, argv, env)  # noqa: S606 (the user's own psql session)


def invocation(program, url, psql_args, environ) -> tuple[list, dict]:
    """psql's arguments and environment for `url`. The password goes in PGPASSWORD, never on
    the command line: every user of the machine can read a process's arguments (`ps`), only
    its owner its environment."""
    params = conninfo_to_dict(url)
    password = params.pop("password", None)
    env = dict(environ)
    if password is not None:
        env["PGPASSWORD"] = password
    return [program, make_conninfo(**params), *psql_args], env


def register(group):
    group.add_command(psql)
