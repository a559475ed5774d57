"""Taking in one batch: from a request's body to an Outcome.

The webhook's whole use case, apart from HTTP: undo the body's Content-Encoding, recognise a
re-delivery, parse, validate, store the events and quarantine what cannot be one. The web layer
(receiver.web.webhook) authenticates, reads the body and turns the Outcome into a status, a body
and metrics; nothing here knows about HTTP or metrics.

Every database call of a batch runs under the request's one Deadline, and this is the one place
where database trouble becomes `unavailable`.
"""

import logging
import operator
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field

from ..storage import db, deliveries, events, quarantine
from . import jsoncodec, schemas

logger = logging.getLogger("receiver.ingest")
EVENT_TYPE = operator.attrgetter("type")
EVENT_OUTCOMES = ("stored", "duplicate", "quarantined")
# Content-Encoding values a body may come in (RFC 9110 8.4.1); Campaign documents none, but a
# proxy or a future sender may compress, and a compressed body must not be quarantined as junk.
GZIP, DEFLATE = ("gzip", "x-gzip"), ("deflate",)


@dataclass
class Outcome:
    """What became of one request's body.

    `name` is the request's outcome (the metrics' `outcome` label): ok, redelivered, bad_body,
    unsupported_encoding, too_large or unavailable; `error` says why for every name but the
    first two (logged, and the answer's text for a refusal)."""

    name: str
    error: str | None = None
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    events: Counter = field(default_factory=Counter)  # (type label, event outcome): events
    # The stored events' lags, bucketed for metrics.observe_buckets: ({bucket: events}, sum).
    lag_buckets: tuple = field(default_factory=lambda: (Counter(), 0.0))
    clients: set = field(default_factory=set)  # (client_id, type) of the stored events
    database_seconds: float | None = None  # the store's transaction, commit included
    body_quarantined: bool = False
    # (kind, quarantine.category) of each thing this request kept in quarantine: what
    # receiver_quarantined_total counts. Empty for the usual batch (nothing classified).
    quarantined_by: Counter = field(default_factory=Counter)

    @property
    def acknowledged(self) -> bool:
        """Whether the sender may forget the batch: every event is committed somewhere."""
        return self.name in ("ok", "redelivered")

    def summary(self) -> dict:
        """The 200 answer's counts."""
        return {
            "received": self.received,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
        }


class UnsupportedEncoding(ValueError):
    """A Content-Encoding this receiver cannot undo."""


class DecodedTooLarge(ValueError):
    """A compressed body that is larger than the limit once decompressed."""


def take(body: bytes, config, *, pool, deadline, content_encoding=None) -> Outcome:
    """Take in one request's body: store its events, quarantine what cannot be one, or say
    why not. `config` gives the limits (max_batch, max_body_bytes); `deadline` is the request's."""
    try:
        return _take(body, config, pool, deadline, content_encoding)
    except db.DatabaseUnavailable as error:
        # Not acknowledged: most often nothing was committed; after a deadline cut a commit
        # mid-way, or a standby never confirmed it, it may have been. Either way the sender
        # keeps the batch and retries in 10 s, and the retry is stored once.
        return Outcome("unavailable", error=str(error))


def _take(body, config, pool, deadline, content_encoding) -> Outcome:
    try:
        body = decode_content(body, content_encoding, config.max_body_bytes)
    except DecodedTooLarge as error:
        return Outcome("too_large", error=str(error))
    except (UnsupportedEncoding, jsoncodec.BadBody) as error:
        # Kept as received, so that nothing is lost: `receiver quarantine replay` undoes gzip
        # itself (a body that did not decompress, once repaired), and stores a body of another
        # encoding once an operator has decoded it into the row.
        quarantine.keep_body(pool, body, str(error), deadline)
        name = "unsupported_encoding" if isinstance(error, UnsupportedEncoding) else "bad_body"
        return body_kept(name, str(error))

    if not body.removeprefix(jsoncodec.UTF8_BOM).strip():
        # Nothing to keep and nothing to retry into shape: refused, and not quarantined (a
        # `curl --data-binary @missing-file` posts an empty body; it must leave no junk behind).
        return Outcome("bad_body", error="empty body")

    # A re-delivery (the sender retries a batch whose 200 it did not get) of a body committed
    # whole before is answered from one index lookup: its every event is in `events` already,
    # so 200 as all duplicates keeps the promise without parsing or validating it again. A body
    # not found here, for whatever reason, simply takes the full path below.
    body_digest = deliveries.digest(body)
    earlier = deliveries.find(pool, body_digest, deadline)
    if earlier is not None:
        return redelivered(earlier)

    try:
        items, listed = jsoncodec.parse_batch(body, max_items=config.max_batch)
    except jsoncodec.TooManyItems as error:
        # Refused before the body was parsed into objects: nothing stored. Campaign never sends
        # more than 100 events; it is someone else.
        return Outcome("too_large", error=str(error))
    except jsoncodec.BadBody as error:
        # Not JSON, or not a list/object. Campaign only sends JSON lists, so this is a body
        # mangled in transit (a retry may bring it whole) or not Campaign at all: refused, and
        # the body kept in quarantine (once, however often it is retried) so nothing is lost.
        quarantine.keep_body(pool, body, str(error), deadline)
        return body_kept("bad_body", str(error))

    valid, rejected, document = validate_items(items, body, listed)
    valid_counts = count_by_label(map(EVENT_TYPE, valid))
    started = time.perf_counter()
    result = events.store_batch(
        pool,
        valid,
        rejected,
        delivery=(body_digest, valid_counts),
        document=document,
        deadline=deadline,
    )
    # Committed. Invalid events are in quarantine with their reason, so the whole batch is
    # acknowledged: a non-200 would make the sender re-send the valid events with the poison.
    outcome = stored(len(items), valid_counts, result)
    outcome.database_seconds = time.perf_counter() - started
    return outcome


