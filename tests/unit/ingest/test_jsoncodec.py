"""JSON in and out (receiver.ingest.jsoncodec): decoding, encoding, canonical keys, preserve;
items no parser reads, the structural scan of a list and the batch-size gate."""

import decimal
import json
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from receiver.ingest import jsoncodec, schemas
from receiver.ingest.jsoncodec import (
    BadBody,
    TooManyItems,
    Unparsed,
    Unstorable,
    canonical,
    decode_batch,
    encode,
    item_spans,
    preserve,
)

from support import body, event

BIG = 123456789012345678901234567890  # beyond 64 bits: orjson would turn it into a float
# A run of 19+ digits anywhere in a body (here inside a string) switches decode_batch to the
# standard library parser, so each parsing rule is checked on both parsers.
LONG_DIGITS = '"12345678901234567890"'


def with_long_digits(data: bytes) -> bytes:
    """The same JSON list with one more item that forces the standard library parser."""
    assert data.endswith(b"]")
    return data[:-1] + b"," + LONG_DIGITS.encode() + b"]"


def nested(depth: int, opener=b"[", closer=b"]") -> bytes:
    return opener * depth + closer * depth


def raw(item) -> bytes:
    return json.dumps(item).encode()


def spans(data: bytes) -> list[bytes]:
    """The top-level items item_spans finds, as bytes."""
    return [data[start:end] for start, end in item_spans(data)]


# --- decode_batch: what is a batch --------------------------------------------------------------


def test_a_list_is_the_batch():
    assert decode_batch(body(event(id="a"), event(id="b"))) == [event(id="a"), event(id="b")]


def test_an_empty_list_is_an_empty_batch():
    assert decode_batch(b"[]") == []


def test_a_bare_object_is_a_batch_of_one():
    assert decode_batch(json.dumps(event()).encode()) == [event()]


@pytest.mark.parametrize(
    "data", [body(event()), json.dumps(event()).encode()], ids=["list", "bare-object"]
)
def test_a_utf8_bom_is_accepted(data):
    assert decode_batch(b"\xef\xbb\xbf" + data) == [event()]


def test_surrounding_whitespace_is_accepted():
    assert decode_batch(b" \r\n\t" + body(event()) + b"\n") == [event()]


def test_non_ascii_text_is_decoded():
    data = '[{"device": "Gerät ü 日本 😀", "escaped": "\\u00e4\\ud83d\\ude00"}]'.encode()
    assert decode_batch(data) == [{"device": "Gerät ü 日本 😀", "escaped": "ä😀"}]


@pytest.mark.parametrize(
    "data",
    [b"", b" ", b"\r\n\t ", b"\xef\xbb\xbf", b"\xef\xbb\xbf \n"],
    ids=["empty", "space", "whitespace", "bom-only", "bom-and-whitespace"],
)
def test_an_empty_body_is_a_bad_body(data):
    with pytest.raises(BadBody, match="empty body"):
        decode_batch(data)


# Not a list of sound structure (UTF-16 is not one either): a body cut or mangled in transit,
# kept whole.
INVALID_JSON = {
    "unclosed-object": b"{",
    "unclosed-list": b'[{"type": "open"}',
    "trailing-comma": b"[1,]",
    "leading-comma": b"[,1]",
    "empty-item": b"[1,,2]",
    "only-a-comma": b"[ , ]",
    "single-quotes-bare-object": b"{'type': 'open'}",
    "not-json": b"type=open&clientId=1",
    "html": b"<html>502 Bad Gateway</html>",
    "two-documents": b"[] []",
    "trailing-garbage": b'[{"type": "open"}] x',
    "extra-closing-bracket": b'[{"type": "open"}]]',
    "list-closed-by-a-brace": b'[{"type": "open"}}',
    "mismatched-brackets": b'[{"a": [1}]]',
    "truncated-string": b'[{"type": "op',
    "escaped-quote-leaves-string-open": b'[{"type": "open\\"}]',
    "utf16": json.dumps([event()]).encode("utf-16"),
    "unquoted-key-bare-object": b"{type: 1}",
    "long-digits-unclosed": b'[{"clientId": 12345678901234567890',
    "long-digits-trailing-comma": b"[12345678901234567890,]",
    "deep-bare-object": nested(1030, b'{"a":', b"}"),
}


