"""JSON in and out (receiver.ingest.jsoncodec): decoding, encoding, canonical keys, preserve."""

import decimal
import json

import pytest

from receiver.ingest import jsoncodec
from receiver.ingest.jsoncodec import BadBody, Unstorable, canonical, decode_batch, encode, preserve

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


INVALID_JSON = {
    "unclosed-object": b"{",
    "unclosed-list": b'[{"type": "open"}',
    "trailing-comma": b"[1,]",
    "single-quotes": b"[{'type': 'open'}]",
    "not-json": b"type=open&clientId=1",
    "html": b"<html>502 Bad Gateway</html>",
    "two-documents": b"[] []",
    "truncated-string": b'[{"type": "op',
    "invalid-utf8": b'[{"type": "\xff\xfe"}]',
    "utf16": json.dumps([event()]).encode("utf-16"),
    "unquoted-key": b"[{type: 1}]",
    "invalid-escape": b'["\\x41"]',
    "long-digits-unclosed": b'[{"clientId": 12345678901234567890',
    "long-digits-invalid-utf8": b'[12345678901234567890, "\xff"]',
    "long-digits-trailing-comma": b"[12345678901234567890,]",
}


@pytest.mark.parametrize("data", INVALID_JSON.values(), ids=INVALID_JSON.keys())
def test_invalid_json_is_a_bad_body(data):
    with pytest.raises(BadBody, match="not valid JSON"):
        decode_batch(data)


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
    data = b'[{"type": "open", "x": ' + constant + b"}]"
    with pytest.raises(BadBody):
        decode_batch(with_long_digits(data) if long_digits else data)


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
def test_deep_nesting_is_a_bad_body_not_a_recursion_error(depth, opener, closer, long_digits):
    data = b"[" + nested(depth, opener, closer) + b"]"
    with pytest.raises(BadBody):
        decode_batch(with_long_digits(data) if long_digits else data)


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
