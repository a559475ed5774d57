"""The `quarantine` table: what could not be stored as an event, kept once with its reason.

The sender retries anything but 200 every 10 s for three days, so the same bad content arrives
again and again: it is keyed by a digest of its kind and bytes and counted, not stored per retry.
"""

import hashlib
import re
from dataclasses import dataclass

from psycopg.rows import dict_row

# The same bad content retried by the sender every 10 s is kept once; later arrivals only count.
INSERT_QUARANTINE = """
INSERT INTO quarantine (kind, reason, content, content_sha256)
SELECT * FROM unnest(%s::text[], %s::text[], %s::bytea[], %s::bytea[])
ON CONFLICT (content_sha256) DO UPDATE
SET last_received_at = now(),
    times_received = quarantine.times_received + 1,
    reason = EXCLUDED.reason
"""

# The filters of `list`, written out in each statement: a NULL parameter means "no filter".
LIST_ROWS = """
SELECT id, kind, reason, times_received, received_at, last_received_at, resolved_at, resolution,
       octet_length(content) AS size,
       CASE WHEN %(with_content)s THEN content END AS content
FROM quarantine
WHERE (%(all)s OR resolved_at IS NULL)
  AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
  AND (%(since)s::timestamptz IS NULL OR last_received_at >= %(since)s::timestamptz)
  AND (%(reasons)s::text[] IS NULL OR reason = ANY(%(reasons)s::text[]))
ORDER BY id
LIMIT %(limit)s
"""

COUNT_BY_REASON = """
SELECT reason, count(*) AS rows
FROM quarantine
WHERE (%(all)s OR resolved_at IS NULL)
  AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
  AND (%(since)s::timestamptz IS NULL OR last_received_at >= %(since)s::timestamptz)
GROUP BY reason
ORDER BY count(*) DESC, reason
"""

GET_ROW = """
SELECT id, kind, reason, times_received, received_at, last_received_at, resolved_at, resolution,
       octet_length(content) AS size, content
FROM quarantine WHERE id = %s
"""

# Retention: a resolved row has done its job once its events are stored; unresolved rows stay
# until someone looks at them, whatever their age.
DELETE_RESOLVED_BEFORE = """
DELETE FROM quarantine WHERE id = ANY (ARRAY(
    SELECT id FROM quarantine WHERE resolved_at < %s ORDER BY id LIMIT %s))
"""

COUNT_RESOLVED_BEFORE = "SELECT count(*) FROM quarantine WHERE resolved_at < %s"

UNRESOLVED_IDS = "SELECT id FROM quarantine WHERE resolved_at IS NULL ORDER BY id"
EXISTING_IDS = "SELECT id FROM quarantine WHERE id = ANY(%s)"

# FOR UPDATE: an operator's UPDATE of the content, or a second replay, waits until this row's
# outcome is committed, so the row is resolved for exactly the content whose events were stored.
LOCK_ROW = "SELECT id, kind, content, resolved_at FROM quarantine WHERE id = %s FOR UPDATE"

# The reason is kept on a resolved row: it is the record of why the content was quarantined.
RESOLVE_ROW = "UPDATE quarantine SET resolved_at = now(), resolution = %s WHERE id = %s"
KEEP_ROW = "UPDATE quarantine SET reason = %s WHERE id = %s"