@pytest.mark.parametrize("data", INVALID_JSON.values(), ids=INVALID_JSON.keys())
def test_invalid_json_is_a_bad_body(data):
    with pytest.raises(BadBody, match="not valid JSON"):
        decode_batch(data)


# One item of a list of sound structure that no parser reads: only that item is lost.
ITEMS_NOT_JSON = {
    "single-quotes": b"{'type': 'open'}",
    "unquoted-key": b"{type: 1}",
    "invalid-escape": b'{"x": "\\x41"}',
    "short-unicode-escape": b'{"x": "\\u12"}',
    "raw-control-character": b'{"x": "\x01"}',
    "nan": b'{"x": NaN}',
    "missing-comma-between-two-items": b'{"a": 1} {"b": 2}',
    "nested-1030-lists": b'{"type": "open", "x": ' + nested(1029) + b"}",
    "nested-1030-objects": b'{"a":' * 1030 + b"0" + b"}" * 1030,
    "nested-100000": nested(100_000),
    "nested-1030-with-long-digits": b'{"n": 12345678901234567890, "x": ' + nested(1029) + b"}",
    "invalid-utf8": b'{"type": "\xff\xfe"}',
    "overlong-utf8": b'{"x": "\xc0\xaf"}',
    "invalid-utf8-with-long-digits": b'{"n": 12345678901234567890, "x": "\xff"}',
}


@pytest.mark.parametrize("bad", ITEMS_NOT_JSON.values(), ids=ITEMS_NOT_JSON.keys())
@pytest.mark.parametrize("position", [0, 1, 3])
def test_an_item_no_parser_reads_is_unparsed_and_the_others_are_parsed(bad, position):
    items = [raw(event(id="a")), raw(event(id="b")), raw(event(id="c"))]
    items.insert(position, bad)
    decoded = decode_batch(b"[" + b", ".join(items) + b"]")
    assert len(decoded) == 4
    unparsed = decoded.pop(position)
    assert decoded == [event(id="a"), event(id="b"), event(id="c")]
    assert type(unparsed) is Unparsed
    assert unparsed.raw == bad  # exactly as received
    assert unparsed.reason.startswith("not valid JSON: ")
    assert len(unparsed.reason) < 200  # a reason, not the content


@pytest.mark.parametrize("depth", [1025, 1030, 5000])
def test_an_item_nested_too_deeply_says_so(depth):
    bad = b'{"type": "open", "x": ' + nested(depth - 1) + b"}"
    [good, unparsed] = decode_batch(b"[" + raw(event()) + b",\n  " + bad + b"\n]")
    assert good == event()
    assert unparsed == Unparsed(bad, "not valid JSON: nested deeper than 1024 levels")


def test_an_item_within_the_limit_alone_is_parsed_even_if_the_list_is_one_level_too_deep():
    # 1024 levels is what orjson takes: in the list the body is 1025 deep, the item alone is not.
    item = nested(1024)
    [decoded] = decode_batch(b"[" + item + b"]")
    levels = 1
    while decoded != []:
        [decoded] = decoded
        levels += 1
    assert levels == 1024


def test_blanks_around_an_unparsed_item_are_not_part_of_it():
    [unparsed, second] = decode_batch(b"[ \t\r\n NaN \n , \n 1 \n ]")
    assert unparsed.raw == b"NaN"
    assert second == 1


def test_an_unparsed_item_is_an_invalid_event_with_its_reason_and_preserved_as_received():
    bad = b'{"x": NaN, "y": "\xc3\xa4"}'
    [unparsed] = decode_batch(b"[" + bad + b"]")
    assert preserve(unparsed) == bad
    with pytest.raises(schemas.InvalidEvent) as caught:
        schemas.validate_event(unparsed)
    assert str(caught.value) == unparsed.reason
    assert schemas.validate_batch([event(), unparsed]) is None


SCALARS = {
    "number": b"5",
    "float": b"1.5",
    "string": b'"open"',
    "null": b"null",
    "true": b"true",
    "false": b"false",
    "long-number": b"12345678901234567890",
    "bom-string": b'\xef\xbb\xbf"[]"',
}


@pytest.mark.parametrize("data", SCALARS.values(), ids=SCALARS.keys())
def test_a_json_scalar_at_top_level_is_a_bad_body(data):
    with pytest.raises(BadBody, match="not a list of events or an event"):
        decode_batch(data)


