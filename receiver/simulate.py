"""The Campaign-like sender behind `receiver simulate`, to try a deployment and load-test it.

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
import statistics
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

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


def deliver(
    plan,
    url,
    auth,
    concurrency=8,
    retry_delay=10.0,
    give_up_after=3 * 86400.0,
    timeout=10.0,
    progress=None,
    rate=None,
    tally=None,
) -> Tally:
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

    from .storage import events

    with psycopg.connect(database_url) as conn:
        stored = events.count_by_mail_id(conn, plan.client_id)
    expected = set(plan.mail_ids)
    return Verification(
        expected=len(expected),
        found=sum(stored.values()),
        missing=len(expected - stored.keys()),
        extra=len(stored.keys() - expected),
        duplicated=sum(1 for n in stored.values() if n > 1),
    )


def percentile(values, fraction):
    """The `fraction` quantile of `values` (0.0 when there are none)."""
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[round(fraction * 100) - 1]


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
