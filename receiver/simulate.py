"""`receiver simulate`: a sender that behaves like Campaign, to try a deployment and load-test it.

It generates realistic batches of every documented type (ids present or absent, as in the vendor
samples), delivers some batches twice (a lost 200 makes Campaign re-send), and treats anything
but 200 the way Campaign does: wait, send the same batch again, until it is accepted or the
give-up time passes. `--verify` then compares what was sent with what the database holds.

Every event of a run carries the run's own `clientId` and a unique `mailId`, so verification
counts rows by content the receiver cannot have invented, independently of its keys.
"""

import itertools
import json
import random
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests

DOCUMENTED_TYPES = (
    "open", "click", "sent", "bounce", "unsubscribe", "spamcomplaint", "singleoptin",
    "confirmedoptin", "doubleoptin", "blocklist", "archive", "filteredbyblocklist",
)  # fmt: skip
# Roughly the shape of real traffic: mostly sends and opens, few of the rest.
TYPE_WEIGHTS = (30, 10, 40, 5, 3, 1, 2, 2, 2, 1, 2, 2)
DEVICES = ("desktop", "mobile", "tablet")
SYSTEMS = ("Windows 10", "macOS", "iOS 17", "Android 14")
BROWSERS = ("Firefox 64.1", "Chrome 120", "Safari 17", "Outlook")


@dataclass
class Plan:
    """What to send: the run's client id, the batches, and which are delivered twice."""

    client_id: int
    batches: list
    mail_ids: list
    redeliveries: int = 0


@dataclass
class Tally:
    """What happened, shared by the sending threads."""

    statuses: Counter = field(default_factory=Counter)
    latencies: list = field(default_factory=list)
    delivered_batches: int = 0
    delivered_events: int = 0
    attempts: int = 0
    retries: int = 0
    gave_up: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def make_plan(events, batch_size=100, duplicates=0.1, without_id=0.5, seed=None) -> Plan:
    """Generate `events` unique events in batches; `duplicates` of the batches go out twice."""
    rng = random.Random(seed)
    client_id = rng.randrange(10**10, 10**11)
    run = uuid.UUID(int=rng.getrandbits(128)).hex[:10]
    base_ms = int(time.time() * 1000) - 60_000
    items, mail_ids = [], []
    for n in range(events):
        mail_id = f"{run}-{n:09d}"
        mail_ids.append(mail_id)
        items.append(make_event(rng, client_id, mail_id, base_ms + n, without_id))
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    repeated = [b for b in batches if rng.random() < duplicates]
    # Re-deliveries arrive later and interleaved, as retries after a lost 200 would.
    for batch in repeated:
        batches.insert(rng.randrange(len(batches) + 1), batch)
    return Plan(client_id, batches, mail_ids, len(repeated))


def make_event(rng, client_id, mail_id, created_ms, without_id) -> dict:
    """One event of a random documented type, shaped like the vendor's samples."""
    kind = rng.choices(DOCUMENTED_TYPES, TYPE_WEIGHTS)[0]
    event = {
        "type": kind,
        "recipientId": f"user{rng.randrange(10**6)}@example.com",
        "userListId": 10180860004,
        "clientId": client_id,
        "created": created_ms,
        "subscriptionId": rng.randrange(10**10, 10**11),
        "mailId": mail_id,
        "mailingId": rng.randrange(10230355200, 10230355300),
        "mediaTypesToAddresses": {"EMAIL": "someone@example.com"},
    }
    if rng.random() >= without_id:
        event["id"] = f"{mail_id}-{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}"
    if kind in ("open", "click"):
        event["remoteAddress"] = "0.0.0.0"
        event["device"] = rng.choice(DEVICES)
        event["operatingSystem"] = rng.choice(SYSTEMS)
        event["browser"] = rng.choice(BROWSERS)
    if kind == "click":
        event["link"] = f"https://example.com/offer/{rng.randrange(100)}"
    if kind == "bounce":
        event["category"] = rng.choice(("softbounce", "hardbounce"))
        event["reason"] = rng.choice(("spam-related", "other"))
        event["mediaType"] = "EMAIL"
        event["thresholdExceeded"] = rng.random() < 0.1
    return event