# --- numbers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("number", [BIG, -BIG, 2**63 - 1, 2**63, 2**64, 10**100], ids=str)
def test_integers_keep_every_digit_through_decode_and_encode(number):
    text = f'[{{"type":"open","big":{number}}}]'.encode()
    [item] = decode_batch(text)
    assert item["big"] == number
    assert type(item["big"]) is int
    assert encode(item) == f'{{"type":"open","big":{number}}}'.encode()
    assert str(number).encode() in canonical(item)


def test_floats_and_small_integers_are_the_same_on_both_parsers():
    data = b'[{"a": 1.5, "b": 1564590054000, "c": -0.25, "d": 1e300, "e": [0, -1]}]'
    fast = decode_batch(data)[0]
    exact = decode_batch(with_long_digits(data))[0]
    assert fast == exact == {"a": 1.5, "b": 1564590054000, "c": -0.25, "d": 1e300, "e": [0, -1]}
    assert canonical(fast) == canonical(exact)


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
@pytest.mark.parametrize("long_digits", [False, True], ids=["orjson", "stdlib"])
def test_nan_and_infinity_are_rejected(constant, long_digits):
    item = b'{"type": "open", "x": ' + constant + b"}"
    data = b"[" + item + b"]"
    decoded = decode_batch(with_long_digits(data) if long_digits else data)
    assert decoded[0] == Unparsed(item, decoded[0].reason)  # never a float nan or inf
    with pytest.raises(BadBody):
        decode_batch(item)  # a bare object is the whole body


@pytest.mark.parametrize(
    "data",
    [
        b'[{"x": 1e400}]',
        b'[{"x": -1e400}]',
        pytest.param(
            b'[{"x": 1e400, "recipientId": "12345678901234567890"}]',
            id="1e400-with-long-digits",
        ),
    ],
)
def test_a_float_overflowing_to_infinity_is_never_stored_as_null(data):
    try:
        payloads = [encode(item) for item in decode_batch(data)]
    except (BadBody, Unstorable):
        return  # refused: acceptable
    assert all(b"null" not in payload for payload in payloads)


# --- strings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b'[{"a": "\\ud800"}]',
        b'[{"a": "\\udc00"}]',
        b'[{"a": "x\\ud83d"}]',
        with_long_digits(b'[{"a": "\\ud800"}]'),
        with_long_digits(b'[{"a": "\\udfff y"}]'),
        with_long_digits(b'[{"\\ud800": 1}]'),
    ],
    ids=["high", "low", "trailing-high", "stdlib-high", "stdlib-low", "stdlib-in-key"],
)
def test_a_lone_surrogate_never_reaches_storage(data):
    with pytest.raises((BadBody, Unstorable)):
        for item in decode_batch(data):
            encode(item)


def test_a_paired_surrogate_escape_is_one_character():
    [item] = decode_batch(b'[{"a": "\\ud83d\\ude00"}]')
    assert item == {"a": "😀"}
    assert encode(item) == '{"a":"😀"}'.encode()


@pytest.mark.parametrize(
    "value",
    [
        {"a": "\x00"},
        {"a": "before\x00after"},
        {"a\x00": 1},
        {"a": ["x", {"b": "y\x00z"}]},
        {"a": "\\\x00"},  # a backslash, then a real NUL
        {"a": "\\\\\x00"},  # two backslashes, then a real NUL
        {"a": "\x00", "big": BIG},  # the standard library path of encode
    ],
    ids=[
        "value",
        "inside-value",
        "key",
        "nested",
        "after-backslash",
        "after-two-backslashes",
        "stdlib-path",
    ],
)
def test_encode_refuses_a_nul_character(value):
    with pytest.raises(Unstorable, match="NUL"):
        encode(value)


@pytest.mark.parametrize(
    "value",
    [
        {"a": "\\u0000"},  # the 6 characters \u0000: text, not a NUL
        {"a": "\\\\u0000"},
        {"a": "x\\u0000y"},
        {"\\u0000": "key"},
        {"a": "\\u00001"},
        {"a": "\\u0000", "big": BIG},
    ],
    ids=[
        "backslash-u0000",
        "two-backslashes-u0000",
        "inside-text",
        "key",
        "followed-by-digit",
        "stdlib-path",
    ],
)
def test_encode_accepts_backslash_u0000_as_text(value):
    assert json.loads(encode(value)) == value


def test_a_backslash_u0000_text_in_the_body_decodes_to_text():
    [item] = decode_batch(b'[{"a": "\\\\u0000"}]')
    assert item == {"a": "\\u0000"}
    assert len(item["a"]) == 6


