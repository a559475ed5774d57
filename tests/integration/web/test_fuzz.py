"""Fuzzing POST /webhook through the Flask test client, against real PostgreSQL.

The rule under test: a deterministic bad input never gets a 5xx (the sender would retry it every
10 s for three days) and never stops the next good batch from being stored; what cannot be an
event is kept in `quarantine` with a reason; 200 only after COMMIT; exactly one row per event.
And receiver/openapi.yaml, checked with schemathesis, describes what the app really answers
(its examples are checked against the vendor samples in tests/unit/test_openapi.py).

Hypothesis profiles: the default (60 examples a test) keeps this file well under a minute and a
half; `HYPOTHESIS_PROFILE=long` runs 30 times more examples.
"""

import itertools
import json
import os
import pathlib
import uuid

import psycopg
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings, target
from hypothesis import event as note
from hypothesis import strategies as st
from schemathesis import GenerationMode

import receiver
from receiver import create_app
from receiver.config import Config, KeyAuth
from receiver.ingest import schemas
from receiver.storage import db as receiver_db

from support import PASSWORD, USER, basic, body, cloned_database, event, post
from support.openapi import CONFORMANCE

# --- settings ---

_COMMON = {
    "deadline": None,
    # One app and one database serve all examples of a test: that is the point (state carries
    # over, as it does for the real receiver), so the fixture health check does not apply.
    "suppress_health_check": [
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
    "print_blob": True,
}
settings.register_profile("receiver-fuzz", max_examples=60, **_COMMON)
settings.register_profile("long", max_examples=1800, **_COMMON)
FUZZ = settings.get_profile(
    "long" if os.environ.get("HYPOTHESIS_PROFILE") == "long" else "receiver-fuzz"
)

SPEC = pathlib.Path(receiver.__file__).resolve().parent / "openapi.yaml"
MAX_BATCH = Config(database_url="unused").max_batch

# --- strategies ---

KNOWN_TYPES = sorted(schemas.SCHEMAS)
FIELDS = (
    "type",
    "id",
    "clientId",
    "created",
    "mailingId",
    "userListId",
    "subscriptionId",
    "recipientId",
    "mailId",
    "mediaType",
    "category",
    "reason",
    "thresholdExceeded",
    "link",
    "device",
    "operatingSystem",
    "browser",
    "remoteAddress",
    "mediaTypesToAddresses",
    "somethingNew",
)
SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)  # written into the body as "\\ud800" escapes
TEXT = st.one_of(
    st.text(max_size=12),
    # every code point: NUL, controls, noncharacters, astral planes and lone surrogates
    st.lists(st.one_of(st.characters(codec=None), SURROGATES, st.just("\x00")), max_size=12).map(
        "".join
    ),
)
HUGE_INTS = st.one_of(
    st.integers(),
    st.integers(-(10**400), 10**400),
    st.sampled_from([2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**19, -(10**19), 10**4000]),
)
FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1.7976931348623157e308, -1.7976931348623157e308, 5e-324, -0.0, 1e-300]),
)
LEAVES = st.one_of(st.none(), st.booleans(), HUGE_INTS, FLOATS, TEXT)
DOCUMENTS = st.recursive(
    LEAVES,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(TEXT, children, max_size=5),
    max_leaves=25,
)
NUMERIC_STRINGS = st.sampled_from(
    [
        "123",
        " 123",
        "123 ",
        "1 23",
        "\t1",
        "1\n",
        "+123",
        "-123",
        "--1",
        "-0",
        "0",
        "00",
        "1e5",
        "1E5",
        "1.0",
        "1.",
        ".5",
        "0x10",
        "1_000",
        "9223372036854775807",
        "9223372036854775808",
        "99999999999999999999",
        "-9223372036854775809",
        "",
        "\u0661\u0662\u0663",  # Arabic-Indic digits
        "\uff11\uff12\uff13",  # fullwidth digits
        "\U0001d7cf\U0001d7d0",  # mathematical bold digits
        "\u00b2",
        "\u2163",
        "1\x00",
        "\x00",
    ]
)
EDGE_MILLIS = [
    0,
    -1,
    1,
    schemas.CREATED_MIN,
    schemas.CREATED_MAX,
    schemas.CREATED_MIN - 1,
    schemas.CREATED_MAX + 1,
    2**63,
    -(2**63),
]
LONG_STRINGS = st.one_of(
    st.builds(lambda c, n: c * n, st.sampled_from(["x", "\u00e9", "\x00"]), st.integers(1, 20_000)),
    st.builds(lambda c, n: c * n, st.sampled_from(["\U0001f600", "\ud800"]), st.integers(1, 3_000)),
    # incompressible: too large for a btree index entry (recipientId) once over ~2.7 kB
    st.integers(500, 5_000).map(lambda n: "".join(f"{i:x}" for i in range(n))),
)
HOSTILE = st.one_of(
    NUMERIC_STRINGS,
    HUGE_INTS,
    FLOATS,
    st.booleans(),
    st.none(),
    TEXT,
    st.sampled_from(EDGE_MILLIS),
    st.sampled_from(EDGE_MILLIS).map(str),
    st.sampled_from(EDGE_MILLIS).map(float),
    LONG_STRINGS,
    st.dictionaries(TEXT, LEAVES, max_size=3),
    st.lists(LEAVES, max_size=3),
    st.sampled_from(["open", "click", "bounce", "", " ", "x" * 101, "OPEN", "open\x00"]),
)