def decode_content(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """The body with its Content-Encoding undone (codings are undone last one first); at most
    `limit` bytes of it, so that a small compressed body cannot become gigabytes here."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding in GZIP:
            body = _inflate(body, 16 + zlib.MAX_WBITS, limit)
        elif coding in DEFLATE:
            try:
                body = _inflate(body, zlib.MAX_WBITS, limit)  # zlib-wrapped, as RFC 9110 says
            except jsoncodec.BadBody:
                body = _inflate(body, -zlib.MAX_WBITS, limit)  # raw deflate, as some send it
        else:
            raise UnsupportedEncoding(
                f"Content-Encoding {coding!r} is not supported (gzip, deflate and identity are);"
                " body kept as received"
            )
    return body


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    """Decompress `data` (every gzip member of it), refusing more than `limit` bytes."""
    out = []
    size = 0
    while True:
        inflater = zlib.decompressobj(wbits)
        try:
            chunk = inflater.decompress(data, limit + 1 - size)
        except zlib.error as error:
            raise jsoncodec.BadBody(f"compressed body is not valid: {error}") from None
        size += len(chunk)
        out.append(chunk)
        if size > limit or inflater.unconsumed_tail:
            raise DecodedTooLarge(f"body over {limit} bytes once decompressed")
        if not inflater.eof:
            raise jsoncodec.BadBody("compressed body is incomplete")
        data = inflater.unused_data
        if not data or wbits != 16 + zlib.MAX_WBITS:  # more members only in gzip
            return b"".join(out)


def validate_items(items, body, listed=None):
    """Split items into storable events and quarantine entries with their reasons; with them
    the batch statement's document when the batch was validated whole (else None). `listed`:
    the bytes orjson read the items from as one list (jsoncodec.ParsedBatch), if it did."""
    batch = schemas.validate_batch(items, listed)
    if batch is not None:  # the usual batch: every event valid, validated as one
        if batch.keys is not None:  # stored from the list as received
            return batch.events, [], events.Listed(batch.document, batch.keys)
        return batch.events, [], batch.document
    valid, rejected = [], []
    for item, outcome in schemas.validate_events(items):
        if isinstance(outcome, schemas.ValidatedEvent):
            valid.append(outcome)
            continue
        error = outcome
        if not isinstance(error, schemas.InvalidEvent):
            # A bug of ours met by this content. Quarantine it (replayable after the fix)
            # rather than answer 5xx: the sender would re-send the batch for three days.
            logger.error("unexpected error validating an event", exc_info=error)
            error = schemas.InvalidEvent(f"could not validate: {type(error).__name__}")
        kind = item.get("type") if isinstance(item, dict) else None
        content = jsoncodec.preserve(item)
        if content is None:  # cannot be re-serialised: keep the whole body instead
            reason = f"{error} (whole body kept)"
            rejected.append(quarantine.Rejected("body", reason, body, kind))
        else:
            rejected.append(quarantine.Rejected("event", str(error), content, kind))
    return valid, rejected, None


def body_kept(name, reason) -> Outcome:
    """The outcome of a body refused and kept whole in quarantine with this reason."""
    categories = Counter({("body", quarantine.category(reason)): 1})
    return Outcome(name, error=reason, body_quarantined=True, quarantined_by=categories)


def redelivered(earlier) -> Outcome:
    """The outcome of a body committed whole before: what its full path would give now."""
    counts = Counter({(label, "duplicate"): count for label, count in earlier.counts.items()})
    return Outcome("redelivered", received=earlier.events, duplicates=earlier.events, events=counts)


def stored(received, valid, result) -> Outcome:
    """The outcome of a committed batch. `valid`: the valid events per type label."""
    stored_counts = count_by_label(result.stored_by_type())
    quarantined = Counter(metric_type(item.event_type) for item in result.rejected)
    # Events PostgreSQL refused after validation are quarantined, not duplicates.
    refused = Counter(
        metric_type(item.event_type) for item in result.rejected if item.after_validation
    )
    duplicates = valid - stored_counts - refused  # Counter subtraction keeps the positive counts
    by_outcome = Counter()
    for outcome, counts in zip(
        EVENT_OUTCOMES, (stored_counts, duplicates, quarantined), strict=True
    ):
        for label, count in counts.items():
            by_outcome[label, outcome] = count
    total_stored = result.stored
    # Classified only when something was quarantined: never for the usual batch.
    quarantined_by = Counter(
        (item.kind, quarantine.category(item.reason)) for item in result.rejected
    )
    return Outcome(
        "ok",
        received=received,
        stored=total_stored,
        duplicates=valid.total() - total_stored - sum(refused.values()),
        quarantined=len(result.rejected),
        events=by_outcome,
        lag_buckets=result.lag_buckets(),
        clients=result.clients(),
        quarantined_by=quarantined_by,
    )


def count_by_label(kinds) -> Counter:
    """How many of each metric label among these event types, or {type: count} (counted
    first, then labelled: a batch has a handful of distinct types and a hundred events)."""
    labels = Counter()
    for kind, count in Counter(kinds).items():
        labels[metric_type(kind)] += count
    return labels


def metric_type(kind) -> str:
    """Documented types as themselves, anything else as `other`: bounded label values."""
    return kind if isinstance(kind, str) and kind in schemas.SCHEMAS else "other"