# --- Categories: every reason the receiver writes, in a fixed and small set -------------------
#
# A metric label (receiver_quarantined_total) and a column of `receiver quarantine list`, so that
# a new kind of refusal stands out: `other` is whatever is not recognised here (a row of an older
# release, a reason an operator wrote, a message added without a rule), and its growing is the
# sign to look. Read from the reason text, so rows written before categories existed have one
# too, without a migration. Documented in docs/operations.md ("Quarantine categories"); the
# order is also the precedence of a reason that names several problems (see category()).
CATEGORIES = (
    "encoding",  # a Content-Encoding not supported, or gzip/deflate that does not decompress
    "not_json",  # the body or an item is not JSON (bad UTF-8, cut short, too deep to parse)
    "not_a_batch",  # JSON, but the body is neither a list of events nor an event
    "not_an_event",  # an item that is not a JSON object
    "missing_field",  # a required field (type, clientId, created) absent
    "invalid_value",  # a field present with a value the schema refuses
    "unstorable",  # valid, but no jsonb can hold it (NUL, unpaired surrogate, too deep)
    "refused_by_database",  # valid, and PostgreSQL refused it when stored
    "internal",  # validation failed on a bug of ours ("could not validate: ...")
    "other",  # not recognised: look at it
)
OTHER = "other"
# receiver.ingest.batch.validate_items: an event that could not even be re-serialised alone.
WHOLE_BODY_KEPT = " (whole body kept)"
# receiver.ingest.schemas._describe: "invalid event: name: problem[; problem], name: ...".
INVALID_EVENT = "invalid event: "
# receiver.ingest.replay.RowReplay.reason, a body partly stored by a replay.
_REPLAYED_BODY = re.compile(r"[0-9]+ of [0-9]+ events valid and stored; not stored: (.+)", re.S)
_REPLAYED_EVENT = re.compile(r"event [0-9]+: (.+)", re.S)
_REPLAYED_MORE = re.compile(r"and [0-9]+ more")
# Reasons by their start (receiver.ingest: batch, jsoncodec, schemas, replay; storage.events).
_PREFIXES = (
    ("Content-Encoding ", "encoding"),  # batch.decode_content: not gzip, deflate or identity
    ("compressed body is ", "encoding"),  # batch._inflate: not valid, incomplete
    ("body over ", "encoding"),  # replay of a gzip row: "... bytes once decompressed"
    ("not valid JSON: ", "not_json"),  # jsoncodec: the body's structure, or one item's parse
    ("JSON body is a ", "not_a_batch"),  # jsoncodec.decode_batch: a number, a string, ...
    ("event is a JSON ", "not_an_event"),  # schemas.validate_event: "... array, not an object"
    ("content holds ", "not_an_event"),  # replay of an event row edited into 0 or 2+ values
    ("contains a NUL character", "unstorable"),  # jsoncodec.encode
    ("contains an unpaired UTF-16 surrogate", "unstorable"),  # jsoncodec._dumps
    ("nested too deeply to store", "unstorable"),  # jsoncodec._dumps
    ("not representable as JSON: ", "unstorable"),  # jsoncodec._dumps
    ("refused by PostgreSQL: ", "refused_by_database"),  # storage.events.insert_events
    ("could not validate: ", "internal"),  # batch.validate_items: an unexpected exception
)
_EXACT = {"empty body": "not_json"}  # replay of a body row emptied by hand
# The field messages of schemas.EventSchema (marshmallow's own for required and null), and
# those of the marshmallow fields and validators releases before 1.0 used (String, Boolean,
# Length), whose rows may still be in the table.
_MISSING_FIELD = re.compile(r"Missing data for required field\.")
_INVALID_VALUE = re.compile(
    r"Field may not be null\.|Not a whole number from 0 to 2\^63-1\."
    r"|Not epoch milliseconds between years 1 and 9999\.|Not a string\.|Must not be empty\."
    r"|Longer than [0-9]+ characters\."
    r"|Not a valid (string|boolean)\.|Length must be between [0-9]+ and [0-9]+\."
    r"|Longer than maximum length [0-9]+\."
)
_FIELD_PROBLEMS = re.compile(r"([A-Za-z_][A-Za-z0-9_]*): (.+)", re.S)


def category(reason: str) -> str:
    """The category (one of CATEGORIES) of a quarantine reason; `other` if not recognised.

    A reason naming several problems (fields of one event, events of a replayed body) takes the
    first of their categories in CATEGORIES order: a missing field wins over an invalid value,
    because an event without a field that decides its identity is not of Campaign's shape at
    all (another sender, or a change of format), which is what to look into first; fixing its
    values alone would not make it storable. Unless one problem is not recognised: then `other`,
    so that a new kind of refusal stands out even next to known ones."""
    reason = reason.removesuffix(WHOLE_BODY_KEPT)  # the event's reason, its body kept instead
    replayed = _REPLAYED_BODY.fullmatch(reason)
    if replayed:
        return _first(map(_replayed_event, replayed.group(1).split(" | ")))
    if reason.startswith(INVALID_EVENT):
        return _invalid_event(reason[len(INVALID_EVENT) :])
    for prefix, name in _PREFIXES:
        if reason.startswith(prefix):
            return name
    return _EXACT.get(reason, OTHER)


def _replayed_event(part: str) -> str | None:
    named = _REPLAYED_EVENT.fullmatch(part)
    if named:
        return category(named.group(1))
    return None if _REPLAYED_MORE.fullmatch(part) else OTHER  # "and 3 more" says nothing


