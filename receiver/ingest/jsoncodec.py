"""JSON in and out: orjson for speed, the standard library where orjson would lose data.

orjson reads numbers as 64-bit integers or doubles: a longer integer becomes a float, a float with
more digits than a double holds is rounded, and either way digits are silently lost. Two events
differing only there would even share an idempotency key. A body with a run of 16 or more digits
and dots (longer than any number a double keeps exactly) is therefore parsed by the standard
library, integers as ints and other numbers as Decimal, and written back digit for digit.

So does a number with a three-digit negative exponent (1e-400 or 3e-324, which orjson would
read as 0 or round), found by looking at each "e-" in the body, not by a regex over all of it.
"""

import decimal
import json
import math
import re

import orjson

UTF8_BOM = b"\xef\xbb\xbf"
# The body's shape as far as numbers go: digits and dots to "1", e and E to "e", "-" as itself,
# everything else to "0". A long number is then a substring search, and so is the only place a
# tiny exponent can be ("e-111"), both done in C (a regex for the same costs four times orjson's
# whole parse; a search for "e-" in the body stops at every "e" of every word).
_NUMBER_SHAPE = bytes.maketrans(
    bytes(range(256)),
    bytes(
        49 if chr(b) in "0123456789." else 101 if chr(b) in "eE" else 45 if b == 45 else 48
        for b in range(256)
    ),
)
_LONG_NUMBER = b"1" * 16
_MAYBE_TINY_EXPONENT = b"e-111"
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
_MANTISSA, _BLANKS, _BEFORE_A_NUMBER = frozenset(b"0123456789.-"), frozenset(b" \t\r\n"), b":,["
# A NUL escape preceded by an even number of backslashes (a literal "\\u0000" is harmless).
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


class BadBody(ValueError):
    """The body is not a JSON list or object; the message says why (for the quarantine)."""


class Unstorable(ValueError):
    """An event PostgreSQL cannot hold as jsonb; the message says why."""


def decode_batch(body: bytes) -> list:
    """Parse a request body into a list of items (a bare object is a batch of one)."""
    if body.startswith(UTF8_BOM):
        body = body[len(UTF8_BOM) :]
    if not body.strip():
        raise BadBody("empty body")
    try:
        document = _loads_exact(body) if needs_exact_parse(body) else orjson.loads(body)
    except (ValueError, RecursionError) as error:  # orjson.JSONDecodeError is a ValueError
        # orjson refuses some JSON the standard parser takes (an unpaired surrogate escape in
        # one event): parse it that way, so only that event is quarantined, not the batch.
        try:
            document = _loads_exact(body)
        except (ValueError, RecursionError):
            raise BadBody(f"not valid JSON: {error}") from None
    if isinstance(document, dict):
        return [document]
    if isinstance(document, list):
        return document
    raise BadBody(f"JSON body is a {type(document).__name__}, not a list of events or an event")


def needs_exact_parse(body: bytes) -> bool:
    """True when the body may hold a number orjson would not read exactly: a long one, or one
    with a tiny exponent (looked for only where the body's shape allows one)."""
    shape = body.translate(_NUMBER_SHAPE)
    return _LONG_NUMBER in shape or has_tiny_exponent(body, shape)


def has_long_number(body: bytes) -> bool:
    """True when 16 or more digits and dots stand in a row: a number orjson may not keep."""
    return _LONG_NUMBER in body.translate(_NUMBER_SHAPE)


def has_tiny_exponent(body: bytes, shape: bytes | None = None) -> bool:
    """True when a number in the body has a negative exponent of three digits or more.

    Looked for where the body's shape (same length, same positions) reads "e-111": only there
    can an "e-" or "E-" be followed by three digits."""
    if shape is None:
        shape = body.translate(_NUMBER_SHAPE)
    at = shape.find(_MAYBE_TINY_EXPONENT)
    while at != -1:
        if body[at + 2 : at + 5].isdigit() and _ends_a_number_token(body, at):
            return True
        at = shape.find(_MAYBE_TINY_EXPONENT, at + 2)
    return False


def _ends_a_number_token(body, exponent_at) -> bool:
    """Whether the mantissa before body[exponent_at] starts right after ':', ',' or '['
    (a number), rather than inside a string such as a hex id ("...45e-178d...")."""
    start = exponent_at
    while start > 0 and body[start - 1] in _MANTISSA:
        start -= 1
    if start == exponent_at:
        return False
    while start > 0 and body[start - 1] in _BLANKS:
        start -= 1
    return start == 0 or body[start - 1] in _BEFORE_A_NUMBER


