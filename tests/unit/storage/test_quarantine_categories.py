"""Quarantine categories (receiver.storage.quarantine.category): every reason the receiver writes
has its intended category, never `other`.

The reasons are not written out here: each comes from driving the code path that writes it, the
webhook's own (receiver.ingest.batch.take, with the database calls faked: the body quarantine,
the store and PostgreSQL's refusal of a valid event) and the replay's. Two guards keep the list
whole: every message literal of the exceptions that carry reasons, found in the source, must
appear in a driven reason, and every error message of every schema field must have been driven.
"""

import ast
import gzip
import json
import re
from collections import Counter
from contextlib import nullcontext
from types import SimpleNamespace

import psycopg.errors
import pytest

from receiver.ingest import batch, replay, schemas
from receiver.storage import events, quarantine

from support import ROOT, body, event

CONFIG = SimpleNamespace(max_batch=100, max_body_bytes=1 << 20)
POISON = "refuse-me"  # a valid event with this id is refused by the fake PostgreSQL
DEPTH_PARSED_NOT_STORABLE = 1020  # orjson parses it (1,024), Python's recursion limit refuses it


class FakeConnection:
    """Enough of a connection for events.insert_events: a content error for a POISON event."""

    def transaction(self):
        return nullcontext()

    def execute(self, statement, params):
        if POISON in str(params):
            raise psycopg.errors.ProgramLimitExceeded("index row size 5000 exceeds maximum 2704")
        return SimpleNamespace(fetchall=list)


@pytest.fixture
def take(monkeypatch):
    """batch.take with the database faked: (Outcome, [(kind, reason) kept in quarantine])."""
    kept = []

    def keep_body(pool, content, reason, deadline=None):
        kept.append(("body", reason))

    def store_batch(pool, valid, rejected, **kwargs):
        stored, refused = events.insert_events(FakeConnection(), valid)
        result = events.BatchResult(stored, [*rejected, *refused])
        kept.extend((item.kind, item.reason) for item in result.rejected)
        return result

    monkeypatch.setattr(batch.quarantine, "keep_body", keep_body)
    monkeypatch.setattr(batch.deliveries, "find", lambda *args: None)
    monkeypatch.setattr(batch.events, "store_batch", store_batch)

    def run(data, content_encoding=None):
        kept.clear()
        outcome = batch.take(
            data, CONFIG, pool=None, deadline=None, content_encoding=content_encoding
        )
        return outcome, list(kept)

    return run


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def with_item(raw: bytes) -> bytes:
    """A batch of a valid event and one raw item."""
    return b"[" + json.dumps(event(id="fine")).encode() + b"," + raw + b"]"


def field_cases():
    """(case id, event, the category) for every field message EventSchema can give."""
    long_id = "x" * (schemas.MAX_EVENT_ID_LENGTH + 1)
    long_type = "t" * (schemas.MAX_TYPE_LENGTH + 1)
    changes = {
        "type-null": {"type": None},
        "type-number": {"type": 5},
        "type-empty": {"type": ""},
        "type-long": {"type": long_type},
        "clientId-null": {"clientId": None},
        "clientId-letters": {"clientId": "abc"},
        "clientId-negative": {"clientId": -1},
        "clientId-float": {"clientId": 1.5},
        "created-null": {"created": None},
        "created-text": {"created": "yesterday"},
        "created-year-10000": {"created": schemas.CREATED_MAX + 1},
        "id-float": {"id": 1.5},
        "id-long": {"id": long_id},
        "mailingId-text": {"mailingId": "m1"},
        "userListId-negative": {"userListId": -1},
        "subscriptionId-too-big": {"subscriptionId": 2**63},
    }
    cases = [(name, event(**change), "invalid_value") for name, change in changes.items()]
    for field in ("type", "clientId", "created"):
        item = {k: v for k, v in event(id=f"no-{field}").items() if k != field}
        cases.append((f"{field}-missing", item, "missing_field"))
    # Several problems: a missing field wins over an invalid value (quarantine.category).
    both = {k: v for k, v in event(clientId="abc").items() if k != "created"}
    cases.append(("missing-and-invalid", both, "missing_field"))
    cases.append(("two-invalid", event(clientId=None, created="x", type=""), "invalid_value"))
    return cases