def deliver(plan, url, auth, concurrency=8, retry_delay=10.0, give_up_after=3 * 86400.0,
            timeout=10.0, progress=None, rate=None, tally=None) -> Tally:
    """Send every batch like Campaign: retry anything but 200 after `retry_delay` seconds.

    With `rate` (events/s) batches are started on a schedule instead of as fast as possible;
    pass a `tally` to watch the run from another thread."""
    tally = tally or Tally()
    queue = iter(enumerate(plan.batches))
    queue_lock = threading.Lock()
    offsets = list(itertools.accumulate((len(b) for b in plan.batches), initial=0))
    started = time.monotonic()

    def next_batch():
        with queue_lock:
            return next(queue, None)

    def worker():
        session = requests.Session()
        session.auth = auth
        while (job := next_batch()) is not None:
            if rate:
                time.sleep(max(0.0, started + offsets[job[0]] / rate - time.monotonic()))
            body = json.dumps(job[1]).encode()
            if deliver_one(session, url, body, tally, retry_delay, give_up_after, timeout):
                with tally.lock:
                    tally.delivered_batches += 1
                    tally.delivered_events += len(job[1])
            if progress:
                progress(tally)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tally


def deliver_one(session, url, body, tally, retry_delay, give_up_after, timeout) -> bool:
    """POST one batch until it is answered 200; False if the give-up time passed first."""
    deadline = time.monotonic() + give_up_after
    for attempt in itertools.count():
        started = time.monotonic()
        try:
            status = session.post(url, data=body, timeout=timeout).status_code
        except requests.RequestException as error:
            status = type(error).__name__  # refused, reset, timed out: all retried
        elapsed = time.monotonic() - started
        with tally.lock:
            tally.attempts += 1
            tally.retries += attempt > 0
            tally.statuses[status] += 1
            tally.latencies.append(elapsed)
        if status == 200:
            return True
        if time.monotonic() + retry_delay > deadline:
            with tally.lock:
                tally.gave_up += 1
            return False
        time.sleep(retry_delay)
    return False


@dataclass
class Verification:
    expected: int
    found: int
    missing: int
    extra: int
    duplicated: int

    @property
    def ok(self) -> bool:
        return self.missing == self.extra == self.duplicated == 0 and self.found == self.expected