def test_encode_is_compact_and_keeps_key_order():
    assert encode({"b": 1, "a": [1, {"d": None, "c": True}]}) == (
        b'{"b":1,"a":[1,{"d":null,"c":true}]}'
    )


# --- nesting ------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [5000, 100_000])
@pytest.mark.parametrize(
    ("opener", "closer"), [(b"[", b"]"), (b'{"a":', b"}")], ids=["lists", "objects"]
)
@pytest.mark.parametrize("long_digits", [False, True], ids=["orjson", "stdlib"])
def test_deep_nesting_is_an_unparsed_item_not_a_recursion_error(depth, opener, closer, long_digits):
    item = nested(depth, opener, closer)
    data = b"[" + item + b"]"
    decoded = decode_batch(with_long_digits(data) if long_digits else data)
    assert decoded[0] == Unparsed(item, "not valid JSON: nested deeper than 1024 levels")
    if opener == b"[":
        return
    with pytest.raises(BadBody):  # as a bare object it is the whole body
        decode_batch(item)


def test_encode_of_a_1000_level_payload_is_stored_or_refused_never_crashes():
    [item] = decode_batch(b'[{"type": "open", "x": ' + nested(1000) + b"}]")
    try:
        payload = encode(item)
    except Unstorable:
        return
    assert json.loads(payload) == item


def test_moderate_nesting_beyond_orjsons_encoder_limit_is_encoded():
    [item] = decode_batch(b'[{"type": "open", "x": ' + nested(300) + b"}]")
    assert json.loads(encode(item)) == item
    assert json.loads(canonical(item)) == item


# --- canonical and preserve ---------------------------------------------------------------------


@pytest.mark.parametrize("extra", [{}, {"big": BIG}], ids=["orjson", "stdlib"])
def test_canonical_does_not_depend_on_key_order(extra):
    first = {"type": "open", "clientId": 1, "m": {"EMAIL": "a", "SMS": "b"}, **extra}
    first["l"] = [{"y": 1, "x": 2}]
    second = {**extra, "l": [{"x": 2, "y": 1}], "m": {"SMS": "b", "EMAIL": "a"}}
    second |= {"clientId": 1, "type": "open"}
    assert canonical(first) == canonical(second)
    assert json.loads(canonical(first)) == first


def test_canonical_is_sorted_compact_json():
    assert canonical({"b": 1, "a": {"d": [3, {"f": 1, "e": 2}], "c": "ü"}}) == (
        '{"a":{"c":"ü","d":[3,{"e":2,"f":1}]},"b":1}'.encode()
    )


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"a": 1}, {"a": "1"}),
        ({"a": 1}, {"a": 1.5}),
        ({"a": [1, 2]}, {"a": [2, 1]}),
        ({"a": None}, {}),
        ({"a": BIG}, {"a": BIG + 1}),
    ],
    ids=["number-vs-string", "int-vs-float", "list-order", "null-vs-absent", "big-integers"],
)
def test_canonical_tells_different_events_apart(first, second):
    assert canonical(first) != canonical(second)


@pytest.mark.parametrize(
    "value",
    [{"a": "\x00"}, {"a": "\ud800"}, {"big": BIG}, [1, "two", None], 42, "text", None],
    ids=["nul", "lone-surrogate", "big-integer", "list", "number", "string", "null"],
)
def test_preserve_keeps_what_jsonb_refuses_for_the_quarantine(value):
    assert json.loads(preserve(value)) == value


def test_a_long_number_is_what_selects_the_exact_parser():
    assert jsoncodec.has_long_number(b'"12345678901234567890"')
    assert jsoncodec.has_long_number(b"[1234567890123456]")
    assert jsoncodec.has_long_number(b"[0.10000000000000000001]")
    assert jsoncodec.has_long_number(b"[12345678.12345678]")
    # What Campaign sends goes the fast way: epoch ms, 11-digit ids, addresses, versions.
    assert not jsoncodec.has_long_number(
        b'[1617108575391, 10180860001, "0.0.0.0", "Firefox 64.1", "255.255.255.255"]'
    )


@pytest.mark.parametrize(
    "literal",
    [
        b"0.10000000000000000001",
        b"3.14159265358979323846264338327950288",
        b"1e400",
        b"123456789012345678901234567890.5",
        b"-0.000000000000000000001",
    ],
)
def test_numbers_beyond_a_double_keep_every_digit(literal):
    [item] = decode_batch(b'[{"x": ' + literal + b"}]")
    stored = json.loads(encode(item), parse_float=decimal.Decimal)["x"]
    assert decimal.Decimal(stored) == decimal.Decimal(literal.decode())