def webhook_cases():
    """(case id, body, Content-Encoding, [(kind, category) kept])."""
    valid = body(event(id="v-1"))
    cases = [
        ("unsupported-encoding", valid, "br", [("body", "encoding")]),
        ("gzip-not-gzip", b"plain text", "gzip", [("body", "encoding")]),
        ("gzip-cut-short", gzip.compress(valid)[:-4], "gzip", [("body", "encoding")]),
        ("deflate-not-deflate", b"plain text", "deflate", [("body", "encoding")]),
        ("body-not-json", b"<xml>not json</xml>", None, [("body", "not_json")]),
        ("body-not-utf8", b"\xff\xfe[]", None, [("body", "not_json")]),
        ("body-cut-short", valid[:-5], None, [("body", "not_json")]),
        ("body-list-unclosed", b"[" + valid, None, [("body", "not_json")]),
        ("body-number", b"42", None, [("body", "not_a_batch")]),
        ("body-string", b'"events"', None, [("body", "not_a_batch")]),
        ("body-null", b"null", None, [("body", "not_a_batch")]),
        ("body-boolean", b"true", None, [("body", "not_a_batch")]),
        ("item-not-json", with_item(b"{nope}"), None, [("event", "not_json")]),
        ("item-not-utf8", with_item(b'{"type":"\xff"}'), None, [("event", "not_json")]),
        ("item-deeper-than-orjson", with_item(deep(1030)), None, [("event", "not_json")]),
        (
            # A long number takes the standard library's parser, whose limit is the recursion's.
            "item-deeper-than-recursion",
            with_item(b'{"n": 12345678901234567890123, "x": ' + deep(1010) + b"}"),
            None,
            [("event", "not_json")],
        ),
        ("item-a-list", body([event(id="in-a-list")]), None, [("event", "not_an_event")]),
        ("item-a-number", with_item(b"7"), None, [("event", "not_an_event")]),
        ("item-a-string", with_item(b'"x"'), None, [("event", "not_an_event")]),
        ("item-null", with_item(b"null"), None, [("event", "not_an_event")]),
        ("item-boolean", with_item(b"false"), None, [("event", "not_an_event")]),
        (
            "nul",
            with_item(b'{"type":"open","clientId":1,"created":1,"x":"a\\u0000"}'),
            None,
            [("event", "unstorable")],
        ),
        ("nul-no-id", body(event(x="\u0000")), None, [("event", "unstorable")]),
        (
            "surrogate",
            with_item(b'{"type":"open","clientId":1,"created":1,"x":"\\ud800"}'),
            None,
            [("event", "unstorable")],
        ),
        (
            "too-deep-to-store-whole-body-kept",
            with_item(
                b'{"type":"open","id":"d","clientId":1,"created":1,"x":'
                + deep(DEPTH_PARSED_NOT_STORABLE)
                + b"}"
            ),
            None,
            [("body", "unstorable")],
        ),
        ("refused-by-postgresql", body(event(id=POISON)), None, [("event", "refused_by_database")]),
    ]
    for name, item, expected in field_cases():
        cases.append(
            (f"field-{name}", with_item(json.dumps(item).encode()), None, [("event", expected)])
        )
    return cases


WEBHOOK_CASES = webhook_cases()


@pytest.mark.parametrize(
    ("data", "content_encoding", "expected"),
    [case[1:] for case in WEBHOOK_CASES],
    ids=[case[0] for case in WEBHOOK_CASES],
)
def test_every_reason_the_webhook_writes_has_its_category(take, data, content_encoding, expected):
    outcome, kept = take(data, content_encoding)
    assert [(kind, quarantine.category(reason)) for kind, reason in kept] == expected, kept
    assert outcome.quarantined_by == Counter(expected)  # what receiver_quarantined_total counts


def webhook_body(name) -> bytes:
    return {case[0]: case for case in WEBHOOK_CASES}[name][1]


def test_the_whole_body_kept_suffix_is_the_events_category(take):
    _, [(kind, reason)] = take(webhook_body("too-deep-to-store-whole-body-kept"))
    assert reason == "nested too deeply to store" + quarantine.WHOLE_BODY_KEPT and kind == "body"


def test_the_item_deeper_than_the_recursion_limit_takes_its_own_wording(take):
    _, [(_, reason)] = take(webhook_body("item-deeper-than-recursion"))
    assert reason == "not valid JSON: nested deeper than the recursion limit"


def test_an_unexpected_validation_error_is_internal(take, monkeypatch):
    real = schemas.validate_event

    def buggy(item):
        if isinstance(item, dict) and item.get("id") == "bug":
            raise TypeError("a bug of ours")
        return real(item)

    monkeypatch.setattr(schemas, "validate_event", buggy)
    without_created = {k: v for k, v in event(id="x").items() if k != "created"}
    outcome, kept = take(body(event(id="bug"), without_created))
    assert kept == [
        ("event", "could not validate: TypeError"),
        ("event", "invalid event: created: Missing data for required field."),
    ]
    assert outcome.quarantined_by == Counter(
        {("event", "internal"): 1, ("event", "missing_field"): 1}
    )


def test_content_no_json_can_hold_is_unstorable():
    # Parsed JSON never holds a set; the message is reachable only from a bug upstream.
    _, [rejected], _ = batch.validate_items([event(id="s", x={1, 2})], b"[]")
    assert rejected.reason.startswith("not representable as JSON: ")
    assert quarantine.category(rejected.reason) == "unstorable"