def _invalid_event(problems: str) -> str:
    """The category of schemas._describe's text after "invalid event: "."""
    found = []
    for field in problems.split(", "):  # no message of ours holds ", "
        named = _FIELD_PROBLEMS.fullmatch(field)
        if not named:
            return OTHER
        for message in named.group(2).split("; "):
            if _MISSING_FIELD.fullmatch(message):
                found.append("missing_field")
            elif _INVALID_VALUE.fullmatch(message):
                found.append("invalid_value")
            else:
                return OTHER
    return _first(found)


def _first(categories) -> str:
    """The first of these categories in CATEGORIES order; `other` if one is, or none is given."""
    found = {name for name in categories if name is not None}
    if not found or OTHER in found:
        return OTHER
    return min(found, key=CATEGORIES.index)


@dataclass
class Rejected:
    """Something kept in quarantine: a whole body or one event, and why."""

    kind: str
    reason: str
    content: bytes
    event_type: str | None = None  # the item's `type`, when it had one
    after_validation: bool = False  # valid, but PostgreSQL refused a value


def keep(conn, rejected):
    """Insert (or count again) each Rejected, in the caller's transaction."""
    if not rejected:
        return
    unique = {}
    for item in rejected:
        # The kind is part of the identity: a body `42` and an event `42` are different finds.
        digest = hashlib.sha256(item.kind.encode() + b"\0" + item.content).digest()
        unique.setdefault(digest, item)
    digests = sorted(unique)  # a fixed lock order: concurrent retries cannot deadlock
    items = [unique[d] for d in digests]
    conn.execute(
        INSERT_QUARANTINE,
        (
            [i.kind for i in items],
            [i.reason for i in items],
            [i.content for i in items],
            digests,
        ),
    )


def keep_body(pool, body: bytes, reason: str, deadline=None):
    """Keep an unparseable body, once however often it is retried (`deadline`: the request's)."""
    from . import db

    db.run_on_connection(
        pool, lambda conn: keep(conn, [Rejected("body", reason, body)]), deadline=deadline
    )


def list_rows(
    conn,
    kind=None,
    since=None,
    limit=100,
    include_resolved=False,
    with_content=False,
    reasons=None,
):
    """Quarantine rows in id order, unresolved only unless include_resolved; with `reasons`
    (a list), only rows with one of those reasons (how `list --category` filters: the reasons
    of a category are found among reason_counts())."""
    params = _filters(kind, since, include_resolved) | {
        "limit": limit,
        "with_content": with_content,
        "reasons": None if reasons is None else list(reasons),
    }
    return conn.cursor(row_factory=dict_row).execute(LIST_ROWS, params).fetchall()


def reason_counts(conn, kind=None, since=None, include_resolved=False) -> list[dict]:
    """Rows per reason under the same filters as `list_rows`, most frequent first."""
    params = _filters(kind, since, include_resolved)
    return conn.cursor(row_factory=dict_row).execute(COUNT_BY_REASON, params).fetchall()


def get_row(conn, row_id) -> dict | None:
    """One quarantine row with its content, or None."""
    return conn.cursor(row_factory=dict_row).execute(GET_ROW, (row_id,)).fetchone()


def lock_row(conn, row_id) -> dict | None:
    """The row to replay, locked until the caller's transaction ends; None if it is gone."""
    return conn.cursor(row_factory=dict_row).execute(LOCK_ROW, (row_id,)).fetchone()


def resolve_row(conn, row_id, resolution: str):
    conn.execute(RESOLVE_ROW, (resolution, row_id))


def update_reason(conn, row_id, reason: str):
    conn.execute(KEEP_ROW, (reason, row_id))


def unresolved_ids(conn) -> list[int]:
    return [row[0] for row in conn.execute(UNRESOLVED_IDS)]


def existing_ids(conn, ids) -> set[int]:
    return {row[0] for row in conn.execute(EXISTING_IDS, (sorted(set(ids)),))}


def delete_resolved_before(conn, horizon, batch=10_000) -> int:
    """Delete rows resolved before `horizon`, in batches; the number deleted."""
    from . import db

    return db.delete_in_batches(conn, DELETE_RESOLVED_BEFORE, horizon, batch)


def count_resolved_before(conn, horizon) -> int:
    """The rows delete_resolved_before(horizon) would delete."""
    return conn.execute(COUNT_RESOLVED_BEFORE, (horizon,)).fetchone()[0]


def _filters(kind, since, include_resolved) -> dict:
    return {"kind": kind, "since": since, "all": include_resolved}