def encode(value) -> bytes:
    """Serialise for storage; raise Unstorable for what jsonb cannot hold."""
    data = _dumps(value)
    if _has_nul_escape(data):
        raise Unstorable("contains a NUL character (\\u0000), which PostgreSQL cannot store")
    return data


def document(rows: list) -> str | None:
    """`rows` (tuples of plain values and parsed events) as one JSON document, when encode()
    would take every event in them as it is; else None.

    One orjson dump is both the check and the document the batch is stored with: None for a
    NUL escape, and for anything orjson does not write itself (a Decimal, a long integer, an
    unpaired surrogate, deep nesting), which encode() handles or refuses one event at a time."""
    try:
        data = orjson.dumps(rows)
    except (TypeError, orjson.JSONEncodeError):
        return None
    return None if _has_nul_escape(data) else data.decode()


def _has_nul_escape(data: bytes) -> bool:
    # A backslash first: one memchr, where a search for the escape stops at every digit 0.
    return b"\\" in data and b"\\u0000" in data and _NUL_ESCAPE.search(data) is not None


def canonical(value) -> bytes:
    """Key-sorted compact JSON: equal events give equal bytes, whatever their key order."""
    return _dumps(value, orjson.OPT_SORT_KEYS)


def preserve(value) -> bytes | None:
    """Serialise anything parsed from JSON for the quarantine, even what jsonb refuses;
    None when even that fails (nesting beyond the interpreter's recursion limit)."""
    try:
        return _dumps(value)
    except Unstorable:
        pass
    try:
        # ASCII escapes keep unpaired surrogates; Decimals are written as their digits.
        text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), default=str)
        return text.encode("ascii")
    except RecursionError:
        return None


def _dumps(value, option=0) -> bytes:
    """orjson; for what it cannot write (long integers, Decimals) the same with those numbers
    as exact fragments; for nesting deeper than orjson writes (255), the standard library."""
    try:
        return orjson.dumps(value, option=option)
    except (TypeError, orjson.JSONEncodeError):
        pass
    try:
        return orjson.dumps(_exact_numbers(value), option=option)
    except RecursionError:
        raise Unstorable("nested too deeply to store") from None
    except (TypeError, orjson.JSONEncodeError) as error:
        if "surrogates not allowed" in str(error):
            raise Unstorable(
                "contains an unpaired UTF-16 surrogate, which is not valid text"
            ) from None
        if "Recursion limit" not in str(error):
            raise Unstorable(f"not representable as JSON: {error}") from None
    return _dumps_stdlib(value, sort_keys=bool(option & orjson.OPT_SORT_KEYS))


def _exact_numbers(value):
    """A copy with long integers and Decimals as orjson Fragments of their exact digits."""
    if isinstance(value, dict):
        return {key: _exact_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_exact_numbers(item) for item in value]
    if isinstance(value, decimal.Decimal):
        return orjson.Fragment(str(value).encode())
    if type(value) is int and not _INT64_MIN <= value <= _UINT64_MAX:
        return orjson.Fragment(str(value).encode())
    return value


def _dumps_stdlib(value, sort_keys=False) -> bytes:
    try:
        text = json.dumps(
            value, ensure_ascii=False, allow_nan=False, separators=(",", ":"), sort_keys=sort_keys
        )
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise Unstorable("contains an unpaired UTF-16 surrogate, which is not valid text") from None
    except RecursionError:
        raise Unstorable("nested too deeply to store") from None
    except (TypeError, ValueError) as error:
        raise Unstorable(f"not representable as JSON: {error}") from None


def _loads_exact(body: bytes):
    # Decoded as UTF-8 explicitly: json.loads would guess UTF-16/32 from bytes, and JSON between
    # systems is UTF-8 (RFC 8259); both parsers must agree on what a body is.
    text = body.decode("utf-8")
    return json.loads(text, parse_constant=_reject_constant, parse_float=_exact_float)


def _exact_float(text):
    """A float where a double holds the number exactly (as orjson would read it, so that both
    parsers give an event the same canonical form and key), else a Decimal of every digit."""
    value = float(text)
    exact = decimal.Decimal(text)
    if math.isfinite(value) and decimal.Decimal(repr(value)) == exact:
        return value
    return exact


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")
