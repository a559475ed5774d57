"""The Campaign-like sender behind `receiver simulate`, to try a deployment and load-test it.

It generates realistic batches of every documented type (ids present or absent, as in the vendor
samples), delivers some batches twice (a lost 200 makes Campaign re-send), and treats anything
but 200 the way Campaign does: wait, send the same batch again, until it is accepted or the
give-up time passes. `--verify` then compares what was sent with what the database holds.

The events tell a believable story, so that the first reports a newcomer sees look right: each
mailing is sent to its recipients, a few bounce, some of the others open it (some several
times), some openers click, a few unsubscribe or complain; subscription events come beside.

Every simulated event carries SIMULATED_CLIENT_ID, the same for every run: the receiver's
per-client metrics keep series for a limited number of client ids, and a new id per run would
use them up. A run is told apart by its own tag, in front of every event's unique `mailId`,
and its own mailing ids, so verification counts the run's rows alone, by content the receiver
cannot have invented, independently of its keys, whatever earlier runs stored.
"""

import itertools
import json
import random
import socket
import statistics
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http import HTTPStatus

import requests

from .campaign import EVENT_TYPES

# The clientId of simulated traffic (docs/operations.md: simulate). Campaign's client ids are
# 11 digits; twelve nines is none of them, and plainly made up in a report or a metric.
SIMULATED_CLIENT_ID = 999_999_999_999

DOCUMENTED_TYPES = EVENT_TYPES
# A mailing's funnel (made by mailing_events); every other type is about a recipient's
# subscription, a few per hundred events.
FUNNEL_TYPES = ("sent", "open", "click", "bounce", "unsubscribe", "spamcomplaint")
SUBSCRIPTION_TYPES = tuple(kind for kind in EVENT_TYPES if kind not in FUNNEL_TYPES)
SUBSCRIPTION_SHARE = 0.03
# The funnel of a mailing, as shares: of the recipients sent it, of the delivered, of openers.
BOUNCE_RATE = 0.02
HARD_BOUNCE_SHARE = 0.3
OPEN_RATE = 0.3
OPENS_PER_OPENER = (1, 1, 2, 3)
CLICK_RATE = 0.25
CLICKS_PER_CLICKER = (1, 2)
UNSUBSCRIBE_RATE = 0.02
COMPLAINT_RATE = 0.002
RECIPIENTS_PER_MAILING = 2000
RECIPIENT_POOL = 10**6
# Events per recipient sent a mailing, on average: to size the mailings to the events asked for.
EVENTS_PER_RECIPIENT = (
    1
    + BOUNCE_RATE
    + (1 - BOUNCE_RATE)
    * (
        OPEN_RATE
        * (
            statistics.mean(OPENS_PER_OPENER)
            + CLICK_RATE * statistics.mean(CLICKS_PER_CLICKER)
            + UNSUBSCRIBE_RATE
        )
        + COMPLAINT_RATE
    )
)
DEVICES = ("desktop", "mobile", "tablet")
SYSTEMS = ("Windows 10", "macOS", "iOS 17", "Android 14")
BROWSERS = ("Firefox 64.1", "Chrome 120", "Safari 17", "Outlook")


@dataclass
class Plan:
    """What to send: the client id, the batches, and which are delivered twice; the run's tag
    (every mail id starts with it) and its mailings."""

    client_id: int
    batches: list
    mail_ids: list
    redeliveries: int = 0
    run: str = ""
    mailing_ids: list = field(default_factory=list)


@dataclass
class Tally:
    """What happened, shared by the sending threads; `waiting`: batches waiting to be sent
    again, by the answer they last got."""

    statuses: Counter = field(default_factory=Counter)
    latencies: list = field(default_factory=list)
    waiting: Counter = field(default_factory=Counter)
    delivered_batches: int = 0
    delivered_events: int = 0
    attempts: int = 0
    retries: int = 0
    gave_up: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Unreachable(Exception):
    """Nothing can take the batches at the URL (refused, unknown host); the message says so."""


def make_plan(events, batch_size=100, duplicates=0.1, without_id=0.5, seed=None) -> Plan:
    """Generate `events` unique events in batches; `duplicates` of the batches go out twice.

    `seed` makes the events' types, recipients and order reproducible; the run's tag and
    mailing ids are new on every call all the same, so that no two runs share an event."""
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:12]
    subscriptions = round(events * SUBSCRIPTION_SHARE)
    recipients = int((events - subscriptions) / EVENTS_PER_RECIPIENT)
    if events > subscriptions:
        recipients = max(1, recipients)
    count = max(1, round(recipients / RECIPIENTS_PER_MAILING))
    mailing_ids = random.SystemRandom().sample(range(10**10, 10**11), count)
    mailings = [
        mailing_events(rng, mailing_id, size)
        for mailing_id, size in zip(mailing_ids, split(recipients, count), strict=True)
    ]
    funnel = fit(mailings, events - subscriptions)
    subscriptions = events - len(funnel)  # whatever the funnel left of the events asked for
    base_ms = int(time.time() * 1000) - 60_000
    at = set(rng.sample(range(events), subscriptions))
    funnel_events = iter(funnel)
    items, mail_ids = [], []
    for n in range(events):
        if n in at:
            recipient = recipient_id(rng.randrange(RECIPIENT_POOL))
            kind, mailing_id = rng.choice(SUBSCRIPTION_TYPES), rng.choice(mailing_ids)
        else:
            kind, recipient, mailing_id = next(funnel_events)
        mail_id = f"{run}-{n:09d}"
        mail_ids.append(mail_id)
        items.append(make_event(rng, kind, recipient, mailing_id, mail_id, base_ms + n, without_id))
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    repeated = [b for b in batches if rng.random() < duplicates]
    # Re-deliveries arrive later and interleaved, as retries after a lost 200 would.
    for batch in repeated:
        batches.insert(rng.randrange(len(batches) + 1), batch)
    return Plan(SIMULATED_CLIENT_ID, batches, mail_ids, len(repeated), run, mailing_ids)


