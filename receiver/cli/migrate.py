"""`receiver migrate`: apply pending migrations (the Procfile's release step)."""

import click

from ..config import ConfigError
from ..storage import migrate as migrations
from . import common


@click.command()
def migrate():
    """Apply pending database migrations to DATABASE_URL (or the development database).

    Idempotent, and safe when several processes run it at once (an advisory lock)."""
    moved, recounted = [], []
    try:
        applied = migrations.migrate(
            common.database_url(),
            progress=moved.append,
            recounted=recounted.append,
            warned=lambda text: click.echo(f"receiver: migrate: warning: {text}", err=True),
        )
    except migrations.ServerTooOld as error:
        raise ConfigError(str(error)) from None
    click.echo(
        f"receiver: {len(applied)} migration(s) applied"
        + "".join(f"\n  {m.version:03d}_{m.name}" for m in applied)
    )
    if moved:
        click.echo(f"receiver: {moved[-1]} event(s) moved into the partitioned events table")
    if recounted:
        click.echo(f"receiver: mailing counts of {recounted[0]} mailing(s) stored earlier made")
    return 0


def register(group):
    group.add_command(migrate)