def test_events_differing_beyond_double_precision_get_different_keys():
    first, second = (
        decode_batch(b'[{"x": ' + n + b', "y": "12345678901234567"}]')[0]
        for n in (b"0.1", b"0.10000000000000000001")
    )
    assert canonical(first) != canonical(second)


@pytest.mark.parametrize(
    "body",
    [
        b"[1e-400]",
        b"[3E-324]",
        b'{"a": -2.5e-308}',
        b'{"a": [1, 2e-1234]}',
        b'["0a673102-178d27b2c8c-178d2cac0e4-c7420699923845e-178"]',
        b'{"id": "x45e-178d", "n": 1e-5}',
        b'{"version": "1.2e-1.1"}',
        b"[1234567890123456]",
        b'[1617108575391, 10180860001, "0.0.0.0", "Firefox 64.1", "e-mail"]',
    ],
)
def test_the_shape_precheck_selects_the_exact_parser_exactly_when_the_full_checks_do(body):
    expected = jsoncodec.has_long_number(body) or jsoncodec.has_tiny_exponent(body)
    assert jsoncodec.needs_exact_parse(body) is expected


# --- integers beyond int()'s limit --------------------------------------------------------------


@pytest.mark.parametrize("digits", [4301, 10_000, 200_000])
@pytest.mark.parametrize("sign", ["", "-"])
def test_an_integer_of_more_digits_than_int_takes_keeps_every_digit(digits, sign):
    number = sign + "7" * digits
    item = f'{{"type":"open","clientId":1,"created":1,"big":{number}}}'.encode()
    decoded = decode_batch(b"[" + raw(event(id="a")) + b"," + item + b"]")
    assert decoded[0] == event(id="a")
    assert decoded[1]["big"] == decimal.Decimal(number)
    assert encode(decoded[1]) == item  # digit for digit
    assert preserve(decoded[1]) == item
    assert canonical(decoded[1]) == (
        f'{{"big":{number},"clientId":1,"created":1,"type":"open"}}'.encode()
    )


def test_an_integer_within_int_s_limit_stays_an_int_next_to_a_longer_one():
    [item] = decode_batch(b'[{"a": ' + b"9" * 4300 + b', "b": ' + b"9" * 4301 + b', "c": 1.5}]')
    assert type(item["a"]) is int and item["a"] == 10**4300 - 1
    assert type(item["b"]) is decimal.Decimal and item["b"] == 10**4301 - 1
    assert item["c"] == 1.5


def test_the_same_long_integer_gives_the_same_key_in_a_list_and_alone():
    item = b'{"type": "open", "big": ' + b"3" * 5000 + b"}"
    in_a_list = decode_batch(b"[" + raw(event()) + b", " + item + b"]")[1]
    alone = decode_batch(item)[0]
    split = decode_batch(b"[NaN, " + item + b"]")[1]  # parsed item by item
    assert canonical(in_a_list) == canonical(alone) == canonical(split)


# --- the structural scan of a list (item_spans) -------------------------------------------------