@st.composite
def hostile_events(draw):
    """A valid event with some fields replaced by hostile values, or removed."""
    kind = draw(st.sampled_from([*KNOWN_TYPES, "brandnew"]))
    item = event(kind)
    if draw(st.booleans()):
        item["id"] = f"h-{uuid.uuid4().hex}"
    item.update(draw(st.dictionaries(st.sampled_from(FIELDS), HOSTILE, min_size=1, max_size=3)))
    for name in draw(st.lists(st.sampled_from(["type", "clientId", "created"]), max_size=1)):
        item.pop(name, None)
    return item


def good_events(count, with_ids):
    """Valid, unique events: half of them without an id (keyed by their content's digest)."""
    items = []
    for i, kind in zip(range(count), itertools.cycle(KNOWN_TYPES)):
        marker = f"good-{uuid.uuid4().hex}"
        item = event(kind, mailId=marker, recipientId="123456789005", mailingId="123456789004")
        if with_ids[i % len(with_ids)]:
            item["id"] = marker
        items.append(item)
    return items


def encode_document(document, ascii_only: bool) -> bytes:
    """JSON text of a document; lone surrogates become "\\udXXX" escapes when ascii_only, and
    invalid UTF-8 bytes otherwise."""
    if ascii_only:
        return json.dumps(document, ensure_ascii=True).encode("ascii")
    return json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogatepass")


def has_surrogate(document) -> bool:
    if isinstance(document, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in document)
    if isinstance(document, list):
        return any(has_surrogate(v) for v in document)
    if isinstance(document, dict):
        return any(has_surrogate(k) or has_surrogate(v) for k, v in document.items())
    return False


# --- helpers ---