def test_the_usual_batch_classifies_nothing(take, monkeypatch):
    def never(reason):
        raise AssertionError("classified a stored batch")

    monkeypatch.setattr(quarantine, "category", never)
    outcome, kept = take(body(event(id="a"), event(id="b")))
    assert (outcome.name, outcome.stored, kept, outcome.quarantined_by) == ("ok", 0, [], Counter())


# --- the replay's reasons -----------------------------------------------------------------------


def replay_reason(kind, content: bytes) -> str:
    """The reason a replay would write for this row (nothing stored: the fake connection)."""
    evaluation = replay.evaluate(kind, content)
    outcome = replay.RowReplay(1, kind, items=evaluation.items, failures=evaluation.failures)
    _, refused = events.insert_events(FakeConnection(), evaluation.events)
    outcome.failures += [(evaluation.positions.get(r.content), r.reason) for r in refused]
    outcome.stored = len(evaluation.events) - len(refused)
    outcome.failures.sort(key=lambda failure: failure[0] or 0)
    return outcome.reason()


def replay_cases():
    """(case id, row kind, content, category)."""
    items = [
        event(id="ok-1"),
        {k: v for k, v in event(id="r-2").items() if k != "created"},
        event(id="r-3", clientId="abc"),
        [1],
        event(id=POISON),
        event(id="r-6", type=""),
        event(id="r-7", x="\u0000"),
        event(id="ok-8"),
    ]
    mixed = json.dumps(items).encode()
    known = json.dumps([event(id="ok"), event(id="r-2", clientId=-5), event(id=POISON)]).encode()
    return [
        ("event-two-values", "event", b"1,2", "not_an_event"),
        ("event-no-value", "event", b"", "not_an_event"),
        ("event-list", "event", body(event()), "not_an_event"),
        ("event-not-json", "event", b"{nope", "not_json"),
        ("event-refused", "event", json.dumps(event(id=POISON)).encode(), "refused_by_database"),
        ("body-emptied", "body", b"  ", "not_json"),
        ("body-gzip-corrupt", "body", replay.GZIP_MAGIC + b"corrupt", "encoding"),
        ("body-gzip-cut", "body", gzip.compress(body(event()))[:-4], "encoding"),
        # Six failures, five named and "and 1 more": the first category in CATEGORIES order.
        ("body-partly-stored", "body", mixed, "not_an_event"),
        ("body-invalid-and-refused", "body", known, "invalid_value"),
    ]


REPLAY_CASES = replay_cases()


@pytest.mark.parametrize(
    ("kind", "content", "expected"),
    [case[1:] for case in REPLAY_CASES],
    ids=[case[0] for case in REPLAY_CASES],
)
def test_every_reason_a_replay_writes_has_its_category(kind, content, expected):
    assert quarantine.category(replay_reason(kind, content)) == expected


def test_a_replayed_body_names_five_failures_and_counts_the_rest():
    content = {case[0]: case for case in REPLAY_CASES}["body-partly-stored"][2]
    reason = replay_reason("body", content)
    assert reason.startswith("2 of 8 events valid and stored; not stored: event 2: ")
    assert reason.endswith(" | and 1 more")


def test_a_gzip_row_too_large_once_decompressed(monkeypatch):
    monkeypatch.setattr(replay, "REPLAY_MAX_BYTES", 10)
    reason = replay_reason("body", gzip.compress(body(event())))
    assert reason == "body over 10 bytes once decompressed"
    assert quarantine.category(reason) == "encoding"


# --- the guards: nothing that writes a reason is left out ---------------------------------------


def driven_reasons(take) -> list[str]:
    """Every reason the cases above write."""
    reasons = []
    for _, data, content_encoding, _ in WEBHOOK_CASES:
        reasons += [reason for _, reason in take(data, content_encoding)[1]]
    reasons += [replay_reason(kind, content) for _, kind, content, _ in REPLAY_CASES]
    _, rejected, _ = batch.validate_items([event(id="s", x={1})], b"[]")
    reasons += [r.reason for r in rejected]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(schemas, "validate_event", lambda item: 1 / 0)
        reasons += [reason for _, reason in take(body({"id": "bug"}))[1]]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(replay, "REPLAY_MAX_BYTES", 10)
        reasons.append(replay_reason("body", gzip.compress(body(event()))))
    return reasons


# The exceptions whose message is a quarantine reason, and the modules that raise them.
REASON_CARRIERS = {
    "BadBody",
    "Unstorable",
    "InvalidEvent",
    "Unparsed",
    "UnsupportedEncoding",
    "DecodedTooLarge",
}
REASON_WRITERS = [
    "receiver/ingest/batch.py",
    "receiver/ingest/jsoncodec.py",
    "receiver/ingest/schemas.py",
    "receiver/ingest/replay.py",
    "receiver/storage/events.py",
]