@pytest.mark.parametrize(
    ("data", "items"),
    [
        (b"[]", []),
        (b" \r\n\t[ \n ]\t ", []),
        (b"[1]", [b"1"]),
        (b"[ 1 , 2\t,\n3 ]", [b"1", b"2", b"3"]),
        (b'["a,b", "c]d", "e}f{g[h"]', [b'"a,b"', b'"c]d"', b'"e}f{g[h"']),
        (b'["say \\"hi\\", ok", 2]', [b'"say \\"hi\\", ok"', b"2"]),
        (b'["ends in a backslash \\\\", "x"]', [b'"ends in a backslash \\\\"', b'"x"']),
        (b'["\\\\\\"]", 1]', [b'"\\\\\\"]"', b"1"]),  # \\ then \": the string goes on
        (b'[{"a": [1, 2, {"b": "]}"}]}, [[], {}]]', [b'{"a": [1, 2, {"b": "]}"}]}', b"[[], {}]"]),
        (b'[{"a,": 1}, {"\\u005d": "\\u0022"}]', [b'{"a,": 1}', b'{"\\u005d": "\\u0022"}']),
        (b"[NaN, 1 2, {type: x}]", [b"NaN", b"1 2", b"{type: x}"]),  # the parsers judge these
        ('["ü, 日本", "😀"]'.encode(), ['"ü, 日本"'.encode(), '"😀"'.encode()]),
        (b"[" + nested(100_000) + b"]", [nested(100_000)]),  # no recursion
    ],
    ids=[
        "empty",
        "empty-with-blanks",
        "one",
        "blanks-around-items",
        "brackets-and-commas-in-strings",
        "escaped-quotes",
        "escaped-backslash-before-closing-quote",
        "escaped-backslash-then-escaped-quote",
        "nested",
        "unicode-escapes",
        "items-that-are-not-json",
        "utf8",
        "deep",
    ],
)
def test_item_spans_finds_each_top_level_item(data, items):
    assert spans(data) == items


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"  ",
        b'{"a": 1}',
        b"1",
        b"[",
        b"[1",
        b"[1,",
        b"[1,]",
        b"[,1]",
        b"[1,,2]",
        b"[ ]]",
        b"[1]x",
        b"[] []",
        b"[1}",
        b"[{]}",
        b"[[}]",
        b'["abc]',
        b'["abc\\"]',
        b'["abc\\',
        b"[" + nested(100_000)[:-1] + b"]",
    ],
)
def test_item_spans_refuses_a_list_of_unsound_structure(data):
    with pytest.raises(ValueError):
        list(item_spans(data))


def test_item_spans_yields_each_item_before_looking_further():
    found = item_spans(b"[1, 2, oops")
    assert next(found) == (1, 2)
    assert next(found) == (4, 5)
    with pytest.raises(ValueError):
        next(found)


# Text full of what the scan must not take for structure: quotes, backslashes, brackets, commas.
TRICKY_TEXT = st.text(alphabet=st.sampled_from('"\\[]{},: a\n\tü😀\x01'), max_size=12) | st.text(
    max_size=8
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TRICKY_TEXT,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(TRICKY_TEXT, children, max_size=4)
    ),
    max_leaves=16,
)


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(JSON_VALUES, max_size=6),
    indent=st.sampled_from([None, 2]),
    ensure_ascii=st.booleans(),
)
def test_item_spans_agrees_with_the_parser_and_refuses_every_cut(items, indent, ensure_ascii):
    data = json.dumps(items, indent=indent, ensure_ascii=ensure_ascii).encode()
    assert [json.loads(data[start:end]) for start, end in item_spans(data)] == items
    for cut in range(len(data)):  # a body cut anywhere is not a list of sound structure
        with pytest.raises(ValueError):
            list(item_spans(data[:cut]))


@settings(max_examples=200, deadline=None)
@given(items=st.lists(JSON_VALUES, max_size=6), data=st.data())
def test_one_unreadable_item_anywhere_leaves_the_others_as_parsed(items, data):
    position = data.draw(st.integers(0, len(items)))
    parts = [json.dumps(item).encode() for item in items]
    parts.insert(position, b'{"x": NaN}')
    decoded = decode_batch(b"[" + b", ".join(parts) + b"]")
    unparsed = decoded.pop(position)
    assert type(unparsed) is Unparsed and unparsed.raw == b'{"x": NaN}'
    assert decoded == items


# --- the batch-size gate (max_items) ------------------------------------------------------------


def tiny_items(count: int, item: bytes = b"0") -> bytes:
    return b"[" + b",".join([item] * count) + b"]"


def test_max_items_refuses_one_item_too_many():
    assert decode_batch(tiny_items(100), max_items=100) == [0] * 100
    with pytest.raises(TooManyItems, match="more than 100 events"):
        decode_batch(tiny_items(101), max_items=100)
    assert len(decode_batch(tiny_items(101))) == 101  # no limit given


def test_too_many_items_is_not_a_bad_body():
    assert not issubclass(TooManyItems, BadBody)  # 413, nothing kept; BadBody is quarantined
    assert issubclass(TooManyItems, ValueError)


def test_a_bare_object_is_one_item_whatever_its_commas():
    item = {"type": "open", "list": list(range(50_000))}
    assert decode_batch(raw(item), max_items=1) == [item]


FOUR_MIB = 4 * 1024 * 1024