def split(total, parts) -> list[int]:
    """`total` in `parts` sizes that differ by one at most."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def recipient_id(number) -> str:
    """A recipient id like Campaign's: an e-mail address."""
    return f"user{number}@example.com"


def mailing_events(rng, mailing_id, size) -> tuple[list, list]:
    """One mailing to `size` recipients: its `sent` events, then the responses ((kind,
    recipient, mailing id) each), a recipient's together: opens before clicks."""
    recipients = [recipient_id(n) for n in rng.sample(range(RECIPIENT_POOL), size)]
    sends = [("sent", r, mailing_id) for r in recipients]
    responses = []
    for r in recipients:
        if rng.random() < BOUNCE_RATE:
            responses.append([("bounce", r, mailing_id)])
            continue
        kinds = []
        if rng.random() < OPEN_RATE:
            kinds += ["open"] * rng.choice(OPENS_PER_OPENER)
            if rng.random() < CLICK_RATE:
                kinds += ["click"] * rng.choice(CLICKS_PER_CLICKER)
            if rng.random() < UNSUBSCRIBE_RATE:
                kinds.append("unsubscribe")
        if rng.random() < COMPLAINT_RATE:
            kinds.append("spamcomplaint")
        if kinds:
            responses.append([(kind, r, mailing_id) for kind in kinds])
    rng.shuffle(responses)
    return sends, [event for group in responses for event in group]


def fit(mailings, budget) -> list:
    """The mailings' events, each mailing's sends before its responses, cut to `budget` by
    dropping the last responses: a response is never kept without its recipient's `sent`, nor
    a click without the opens before it."""
    excess = sum(len(s) + len(r) for s, r in mailings) - budget
    kept = []
    for sends, responses in reversed(mailings):
        drop = min(max(excess, 0), len(responses))
        excess -= drop
        kept.append(sends + responses[: len(responses) - drop])
    return [event for mailing in reversed(kept) for event in mailing]


def make_event(rng, kind, recipient, mailing_id, mail_id, created_ms, without_id) -> dict:
    """One event of `kind`, shaped like the vendor's samples."""
    event = {
        "type": kind,
        "recipientId": recipient,
        "userListId": 10180860004,
        "clientId": SIMULATED_CLIENT_ID,
        "created": created_ms,
        "subscriptionId": rng.randrange(10**10, 10**11),
        "mailId": mail_id,
        "mailingId": mailing_id,
        "mediaTypesToAddresses": {"EMAIL": recipient},
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
        hard = rng.random() < HARD_BOUNCE_SHARE
        event["category"] = "hardbounce" if hard else "softbounce"
        event["reason"] = rng.choice(("spam-related", "other"))
        event["mediaType"] = "EMAIL"
        event["thresholdExceeded"] = rng.random() < 0.1
    return event


def check_listening(url, wait=3.0):
    """Return once something accepts connections at the URL's host and port; Unreachable when
    its host name does not resolve, or when it is refused for `wait` seconds (a receiver that
    is starting gets that long). Any other trouble is left to the retries of `deliver`."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        raise Unreachable(f"{url} is not an http(s) URL with a host")
    if requests.utils.get_environ_proxies(url):
        return  # the proxy is what answers; the retries and their progress line tell
    port = parts.port or (443 if parts.scheme == "https" else 80)
    deadline = time.monotonic() + wait
    while True:
        try:
            socket.create_connection((parts.hostname, port), timeout=5).close()
            return
        except ConnectionRefusedError:
            if time.monotonic() >= deadline:
                raise Unreachable(f"nothing listens at {url} (connection refused)") from None
            time.sleep(0.2)
        except socket.gaierror:
            raise Unreachable(f"unknown host {parts.hostname!r} in {url}") from None
        except OSError:
            return


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
        with tally.lock:
            tally.waiting[status] += 1
        time.sleep(retry_delay)
        with tally.lock:
            tally.waiting[status] -= 1
            if not tally.waiting[status]:
                del tally.waiting[status]
    return False


def waiting_text(tally, retry_delay) -> str | None:
    """What the sender waits for, in a few words (None: for nothing): the batches waiting to be
    sent again and the answers they got."""
    with tally.lock:
        waiting = sorted(tally.waiting.items(), key=lambda item: str(item[0]))
    if not waiting:
        return None
    batches = sum(n for _, n in waiting)
    answers = ", ".join(f"{n} after {answer_name(status)}" for status, n in waiting)
    return f"{batches} batch(es) to send again every {retry_delay:g} s: {answers}"


def answer_name(status) -> str:
    """An HTTP status with its phrase, or what the exception a request raised means."""
    if isinstance(status, int):
        try:
            return f"{status} {HTTPStatus(status).phrase}"
        except ValueError:
            return str(status)
    if "Timeout" in status:
        return "no answer in time"
    if status == "ConnectionError":
        return "no connection (refused or reset)"
    return status


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
    """Compare the plan's events with the rows of the run: its mailings, its mail ids."""
    import psycopg

    from .storage import events

    with psycopg.connect(database_url, connect_timeout=10) as conn:
        stored = events.rows_by_mail_id(conn, plan.client_id, plan.mailing_ids, plan.run)
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