def literal_parts(node) -> list[str]:
    """The constant text of a string or f-string expression."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return [part.value for part in node.values if isinstance(part, ast.Constant)]
    return []


# Functions that compose a reason of others: every string in them is part of a reason.
COMPOSERS = {("receiver/ingest/replay.py", "reason")}


def written_literals() -> list[tuple[str, list[str]]]:
    """(where, constant parts) of each reason, or part of one, written as a literal: the message
    of a reason carrier, a `reason = ...` or `message = ...`, a replay's (None, reason) failure,
    and the strings of the COMPOSERS."""
    found = []
    for path in REASON_WRITERS:
        tree = ast.parse((ROOT / path).read_text())
        for node in ast.walk(tree):
            texts = []
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in REASON_CARRIERS:
                    texts = node.args
            elif isinstance(node, ast.Assign) and any(
                getattr(target, "id", None) in ("reason", "message") for target in node.targets
            ):
                texts = [node.value]
            elif isinstance(node, ast.Tuple) and len(node.elts) == 2:  # (item number, reason)
                if isinstance(node.elts[0], ast.Constant) and node.elts[0].value is None:
                    texts = [node.elts[1]]
            elif isinstance(node, ast.FunctionDef) and (path, node.name) in COMPOSERS:
                body = node.body[1:] if ast.get_docstring(node) else node.body
                texts = [
                    text
                    for statement in body
                    for text in ast.walk(statement)
                    if isinstance(text, ast.JoinedStr)
                    or (isinstance(text, ast.Constant) and isinstance(text.value, str))
                ]
            for text in texts:
                parts = [part for part in literal_parts(text) if part.strip()]
                if parts:
                    found.append((f"{path}:{getattr(text, 'lineno', node.lineno)}", parts))
    return found


def test_every_reason_literal_in_the_source_is_driven(take):
    reasons = driven_reasons(take)
    literals = written_literals()
    assert len(literals) >= 15, literals  # the scan finds what it should
    missing = [
        (where, parts)
        for where, parts in literals
        if not any(all(part in reason for part in parts) for reason in reasons)
    ]
    assert not missing, "reasons written but not driven by a case here"
    assert [r for r in reasons if quarantine.category(r) == "other"] == []


def test_every_field_message_of_the_schema_is_driven(take):
    driven = set()
    for reason in driven_reasons(take):
        if reason.startswith(quarantine.INVALID_EVENT):
            for problem in reason.removeprefix(quarantine.INVALID_EVENT).split(", "):
                name, messages = problem.split(": ", 1)
                driven |= {(name, message) for message in messages.split("; ")}
    possible = set()
    for field in schemas.GENERIC_SCHEMA.fields.values():
        keys = set(field.error_messages) - {"validator_failed"}
        if not field.required:
            keys.discard("required")
        if field.allow_none:
            keys.discard("null")
        if getattr(field, "allow_empty", True):
            keys.discard("empty")
        if getattr(field, "max_length", None) is None:
            keys.discard("too_long")
        for key in keys:
            message = field.error_messages[key].format(max_length=getattr(field, "max_length", 0))
            possible.add((field.data_key or field.name, message))
    assert possible - driven == set()


# --- reasons not written by this release ---------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        # marshmallow's own messages of the fields and validators releases before 1.0 used
        ("invalid event: type: Not a valid string.", "invalid_value"),
        ("invalid event: type: Length must be between 1 and 100.", "invalid_value"),
        ("invalid event: id: Longer than maximum length 512.", "invalid_value"),
        ("invalid event: thresholdExceeded: Not a valid boolean.", "invalid_value"),
        ("not valid JSON: depth limit exceeded", "not_json"),  # orjson's words, body kept whole
        # Not recognised: other, even beside known problems.
        ("an older wording", "other"),
        ("", "other"),
        ("invalid event: type: Must be one of: open, click.", "other"),
        ("invalid event: created: Missing data for required field., x: Something new.", "other"),
        ("invalid event: {'nested': ['dict']}", "other"),
        ("1 of 2 events valid and stored; not stored: event 2: something new", "other"),
        ("1 of 3 events valid and stored; not stored: and 2 more", "other"),
        ("refused by postgresql: lower case is someone else's", "other"),
    ],
)
def test_reasons_of_other_writers(reason, expected):
    assert quarantine.category(reason) == expected


def test_every_category_is_documented_for_operators():
    text = (ROOT / "docs/operations.md").read_text()
    section = text.split("### Quarantine categories\n", 1)[1].split("\n## ", 1)[0]
    table = re.findall(r"^\| `([a-z_]+)` \|", section, re.M)
    assert table == list(quarantine.CATEGORIES)  # in the order that decides between several
    assert quarantine.CATEGORIES[-1] == quarantine.OTHER
