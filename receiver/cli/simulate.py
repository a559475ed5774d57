"""`receiver simulate`: send like Campaign (retries, re-deliveries), then verify the table."""

import os
import threading
import time

import click

from .. import simulate as simulator
from . import common

DEFAULT_URL = "http://127.0.0.1:8000/webhook"  # where `receiver serve` listens by default
# Seconds a refused connection is tried again before the run stops: a receiver just started
# needs a moment to listen, and nobody should wait longer to hear that none runs.
LISTEN_WAIT = 3.0


@click.command()
@click.option("--url", default=DEFAULT_URL, show_default=True, help="target URL")
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
    """Send Campaign-like batches (retries, re-deliveries) and optionally verify the table.

    Every event carries the client id 999999999999 (receiver.simulate.SIMULATED_CLIENT_ID),
    whatever the run; a run's events are told apart by their mail ids."""
    state = common.state_dir()
    user, password = options["user"], options["password"]
    if not user or not password:
        local = common.development_credentials(state, create=False) or (None, None)
        user, password = user or local[0], password or local[1]
    if not user or not password:
        raise click.UsageError("give --user and --password (no development credentials found)")
    database_url = None
    if options["verify"]:
        # Checked before sending: a run's minutes are wasted if it cannot be verified after.
        database_url, source = verify_database(options["database_url"], state)
        common.check_database(database_url, source)
    try:
        simulator.check_listening(options["url"], LISTEN_WAIT)
    except simulator.Unreachable as error:
        raise common.CommandError(
            f"simulate: {error}: start `receiver serve` (in another terminal), or give --url "
            "of a running receiver"
        ) from None
    plan = simulator.make_plan(
        options["events"],
        options["batch_size"],
        options["duplicates"],
        options["without_id"],
        options["seed"],
    )
    started = time.monotonic()
    tally = send(plan, options, (user, password))
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


def verify_database(given, state) -> tuple[str, str]:
    """The database for --verify and where it comes from; CommandError naming why there is
    none (for a newcomer: `receiver serve`, which runs the development database, is stopped)."""
    if given:
        return given, "--database-url"
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"], "DATABASE_URL"
    url = common.running_development_database(state)
    if url:
        return url, common.DEVELOPMENT_DATABASE
    if common.development_credentials(state, create=False):
        raise common.CommandError(
            "simulate --verify: the development database is not running, because `receiver "
            "serve` is not: start `receiver serve` (in another terminal), or give "
            "--database-url or DATABASE_URL"
        )
    raise common.CommandError(
        "simulate --verify needs the receiver's database: give --database-url or set "
        "DATABASE_URL (or start `receiver serve`, which runs a development database)"
    )


def send(plan, options, auth) -> simulator.Tally:
    """Deliver the plan behind a progress bar that also says what the sender waits for."""
    tally = simulator.Tally()
    stderr = click.get_text_stream("stderr")
    progress = Progress(tally, options["retry_delay"], stderr.isatty())
    with click.progressbar(
        length=len(plan.batches),
        label="batches",
        file=stderr,
        item_show_func=progress.waiting if progress.terminal else None,
    ) as bar:
        progress.start(bar)
        try:
            simulator.deliver(
                plan,
                options["url"],
                auth,
                options["concurrency"],
                options["retry_delay"],
                options["give_up_after"],
                progress=progress.advance,
                rate=options["rate"],
                tally=tally,
            )
        finally:
            progress.stop()
    return tally


class Progress:
    """The bar's steps, and what the sender waits for (503s, refused connections): on the
    bar's line on a terminal, re-drawn each second even when no batch finishes; elsewhere (a
    log) a line whenever what it waits for changes."""

    def __init__(self, tally, retry_delay, terminal):
        self.tally, self.retry_delay, self.terminal = tally, retry_delay, terminal
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.bar, self.shown, self.thread = None, frozenset(), None

    def waiting(self, _item=None) -> str | None:
        """What the sender waits for, if anything."""
        text = simulator.waiting_text(self.tally, self.retry_delay)
        return f"waiting: {text}" if text else None

    def advance(self, _tally):
        """One step per finished batch (called by the sending threads)."""
        with self.lock:
            self.bar.update(1)

    def start(self, bar):
        """Watch the sending behind `bar` from a thread of its own."""
        self.bar = bar
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()

    def stop(self):
        """Stop watching (the sending is over)."""
        self.done.set()
        self.thread.join()

    def watch(self):
        """Every second: re-draw the bar, or tell what changed."""
        while not self.done.wait(1.0):
            self.tell()

    def tell(self):
        """Re-draw the bar (a terminal), or print what the sender waits for if that changed."""
        with self.lock:
            if self.terminal:
                self.bar.render_progress()
                return
            with self.tally.lock:
                now = frozenset(self.tally.waiting)
            if now == self.shown:
                return
            self.shown = now
            click.echo(f"simulate: {self.waiting() or 'no batch waits to be sent again'}", err=True)


def register(group):
    group.add_command(simulate)