@pytest.fixture
def db(database_url):
    """One autocommit connection for the test's queries (examples run many of them)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def shared_database_url(server_url, template_db):
    """One database for this module's many small, independent cases (each uses its own keys):
    a database per parametrised case would cost more than the cases themselves."""
    with cloned_database(server_url, template_db, "receiver_fuzz") as url:
        yield url


@pytest.fixture(scope="module")
def shared_client(shared_database_url):
    app = create_app(Config(database_url=shared_database_url, basic_auth=((USER, PASSWORD),)))
    yield app.test_client()
    receiver_db.close_pool(app)


@pytest.fixture(scope="module")
def shared_db(shared_database_url):
    with psycopg.connect(shared_database_url, autocommit=True) as conn:
        yield conn


def rows(db, sql, params=None):
    return db.execute(sql, params).fetchall()


def checked_post(client, data: bytes, headers=None):
    """support.post (Basic Auth unless `headers`), and never a 5xx, whatever the body."""
    response = post(client, data, headers)
    assert response.status_code < 500, (
        f"{response.status_code} for a body of {len(data)} bytes: {data[:300]!r}"
    )
    return response


def assert_accounted(response, received):
    """A 200 is a summary in which every item of the batch is accounted for once."""
    summary = response.json
    assert summary["received"] == received
    assert summary["received"] == (
        summary["stored"] + summary["duplicates"] + summary["quarantined"]
    ), summary


def assert_next_good_batch_is_stored(client, db):
    marker = f"next-{uuid.uuid4().hex}"
    response = checked_post(client, body(event("sent", id=marker)))
    assert response.status_code == 200
    assert response.json == {"received": 1, "stored": 1, "duplicates": 0, "quarantined": 0}
    assert rows(db, "SELECT count(*) FROM events WHERE event_key = %s", (marker,)) == [(1,)]


def assert_quarantine_has_reasons(db):
    empty = rows(db, "SELECT id FROM quarantine WHERE btrim(reason) = ''")
    assert empty == []


# --- random JSON documents ---

TOP_LEVEL = st.one_of(
    DOCUMENTS,
    st.lists(DOCUMENTS, max_size=8),
    st.lists(
        st.builds(
            lambda e, extra: {**e, **extra},
            hostile_events(),
            st.dictionaries(TEXT, DOCUMENTS, max_size=2),
        ),
        max_size=6,
    ),
)


@FUZZ
@given(document=TOP_LEVEL, ascii_only=st.booleans())
def test_any_json_document_gets_200_or_400_and_the_next_good_batch_is_stored(
    client, db, document, ascii_only
):
    data = encode_document(document, ascii_only)
    response = checked_post(client, data)

    readable = ascii_only or not has_surrogate(document)
    # Small bodies, at most 8 items: 413 would be wrong. JSON lists are acknowledged whatever
    # they hold (an item that is not UTF-8, a lone surrogate written raw, is quarantined alone),
    # and so are readable objects; anything else is refused with 400 (and kept).
    acknowledged = isinstance(document, list) or (isinstance(document, dict) and readable)
    assert response.status_code == (200 if acknowledged else 400), response.json
    if response.status_code == 200:
        assert_accounted(response, len(document) if isinstance(document, list) else 1)
    assert_quarantine_has_reasons(db)
    assert_next_good_batch_is_stored(client, db)


JSON_FRAGMENTS = st.sampled_from(
    [
        b"",
        b"[",
        b"{",
        b'[{"type":"open","clientId":1,"created":0',
        b'{"type":',
        b"\xef\xbb\xbf",
        b'"',
        b"[1,",
        b"\\u",
        b'["\\ud800',
        b"-",
        b"1e",
        b"[]",
    ]
)


@FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=300), st.builds(bytes.__add__, JSON_FRAGMENTS, st.binary(max_size=100))
    )
)
def test_random_bytes_never_get_a_5xx(client, db, data):
    response = checked_post(client, data)

    assert response.status_code in (200, 400)
    assert_quarantine_has_reasons(db)
    assert_next_good_batch_is_stored(client, db)


# --- hostile values in the documented fields, mixed with valid events ---


@FUZZ
@given(
    hostile=st.lists(hostile_events(), min_size=1, max_size=5),
    good_count=st.integers(1, 5),
    with_ids=st.lists(st.booleans(), min_size=1, max_size=5),
    order=st.randoms(use_true_random=False),
)
def test_hostile_values_are_quarantined_and_the_valid_events_stored_exactly_once(
    client, db, hostile, good_count, with_ids, order
):
    good = good_events(good_count, with_ids)
    batch = good + hostile
    order.shuffle(batch)
    data = json.dumps(batch, ensure_ascii=True).encode()  # lone surrogates as "\ud800" escapes
    events_before = rows(db, "SELECT count(*) FROM events")[0][0]

    first_started = rows(db, "SELECT clock_timestamp()")[0][0]
    first = checked_post(client, data)

    assert first.status_code == 200, first.json
    assert_accounted(first, len(batch))
    for item in good:
        found = rows(db, "SELECT event_key FROM events WHERE mail_id = %s", (item["mailId"],))
        assert len(found) == 1, (item, found)
    events_after = rows(db, "SELECT count(*) FROM events")[0][0]
    assert events_after - events_before == first.json["stored"]
    assert_quarantine_has_reasons(db)
    touched = dict(
        rows(
            db,
            "SELECT id, times_received FROM quarantine WHERE last_received_at >= %s",
            (first_started,),
        )
    )
    assert (first.json["quarantined"] > 0) == bool(touched)
    note(f"stored {first.json['stored'] > 0}, quarantined {first.json['quarantined'] > 0}")
    target(first.json["quarantined"], label="quarantined")
    quarantine_rows = rows(db, "SELECT count(*) FROM quarantine")[0][0]

    # The sender's retry after a lost 200: nothing new, every quarantined item counted again.
    second_started = rows(db, "SELECT clock_timestamp()")[0][0]
    second = checked_post(client, data)

    assert second.status_code == 200, second.json
    assert second.json == {
        "received": len(batch),
        "stored": 0,
        "duplicates": first.json["stored"] + first.json["duplicates"],
        "quarantined": first.json["quarantined"],
    }
    assert rows(db, "SELECT count(*) FROM events")[0][0] == events_after
    assert rows(db, "SELECT count(*) FROM quarantine")[0][0] == quarantine_rows
    retouched = dict(
        rows(
            db,
            "SELECT id, times_received FROM quarantine WHERE last_received_at >= %s",
            (second_started,),
        )
    )
    assert retouched == {key: times + 1 for key, times in touched.items()}


@pytest.mark.parametrize(
    ("created", "stored"),
    [
        (schemas.CREATED_MIN, True),
        (schemas.CREATED_MAX, True),
        (0, True),
        (-1, True),
        (str(schemas.CREATED_MAX), True),
        (str(schemas.CREATED_MIN), True),
        (schemas.CREATED_MIN - 1, False),
        (schemas.CREATED_MAX + 1, False),
        (str(schemas.CREATED_MAX + 1), False),
        (float(schemas.CREATED_MAX), False),
    ],
)
def test_created_at_the_edges_is_stored_exactly_or_quarantined(
    shared_client, shared_db, created, stored
):
    client, db = shared_client, shared_db
    marker = f"edge-{uuid.uuid4().hex}"
    response = checked_post(client, body(event("sent", id=marker, created=created), event("sent")))

    assert response.status_code == 200
    assert response.json["quarantined"] == (0 if stored else 1)
    # extract(epoch) is numeric since PostgreSQL 14: exact to the microsecond, whatever the year.
    found = rows(
        db,
        "SELECT (extract(epoch FROM created_at) * 1000)::numeric FROM events WHERE event_key = %s",
        (marker,),
    )
    assert found == ([(int(created),)] if stored else [])


# --- JSON oddities, written as raw bytes ---


def event_with(raw_field: bytes, marker=None) -> bytes:
    """One event as raw JSON with `raw_field` spliced in (e.g. b'"x":1e-400')."""
    marker = marker or uuid.uuid4().hex
    return b'{"type":"sent","id":"odd-%s","clientId":1,"created":0,%s}' % (
        marker.encode(),
        raw_field,
    )


def nested(depth: int, kind: str = "array") -> bytes:
    opening, closing = (b"[", b"]") if kind == "array" else (b'{"a":', b"}")
    return opening * depth + b"0" + closing * depth


ODDITIES = {
    # duplicate keys: the last one wins (like PostgreSQL's jsonb)
    "duplicate-key": (b'[{"type":"sent","clientId":1,"created":0,"id":"a","id":"b"}]', {200}),
    "duplicate-required-key": (b'[{"type":"sent","clientId":1,"clientId":"x","created":0}]', {200}),
    # escapes
    "unicode-escapes": (b'[{"type":"\\u0073ent","clientId":1,"created":0,"link":"a\\/b"}]', {200}),
    "escaped-nul-in-key": (b'[{"type":"sent","clientId":1,"created":0,"\\u0000":1}]', {200}),
    "escaped-backslash-u0000": (
        b'[{"type":"sent","clientId":1,"created":0,"x":"\\\\u0000"}]',
        {200},
    ),
    "lone-surrogate-escape": (b'[{"type":"sent","clientId":1,"created":0,"x":"\\ud800"}]', {200}),
    "lone-low-surrogate": (b'[{"type":"sent","clientId":1,"created":0,"x":"\\udfff"}]', {200}),
    "surrogate-pair": (b'[{"type":"sent","clientId":1,"created":0,"x":"\\ud83d\\ude00"}]', {200}),
    "reversed-pair": (b'[{"type":"sent","clientId":1,"created":0,"x":"\\ude00\\ud83d"}]', {200}),
    # One item of a sound list that no parser reads is quarantined alone (the others of the
    # batch would be stored): 200.
    "raw-control-char": (b'[{"type":"sent","clientId":1,"created":0,"x":"\x01"}]', {200}),
    "bad-escape": (b'[{"type":"sent","clientId":1,"created":0,"x":"\\q"}]', {200}),
    "short-unicode-escape": (b'[{"type":"sent","clientId":1,"created":0,"x":"\\u12"}]', {200}),
    "invalid-utf8": (b'[{"type":"sent","clientId":1,"created":0,"x":"\xff\xfe"}]', {200}),
    "overlong-utf8": (b'[{"type":"sent","clientId":1,"created":0,"x":"\xc0\xaf"}]', {200}),
    "cesu-surrogate-bytes": (
        b'[{"type":"sent","clientId":1,"created":0,"x":"\xed\xa0\x80"}]',
        {200},
    ),
    # numbers in all forms, as the event's fields and as extra fields
    "exponent-1E5": (event_with(b'"x":1E5'), {200}),
    "minus-zero": (event_with(b'"x":-0'), {200}),
    "minus-zero-created": (b'[{"type":"sent","clientId":1,"created":-0}]', {200}),
    "one-point-zero": (event_with(b'"x":1.0'), {200}),
    "float-created": (b'[{"type":"sent","clientId":1,"created":1.0}]', {200}),
    "exponent-clientId": (b'[{"type":"sent","clientId":1E5,"created":0}]', {200}),
    "underflow": (event_with(b'"x":1e-400'), {200}),
    "overflow": (event_with(b'"x":1e400'), {200}),
    "overflow-negative": (event_with(b'"x":-1e400'), {200}),
    "30-digits": (event_with(b'"x":123456789012345678901234567890'), {200}),
    "30-digit-clientId": (
        b'[{"type":"sent","clientId":123456789012345678901234567890,"created":0}]',
        {200},
    ),
    "4300-digits": (event_with(b'"x":' + b"9" * 4300), {200}),
    "5000-digits": (event_with(b'"x":' + b"9" * 5000), {200, 400}),
    "5000-digit-created": (
        b'[{"type":"sent","clientId":1,"created":' + b"1" * 5000 + b"}]",
        {200, 400},
    ),
    "long-fraction": (event_with(b'"x":0.' + b"1" * 5000), {200}),
    "leading-zero": (event_with(b'"x":01'), {400}),
    "leading-plus": (event_with(b'"x":+1'), {400}),
    "bare-fraction": (event_with(b'"x":.5'), {400}),
    "trailing-dot": (event_with(b'"x":1.'), {400}),
    "hex": (event_with(b'"x":0x10'), {400}),
    "nan": (event_with(b'"x":NaN'), {400}),
    "infinity": (event_with(b'"x":-Infinity'), {400}),
    # deep nesting: whole bodies, and inside an event with an id
    **{
        f"body-{kind}-depth-{d}": (nested(d, kind), {200})
        for kind in ("array", "object")
        for d in (50, 500, 1000)
    },
    # A list whose one item is nested 4,999 deep: that item quarantined alone. A bare object
    # no parser reads is a body that is not JSON here: 400, quarantined whole.
    "body-array-depth-5000": (nested(5000, "array"), {200}),
    "body-object-depth-5000": (nested(5000, "object"), {400}),
    **{f"event-depth-{d}": (event_with(b'"x":' + nested(d)), {200}) for d in (50, 500, 1000)},
    "event-depth-5000": (event_with(b'"x":' + nested(5000)), {400}),
    # byte order marks and whitespace
    "utf8-bom": (b"\xef\xbb\xbf" + body(event("sent")), {200}),
    "double-utf8-bom": (b"\xef\xbb\xbf\xef\xbb\xbf" + body(event("sent")), {400}),
    "only-bom": (b"\xef\xbb\xbf", {400}),
    "utf16-with-bom": (b"\xff\xfe" + body(event("sent")).decode().encode("utf-16-le"), {400}),
    "utf16-without-bom": (body(event("sent")).decode().encode("utf-16-le"), {400}),
    "json-whitespace": (
        b' \t\r\n[ \n{ "type" :\t"sent" ,\r\n"clientId":1 , "created" : 0 } ]\n\t ',
        {200},
    ),
    "vertical-tab": (b"\x0b" + body(event("sent")), {400}),
    "form-feed": (body(event("sent")) + b"\x0c", {400}),
    "no-break-space": (b"\xc2\xa0" + body(event("sent")), {400}),
    "nul-after-body": (body(event("sent")) + b"\x00", {400}),
    "empty": (b"", {400}),
    "blank": (b" \r\n\t", {400}),
    # trailing garbage
    "two-documents": (b"[] []", {400}),
    "two-objects": (b"{}{}", {400}),
    "trailing-comma": (b'[{"type":"sent","clientId":1,"created":0},]', {400}),
    "trailing-text": (body(event("sent")) + b"garbage", {400}),
    "comment": (b"/* x */" + body(event("sent")), {400}),
    "single-quotes": (b"[{'type':'sent'}]", {200}),  # a sound list, its one item not JSON
}


@pytest.mark.parametrize("name", ODDITIES)
def test_json_oddities_never_get_a_5xx(shared_client, shared_db, name):
    client, db = shared_client, shared_db
    data, statuses = ODDITIES[name]

    response = checked_post(client, data)

    assert response.status_code in statuses, (response.status_code, response.json)
    if response.status_code == 200:
        assert response.json["received"] == (
            response.json["stored"] + response.json["duplicates"] + response.json["quarantined"]
        )
    assert_quarantine_has_reasons(db)
    assert_next_good_batch_is_stored(client, db)


def test_json_escapes_are_decoded_before_storing(shared_client, shared_db):
    client, db = shared_client, shared_db
    data = b'[{"type":"\\u0063lick","id":"esc-1","clientId":1,"created":0,"link":"http:\\/\\/x"}]'

    assert checked_post(client, data).json["stored"] == 1
    assert rows(db, "SELECT type, link FROM events WHERE event_key = 'esc-1'") == [
        ("click", "http://x")
    ]


def test_events_nested_to_any_depth_the_parser_accepts_never_get_a_5xx(shared_client, shared_db):
    client, db = shared_client, shared_db
    # Every depth up to past the parser's limit (1024), one request each: the receiver keeps
    # recursing into the event (validation, payload, key digest), and the interpreter's recursion
    # limit must not fall between two of those steps. Events without an id: the key is a digest.
    failures = []
    for depth in range(1, 1031):
        data = b'{"type":"sent","clientId":1,"created":0,"x":' + nested(depth) + b"}"
        response = post(client, data)
        if response.status_code not in (200, 400):
            failures.append((depth, response.status_code))
    # (depth, status): a 500 here comes from the digest of an id-less event (schemas.event_key
    # -> jsoncodec.canonical) failing one stack frame deeper than the payload encoding did.
    assert failures == []
    assert_next_good_batch_is_stored(client, db)


# --- numbers are stored as they were sent ---


@pytest.mark.parametrize(
    "literal",
    [
        "1E5",
        "-0",
        "1.0",
        "2.5E-3",
        "123456789012345678901234567890",
        "5e-324",
        "1.7976931348623157e308",
        "1e400",
        "0.10000000000000000001",
        "3.14159265358979323846264338327950288",
        "1e-400",
        "3e-324",
    ],
)
def test_payload_keeps_the_value_of_every_number(shared_client, shared_db, literal):
    client, db = shared_client, shared_db
    marker = f"num-{uuid.uuid4().hex}"
    response = checked_post(client, event_with(b'"x":' + literal.encode(), marker))

    assert response.json["stored"] == 1
    [(same,)] = rows(
        db,
        "SELECT (payload->'x')::numeric = %s::numeric FROM events WHERE event_key = %s",
        (literal, f"odd-{marker}"),
    )
    assert same, f"payload x is not {literal}"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("0.1", "0.10000000000000001"),  # beyond a double's 17 digits
        ("123456789.12345678", "123456789.12345679"),
        ("0.0", "1e-400"),  # below a double's range
        ("5e-324", "3e-324"),  # subnormal: 3e-324 is read as 5e-324
    ],
)
def test_events_that_differ_only_in_a_number_are_both_stored(client, db, first, second):
    # PostgreSQL (jsonb, numeric) tells these numbers apart: the sender sent two events, and
    # two id-less events that differ in any field must never share a key.
    data = (
        b'[{"type":"sent","clientId":1,"created":0,"score":%s},'
        b'{"type":"sent","clientId":1,"created":0,"score":%s}]' % (first.encode(), second.encode())
    )

    response = checked_post(client, data)

    assert response.json == {"received": 2, "stored": 2, "duplicates": 0, "quarantined": 0}


# --- schemathesis against receiver/openapi.yaml ---

SCHEMA = schemathesis.openapi.from_path(SPEC)
WEBHOOK = SCHEMA["/webhook"]["POST"]
# schemathesis' own generation draws from `random` inside strategies: its warning, not ours.
SCHEMATHESIS_USES_RANDOM = "ignore::hypothesis.errors.HypothesisDeprecationWarning"


def test_the_spec_is_valid_openapi_and_matches_the_code(shared_client):
    client = shared_client
    SCHEMA.validate()  # against the OpenAPI 3.1 meta-schema
    spec = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    parts = spec["components"]["schemas"]
    assert parts["EventBatch"]["maxItems"] == MAX_BATCH
    assert parts["CampaignId"]["oneOf"][0]["maximum"] == schemas.BIGINT_MAX
    millis = parts["EpochMillis"]["oneOf"][0]
    assert (millis["minimum"], millis["maximum"]) == (schemas.CREATED_MIN, schemas.CREATED_MAX)
    event_schema = parts["Event"]
    assert event_schema["properties"]["type"]["maxLength"] == schemas.MAX_TYPE_LENGTH
    assert event_schema["properties"]["id"]["oneOf"][0]["maxLength"] == (
        schemas.MAX_EVENT_ID_LENGTH
    )
    assert set(event_schema["required"]) == {"type", "clientId", "created"}
    assert set(FIELDS) - {"somethingNew"} <= set(event_schema["properties"])
    assert set(spec["components"]["securitySchemes"]) == {
        "basicAuth",
        "apiKeyAuth",
        "feedBasicAuth",
    }
    # Every route of the app is described, and every described route exists.
    routes = {
        (rule.rule, method)
        for rule in client.application.url_map.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
        if rule.endpoint != "static"
    }
    documented = {(path, method.upper()) for path, item in spec["paths"].items() for method in item}
    assert documented == routes


@pytest.mark.filterwarnings(SCHEMATHESIS_USES_RANDOM)
@settings(FUZZ, max_examples=FUZZ.max_examples)
@given(case=SCHEMA.as_strategy())
def test_schemathesis_positive_cases_conform_to_the_spec(client, case):
    response = case.call(app=client.application, headers=basic())

    case.validate_response(response, checks=CONFORMANCE)
    if case.operation.label == "POST /webhook":
        assert response.status_code == 200


@pytest.mark.filterwarnings(SCHEMATHESIS_USES_RANDOM)
@settings(FUZZ, max_examples=FUZZ.max_examples)
@given(case=WEBHOOK.as_strategy(generation_mode=GenerationMode.NEGATIVE))
def test_schemathesis_negative_cases_get_200_or_400_and_conform(client, case):
    response = case.call(app=client.application, headers=basic())

    case.validate_response(response, checks=CONFORMANCE)
    # Breaking maxItems is one of the mutations: more events than a batch may hold is a 413.
    too_many = isinstance(case.body, list) and len(case.body) > MAX_BATCH
    assert response.status_code in ((413,) if too_many else (200, 400))


@pytest.fixture
def key_client(make_client):
    return make_client(basic_auth=(), key_auth=(KeyAuth("X-Api-Key", "fuzz-key"),))


@pytest.mark.filterwarnings(SCHEMATHESIS_USES_RANDOM)
@settings(FUZZ, max_examples=max(10, FUZZ.max_examples // 4))
@given(case=WEBHOOK.as_strategy())
def test_schemathesis_cases_with_key_auth_and_without_credentials_conform(key_client, case):
    with_key = case.call(app=key_client.application, headers={"X-Api-Key": "fuzz-key"})
    case.validate_response(with_key, checks=CONFORMANCE)
    assert with_key.status_code == 200

    anonymous = case.call(app=key_client.application)
    case.validate_response(anonymous, checks=CONFORMANCE)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"][0].startswith("Basic")