def verify(plan, database_url) -> Verification:
    """Compare the plan's events with the rows stored for the run's client id."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT mail_id, count(*) FROM events WHERE client_id = %s GROUP BY mail_id",
            (plan.client_id,),
        ).fetchall()
    stored = dict(rows)
    expected = set(plan.mail_ids)
    return Verification(
        expected=len(expected),
        found=sum(stored.values()),
        missing=len(expected - stored.keys()),
        extra=len(stored.keys() - expected),
        duplicated=sum(1 for n in stored.values() if n > 1),
    )


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def summary_lines(plan, tally, elapsed) -> list[str]:
    unique = len(plan.mail_ids)
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(tally.statuses.items(), key=str))
    return [
        f"events: {unique} unique in {len(plan.batches)} deliveries "
        f"({plan.redeliveries} batches delivered twice)",
        f"delivered: {tally.delivered_batches} batches, {tally.delivered_events} events "
        f"in {elapsed:.1f} s ({tally.delivered_events / max(elapsed, 1e-9):,.0f} events/s)",
        f"attempts: {tally.attempts}, retries: {tally.retries}, gave up: {tally.gave_up}",
        f"statuses: {statuses}",
        f"latency: p50 {percentile(tally.latencies, 0.5) * 1000:.1f} ms, "
        f"p99 {percentile(tally.latencies, 0.99) * 1000:.1f} ms",
    ]


class ProgressBar:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, total, stream=sys.stderr):
        self.total, self.stream = total, stream
        self.enabled = stream.isatty()
        self.started = self.last = time.monotonic()
        self.lock = threading.Lock()

    def __call__(self, tally):
        now = time.monotonic()
        if not self.enabled or now - self.last < 0.2:
            return
        with self.lock:
            self.last = now
            done = tally.delivered_batches
            width = 30
            filled = int(width * done / max(self.total, 1))
            rate = tally.delivered_events / max(now - self.started, 1e-9)
            self.stream.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} batches "
                f"{rate:,.0f} ev/s retries {tally.retries}  "
            )
            self.stream.flush()

    def close(self):
        if self.enabled:
            self.stream.write("\n")


def local_defaults(state_dir=Path(".receiver")):
    """Credentials and database of a local `receiver serve` (development mode), if any."""
    user = password = database_url = None
    credentials = state_dir / "credentials"
    if credentials.exists():
        user, _, password = credentials.read_text().strip().partition(":")
    pgdata = state_dir / "pgdata"
    if (pgdata / "postmaster.pid").exists():
        from pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(pgdata.resolve())
        if info is not None and info.is_running():
            database_url = info.get_uri()
    return user, password, database_url


def add_arguments(parser):
    parser.add_argument("--url", default="http://127.0.0.1:8000/webhook", help="target URL")
    parser.add_argument("--user", help="Basic Auth user (default: .receiver/credentials)")
    parser.add_argument("--password", help="Basic Auth password (or $RECEIVER_SIMULATE_PASSWORD)")
    parser.add_argument("--events", type=int, default=10_000, help="unique events to send")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--duplicates", type=float, default=0.1,
                        help="share of batches delivered twice (default 0.1)")
    parser.add_argument("--without-id", type=float, default=0.5,
                        help="share of events without an id (default 0.5)")
    parser.add_argument("--concurrency", type=int, default=8, help="parallel connections")
    parser.add_argument("--rate", type=float, help="events per second (default: as fast as "
                        "the receiver answers)")
    parser.add_argument("--retry-delay", type=float, default=10.0,
                        help="seconds before re-sending a batch that was not answered 200")
    parser.add_argument("--give-up-after", type=float, default=3 * 86400.0,
                        help="seconds after which a batch is dropped (Campaign: three days)")
    parser.add_argument("--seed", type=int, help="random seed, for a reproducible run")
    parser.add_argument("--verify", action="store_true",
                        help="compare with the database afterwards; exit 1 on any difference")
    parser.add_argument("--database-url", help="for --verify (default $DATABASE_URL, or the "
                        "embedded database of a local `receiver serve`)")


def run(args, environ) -> int:
    """The command: plan, deliver, summarise, verify."""
    local_user, local_password, local_db = local_defaults()
    user = args.user or local_user
    password = args.password or environ.get("RECEIVER_SIMULATE_PASSWORD") or local_password
    if not user or not password:
        print("receiver simulate: give --user and --password", file=sys.stderr)
        return 2
    database_url = args.database_url or environ.get("DATABASE_URL") or local_db
    if args.verify and not database_url:
        print("receiver simulate: --verify needs --database-url or DATABASE_URL", file=sys.stderr)
        return 2
    plan = make_plan(args.events, args.batch_size, args.duplicates, args.without_id, args.seed)
    bar = ProgressBar(len(plan.batches))
    started = time.monotonic()
    tally = deliver(plan, args.url, (user, password), args.concurrency, args.retry_delay,
                    args.give_up_after, progress=bar, rate=args.rate)
    bar.close()
    for line in summary_lines(plan, tally, time.monotonic() - started):
        print(line)
    if not args.verify:
        return 0 if tally.gave_up == 0 else 1
    result = verify(plan, database_url)
    print(f"verify: expected {result.expected}, stored {result.found}, missing "
          f"{result.missing}, extra {result.extra}, duplicated {result.duplicated}: "
          f"{'OK' if result.ok else 'MISMATCH'}")
    return 0 if result.ok else 1