@pytest.mark.parametrize(
    "item",
    [b"0", b"{}", b"[]", b'""', b"0.5", b'{"a":1}'],
    ids=["zero", "object", "list", "string", "float", "small-object"],
)
def test_a_body_of_tiny_items_is_refused_before_it_is_parsed(item):
    data = tiny_items(FOUR_MIB // (len(item) + 1), item)
    # Parsed, the list would take 40-150 MB; the scan stops at the 101st item.
    assert peak_memory_of_the_refusal(data) < 1_000_000


def peak_memory_of_the_refusal(data) -> int:
    """Bytes allocated at the most while decode_batch refuses `data` as too many items."""
    tracemalloc.start()
    try:
        with pytest.raises(TooManyItems, match="more than 100 events"):
            decode_batch(data, max_items=100)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_body_of_deeply_nested_items_is_refused_before_it_is_parsed():
    """2,000 items nested 1,000 deep: few commas, a million brackets. Counted on commas alone,
    it was parsed whole (~196 MB) and only then refused."""
    item = nested(1000)
    data = tiny_items(FOUR_MIB // (len(item) + 1), item)
    assert data.count(b",") < jsoncodec.UNSCANNED_VALUES_PER_ITEM * 100
    assert peak_memory_of_the_refusal(data) < 1_000_000


def test_a_long_list_of_sound_structure_is_refused_before_a_bad_item_in_it():
    # 101 items then a NaN: too many, whatever the parser would say of the rest.
    data = tiny_items(FOUR_MIB // 2)[:-1] + b",NaN]"
    with pytest.raises(TooManyItems):
        decode_batch(data, max_items=100)


def test_a_body_cut_before_the_limit_is_still_a_bad_body():
    data = b"[" + b"[" + b"0," * (FOUR_MIB // 2) + b"0"  # one item, never closed
    with pytest.raises(BadBody, match="not valid JSON"):
        decode_batch(data, max_items=100)


def test_a_large_batch_within_the_limit_is_scanned_and_parsed():
    # 100 events each holding a list of 600 numbers: over both gates (bytes and commas), so the
    # structural scan counts it, finds 100 items and lets it through.
    events = [event(id=str(n), numbers=[1] * 600, text="a,b]c}" * 20) for n in range(100)]
    data = json.dumps(events, separators=(",", ":")).encode()
    assert len(data) > jsoncodec.UNCOUNTED_BYTES_PER_ITEM * 100
    assert data.count(b",") > jsoncodec.UNSCANNED_VALUES_PER_ITEM * 100
    assert decode_batch(data, max_items=100) == events
    with pytest.raises(TooManyItems):
        decode_batch(data, max_items=99)


def test_too_many_items_among_which_one_no_parser_reads():
    data = tiny_items(101)[:-1] + b",NaN]"
    assert len(decode_batch(data, max_items=102)) == 102
    with pytest.raises(TooManyItems):
        decode_batch(data, max_items=100)


def test_a_usual_body_is_listed_as_the_bytes_orjson_read():
    data = body(event(id="a"), event(mediaTypesToAddresses={"EMAIL": "x@example.org"}))
    parsed = jsoncodec.parse_batch(jsoncodec.UTF8_BOM + data)
    assert parsed.listed == data and parsed.items == decode_batch(data)


def deep_event(depth: int) -> bytes:
    return json.dumps(event(id="d")).encode()[:-1] + b',"x":' + nested(depth) + b"}"


@pytest.mark.parametrize(
    "data",
    [
        json.dumps(event(id="a")).encode(),  # a bare object: PostgreSQL would need a list
        body(event(id="a", note="\u0000")),  # jsonb refuses the NUL escape
        with_long_digits(body(event(id="a"))),  # read by the standard library
        b"[" + deep_event(300) + b"]",  # deeper than orjson writes: the per-event paths could not
        b"[" + json.dumps(event(id="a")).encode() + b"," + nested(1030) + b"]",  # item by item
    ],
    ids=["object", "nul-escape", "exact-parse", "too-deep-to-write", "item-by-item"],
)
def test_what_is_not_listed(data):
    assert jsoncodec.parse_batch(data).listed is None


def test_many_brackets_but_shallow_is_listed_once_written():
    # 300 opening brackets, none deeper than 3: counted past the bound, then written to find out.
    data = body(*[event(id=str(i), nested={"a": [1]}) for i in range(100)])
    assert data.count(b"{") + data.count(b"[") > jsoncodec.ORJSON_MAX_WRITE_DEPTH
    assert jsoncodec.parse_batch(data).listed == data
