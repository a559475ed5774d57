"""`receiver simulate`: send like Campaign (retries, re-deliveries), then verify the table."""

import os
import threading
import time

import click

from .. import simulate as simulator
from . import common


@click.command()
@click.option(
    "--url", default="http://127.0.0.1:8000/webhook", show_default=True, help="target URL"
)
@click.option("--user", help="Basic Auth user (default: the development credentials)")
@click.option(
    "--password",
    envvar="RECEIVER_SIMULATE_PASSWORD",
    help="Basic Auth password (or $RECEIVER_SIMULATE_PASSWORD)",
)
@click.option(
    "--events",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="unique events to send",
)
@click.option("--batch-size", type=click.IntRange(1, 100), default=100, show_default=True)
@click.option(
    "--duplicates",
    type=click.FloatRange(0, 1),
    default=0.1,
    show_default=True,
    help="share of batches delivered twice",
)
@click.option(
    "--without-id",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="share of events without an id",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="parallel connections",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    help="events per second (default: as fast as the receiver answers)",
)
@click.option(
    "--retry-delay",
    type=float,
    default=10.0,
    show_default=True,
    help="seconds before re-sending a batch that was not answered 200",
)
@click.option(
    "--give-up-after",
    type=float,
    default=3 * 86400.0,
    show_default=True,
    help="seconds after which a batch is dropped (Campaign: three days)",
)
@click.option("--seed", type=int, help="random seed, for a reproducible run")
@click.option(
    "--verify", is_flag=True, help="compare with the database afterwards; exit 1 on any difference"
)
@click.option(
    "--database-url",
    help="for --verify (default $DATABASE_URL, or the "
    "development database of a local `receiver serve`)",
)
def simulate(**options):
    """Send Campaign-like batches (retries, re-deliveries) and optionally verify the table."""
    state = common.state_dir()
    user, password = options["user"], options["password"]
    if not user or not password:
        local = common.development_credentials(state, create=False) or (None, None)
        user, password = user or local[0], password or local[1]
    if not user or not password:
        raise click.UsageError("give --user and --password (no development credentials found)")
    database_url = (
        options["database_url"]
        or os.environ.get("DATABASE_URL")
        or common.running_development_database(state)
    )
    if options["verify"] and not database_url:
        raise click.UsageError("--verify needs --database-url or DATABASE_URL")
    plan = simulator.make_plan(
        options["events"],
        options["batch_size"],
        options["duplicates"],
        options["without_id"],
        options["seed"],
    )
    started = time.monotonic()
    with click.progressbar(
        length=len(plan.batches), label="batches", file=click.get_text_stream("stderr")
    ) as bar:
        tally = simulator.deliver(
            plan,
            options["url"],
            (user, password),
            options["concurrency"],
            options["retry_delay"],
            options["give_up_after"],
            progress=_advance(bar),
            rate=options["rate"],
        )
    for line in simulator.summary_lines(plan, tally, time.monotonic() - started):
        click.echo(line)
    if not options["verify"]:
        return 0 if tally.gave_up == 0 else 1
    result = simulator.verify(plan, database_url)
    click.echo(
        f"verify: expected {result.expected}, stored {result.found}, missing "
        f"{result.missing}, extra {result.extra}, duplicated {result.duplicated}: "
        f"{'OK' if result.ok else 'MISMATCH'}"
    )
    return 0 if result.ok else 1


def _advance(bar):
    """A progress callback for the sending threads: one step per finished batch."""
    lock = threading.Lock()

    def advance(_tally):
        with lock:
            bar.update(1)

    return advance


def register(group):
    group.add_command(simulate)
