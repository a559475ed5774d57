"""JSON in and out: orjson for speed, the standard library where orjson would lose data.

orjson reads numbers as 64-bit integers or doubles: a longer integer becomes a float, a float with
more digits than a double holds is rounded, and either way digits are silently lost. Two events
differing only there would even share an idempotency key. A body with a run of 16 or more digits
and dots (longer than any number a double keeps exactly) is therefore parsed by the standard
library, integers as ints and other numbers as Decimal, and written back digit for digit; an
integer of more digits than int() converts (4,300 by default) is a Decimal of its digits too.

So does a number with a three-digit negative exponent (1e-400 or 3e-324, which orjson would
read as 0 or round), found by looking at each "e-" in the body, not by a regex over all of it.

A list that neither parser takes whole, but whose structure (brackets, strings) is sound, is
split into its top-level items, each parsed alone: one item nested deeper than a parser goes, or
otherwise not JSON, becomes an Unparsed (its bytes and the reason) for the quarantine, and the
other items are a batch as usual. With `max_items`, a body that may hold more items than that is
counted by the same structural scan before it is parsed: 4 MiB of `[0,0,...]` would otherwise
become a hundred megabytes of objects just to be refused.
"""

import decimal
import json
import math
import re
from typing import NamedTuple

import orjson

UTF8_BOM = b"\xef\xbb\xbf"
# The body's shape as far as numbers go: digits and dots to "1", e and E to "e", "-" as itself,
# everything else to "0". A long number is then a substring search, and so is the only place a
# tiny exponent can be ("e-111"), both done in C (a regex for the same costs four times orjson's
# whole parse; a search for "e-" in the body stops at every "e" of every word).
# The opening brackets are "(" in it, so that one count bounds how deeply the body nests.
_NUMBER_SHAPE = bytes.maketrans(
    bytes(range(256)),
    bytes(
        49
        if chr(b) in "0123456789."
        else 101
        if chr(b) in "eE"
        else 45
        if b == 45
        else 40
        if chr(b) in "[{"
        else 48
        for b in range(256)
    ),
)
_OPENER = b"("
_LONG_NUMBER = b"1" * 16
# Found by the regex engine's literal search: in a shape of four symbols, bytes.find's skip
# table skips little (a bench batch: 32 µs against 16; docs/benchmarks-history.md, #25).
_MAYBE_TINY_EXPONENT = re.compile(rb"e-111")
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
_MANTISSA, _BLANKS, _BEFORE_A_NUMBER = frozenset(b"0123456789.-"), frozenset(b" \t\r\n"), b":,["
# A NUL escape preceded by an even number of backslashes (a literal "\\u0000" is harmless).
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")

# The structural scan of a list (item_spans). Each pattern skips, in C, everything up to the next
# character that matters: a bracket, at the list's own level a comma, or a quote that opens no
# complete string (a complete string, escapes and all, is skipped whole). Possessive: a skip
# never backtracks, so a scan is linear in the body.
_STRING = rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
_SKIP_AT_TOP = re.compile(rb'(?:[^"\[\]{},]++|' + _STRING + rb")*+", re.DOTALL)
_SKIP_INSIDE = re.compile(rb'(?:[^"\[\]{}]++|' + _STRING + rb")*+", re.DOTALL)
_SKIP_BLANKS = re.compile(rb"[ \t\r\n]*+")  # JSON's whitespace, and only that
_JSON_BLANKS = b" \t\r\n"
_QUOTE, _COMMA, _OPEN_LIST, _CLOSE_LIST, _OPEN_OBJECT = b'",[]{'
_OPENERS = (_OPEN_LIST, _OPEN_OBJECT)
_OPENER_OF = {ord("]"): ord("["), ord("}"): ord("{")}
# The batch-size gate (decode_batch's max_items). A body of at most this many bytes per allowed
# item is parsed before its items are counted: whatever it holds, its objects take a few MB at
# most (37 bytes per byte of `[[],[],...]`, the worst), and a batch of Campaign's ~400-byte events
# never pays for a count. A longer body with fewer commas and opening brackets than this many per
# allowed item holds few JSON values whatever its length (each value but the first in a list or
# object follows a comma, and every list or object opens with a bracket: 2,000 items nested
# 1,000 deep have few commas and a million brackets); any other is scanned, and refused at the
# first item past the limit.
UNCOUNTED_BYTES_PER_ITEM = 1024
UNSCANNED_VALUES_PER_ITEM = 100
# orjson's nesting limit (the standard library's is the interpreter's recursion limit, lower).
ORJSON_MAX_DEPTH = 1024
# How deeply orjson writes (it refuses to write deeper).
ORJSON_MAX_WRITE_DEPTH = 255


class BadBody(ValueError):
    """The body is not a JSON list or object; the message says why (for the quarantine)."""


class Unstorable(ValueError):
    """An event PostgreSQL cannot hold as jsonb; the message says why."""


class TooManyItems(ValueError):
    """More items than the batch may hold: refused (413), nothing stored or quarantined. Not a
    BadBody, which is quarantined whole."""


class Unparsed(NamedTuple):
    """One top-level item of a list that no parser here can read: its bytes as received (JSON
    whitespace around it stripped) and the quarantine reason (no content in it)."""

    raw: bytes
    reason: str


class ParsedBatch(NamedTuple):
    """A body's items, and `listed`: the bytes orjson read them from whole as one JSON list,
    when it did and PostgreSQL may store them from those bytes as they are (the usual body:
    _storable_as_listed), else None (a bare object, a list parsed item by item or by the
    standard library, a NUL escape, deep nesting). PostgreSQL reads the same events from
    `listed` as orjson did."""

    items: list
    listed: bytes | None


def decode_batch(body: bytes, max_items: int | None = None) -> list:
    """Parse a request body into a list of items (a bare object is a batch of one).

    An item of a list that cannot be parsed comes out as an Unparsed, the others parsed; BadBody
    when the body is no JSON list or object (or a list of unsound structure). With `max_items`,
    TooManyItems when the body holds more items than that, found before the body is parsed
    when it could be costly (see UNCOUNTED_BYTES_PER_ITEM)."""
    return parse_batch(body, max_items).items


def parse_batch(body: bytes, max_items: int | None = None) -> ParsedBatch:
    """decode_batch's items, with the bytes of the list orjson read them from (ParsedBatch)."""
    if body.startswith(UTF8_BOM):
        body = body[len(UTF8_BOM) :]
    if not body.strip():
        raise BadBody("empty body")
    if (
        max_items is not None
        and len(body) > UNCOUNTED_BYTES_PER_ITEM * max_items
        and _values_at_least(body, UNSCANNED_VALUES_PER_ITEM * max_items)
        and _more_items_than(body, max_items)
    ):
        raise TooManyItems(f"more than {max_items} events")
    listed = None
    shape = body.translate(_NUMBER_SHAPE)
    try:
        document, by_orjson = _parse(body, shape)
        if by_orjson and type(document) is list and _storable_as_listed(body, shape, document):
            listed = body
    except (ValueError, RecursionError) as error:
        # One item no parser reads (nested too deeply, or not JSON) must not hold back the
        # others: a list of sound structure is parsed item by item.
        document = _decode_items(body, error)
    if isinstance(document, list):
        if max_items is not None and len(document) > max_items:
            raise TooManyItems(f"more than {max_items} events")
        return ParsedBatch(document, listed)
    if isinstance(document, dict):
        return ParsedBatch([document], None)
    raise BadBody(f"JSON body is a {type(document).__name__}, not a list of events or an event")


def _storable_as_listed(body: bytes, shape: bytes, items: list) -> bool:
    """Whether PostgreSQL may take `items` from `body` as it is (ParsedBatch.listed): no NUL
    escape, which jsonb refuses, and every item one that encode() writes as it is, which the
    per-event paths need if PostgreSQL refuses one of them. The nesting is bounded by the
    body's opening brackets, counted in its shape: a usual batch (two an event) has far fewer
    than orjson writes deep; any other is written once to find out."""
    if shape.count(_OPENER) < ORJSON_MAX_WRITE_DEPTH:
        return not has_nul_escape(body)
    return storable(items)


def _loads(data: bytes):
    """`data` parsed by orjson, or by the standard library where orjson would lose digits;
    the first parser's error when no parser takes it."""
    return _parse(data)[0]


def _parse(data: bytes, shape: bytes | None = None):
    """(`_loads(data)`, whether orjson parsed it); `shape`: data's, if known already."""
    exact = needs_exact_parse(data, shape)
    try:
        return (_loads_exact(data), False) if exact else (orjson.loads(data), True)
    except (ValueError, RecursionError) as error:  # orjson.JSONDecodeError is a ValueError
        if exact:
            raise
        first = error
    # orjson refuses some JSON the standard parser takes (an unpaired surrogate escape in one
    # event): parse it that way, so only that event is quarantined, not the batch.
    try:
        return _loads_exact(data), False
    except (ValueError, RecursionError):
        raise first from None


def _decode_items(body: bytes, error: Exception) -> list:
    """The items of a list neither parser took whole, each parsed alone (an Unparsed where that
    fails, bytes that are not UTF-8 included); BadBody, with the whole body's `error`, when the
    body is not a list of sound structure (unbalanced brackets, an unterminated string, an
    empty item, text after the list, UTF-16: a body cut or mangled in transit, which a retry may
    bring whole)."""
    try:
        spans = list(item_spans(body))
    except ValueError:
        raise BadBody(f"not valid JSON: {error}") from None
    return [_decode_item(body[start:end]) for start, end in spans]


def _decode_item(raw: bytes):
    """One item of a list, parsed as decode_batch parses a body; an Unparsed when it cannot be."""
    try:
        return _loads(raw)
    except RecursionError:  # the standard library's parser, on a long number's path
        return Unparsed(raw, "not valid JSON: nested deeper than the recursion limit")
    except ValueError as error:
        message = str(error)  # positions within the item, no content
        if "depth limit" in message or "Recursion limit" in message:  # orjson's, 3.x and 2.x
            message = f"nested deeper than {ORJSON_MAX_DEPTH} levels"
        return Unparsed(raw, f"not valid JSON: {message}")


def item_spans(body: bytes):
    """Yield (start, end) of each top-level item of the JSON list `body`, blanks around it
    excluded, as the scan reaches the comma or bracket after it; ValueError where the structure
    turns out unsound (not a list, brackets unbalanced or mismatched, an unterminated string,
    an empty item, anything but blanks after the list).

    Brackets and strings only: what is between them is for the parsers to judge. Iterative (no
    recursion, whatever the depth), strings skipped whole in C, escaped quotes and backslashes
    included; one step per bracket and per comma of the list itself."""
    pos = _SKIP_BLANKS.match(body).end()
    if body[pos : pos + 1] != b"[":
        raise ValueError("not a JSON list")
    end_of_body = len(body)
    pos += 1
    start = _SKIP_BLANKS.match(body, pos).end()
    opened = bytearray()  # the brackets open inside the current item, innermost last
    after_comma = False
    skip_at_top, skip_inside = _SKIP_AT_TOP.match, _SKIP_INSIDE.match
    while True:
        pos = (skip_inside if opened else skip_at_top)(body, pos).end()
        if pos == end_of_body:
            raise ValueError("list not closed")
        char = body[pos]
        if char == _QUOTE:
            raise ValueError("string not terminated")
        if char in _OPENERS:
            opened.append(char)
        elif opened:  # a closing bracket inside an item (a comma there is skipped)
            if opened.pop() != _OPENER_OF[char]:
                raise ValueError("brackets do not match")
        elif char == _COMMA:
            if start == pos:
                raise ValueError("empty item")
            yield start, _trimmed_end(body, pos)
            start, after_comma = _SKIP_BLANKS.match(body, pos + 1).end(), True
        elif char == _CLOSE_LIST:
            if start != pos:
                yield start, _trimmed_end(body, pos)
            elif after_comma:
                raise ValueError("empty item")
            if _SKIP_BLANKS.match(body, pos + 1).end() != end_of_body:
                raise ValueError("text after the list")
            return
        else:
            raise ValueError("brackets do not match")
        pos += 1


def _trimmed_end(body: bytes, end: int) -> int:
    while body[end - 1] in _JSON_BLANKS:
        end -= 1
    return end


def _values_at_least(body: bytes, count: int) -> bool:
    """Whether the body's commas and opening brackets (a bound on its JSON values, strings
    included) reach `count`; each counted in C, the next only when the first fall short."""
    total = 0
    for mark in (b",", b"[", b"{"):
        total += body.count(mark)
        if total >= count:
            return True
    return False


def _more_items_than(body: bytes, limit: int) -> bool:
    """Whether the list `body` has more than `limit` top-level items, scanning no further than
    the first one past the limit; False for anything else (not a list, unsound before the
    limit), which the parser then refuses for what it is."""
    counted = 0
    try:
        for _ in item_spans(body):
            counted += 1
            if counted > limit:
                return True
    except ValueError:
        pass
    return False


def needs_exact_parse(body: bytes, shape: bytes | None = None) -> bool:
    """True when the body may hold a number orjson would not read exactly: a long one, or one
    with a tiny exponent (looked for only where the body's shape allows one)."""
    if shape is None:
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
    found = _MAYBE_TINY_EXPONENT.search(shape)
    while found is not None:
        at = found.start()
        if body[at + 2 : at + 5].isdigit() and _ends_a_number_token(body, at):
            return True
        found = _MAYBE_TINY_EXPONENT.search(shape, at + 2)
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
    if has_nul_escape(data):
        raise Unstorable("contains a NUL character (\\u0000), which PostgreSQL cannot store")
    return data


def document(rows: list) -> bytes | None:
    """`rows` (tuples of plain values and parsed events) as one JSON document, when encode()
    would take every event in them as it is; else None.

    One orjson dump is both the check and the document the batch is stored with: None for a
    NUL escape, and for anything orjson does not write itself (a Decimal, a long integer, an
    unpaired surrogate, deep nesting), which encode() handles or refuses one event at a time."""
    try:
        data = orjson.dumps(rows)
    except (TypeError, orjson.JSONEncodeError):
        return None
    return None if has_nul_escape(data) else data


def storable(items: list) -> bool:
    """Whether encode() would take every one of these parsed items as it is: the check of
    document() without writing a document (orjson writes nothing deeper than 255 levels, and a
    payload it cannot write is not stored as it was parsed)."""
    try:
        data = orjson.dumps(items)
    except (TypeError, orjson.JSONEncodeError):
        return False
    return not has_nul_escape(data)


def has_nul_escape(data: bytes) -> bool:
    """Whether JSON text `data` holds a NUL escape (\\u0000), which jsonb refuses."""
    # A backslash first: one memchr, where a search for the escape stops at every digit 0.
    return b"\\" in data and b"\\u0000" in data and _NUL_ESCAPE.search(data) is not None


def canonical(value) -> bytes:
    """Key-sorted compact JSON: equal events give equal bytes, whatever their key order."""
    return _dumps(value, orjson.OPT_SORT_KEYS)


def preserve(value) -> bytes | None:
    """Serialise anything parsed from JSON for the quarantine, even what jsonb refuses (an
    Unparsed as its bytes); None when even that fails (nesting beyond the interpreter's
    recursion limit)."""
    if type(value) is Unparsed:
        return value.raw
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
    if isinstance(value, decimal.Decimal):  # also an integer of more digits than int() takes
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
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_exact_float)
    except ValueError as error:
        if "integer string conversion" not in str(error):
            raise
    # An integer of more digits than int() converts (sys.get_int_max_str_digits(), 4,300 by
    # default): parsed again with every integer through _exact_int (not always: a Python call
    # per integer doubles the parse).
    return json.loads(
        text, parse_constant=_reject_constant, parse_float=_exact_float, parse_int=_exact_int
    )


def _exact_int(text):
    """An int, or a Decimal of the same digits beyond what int() converts (written back digit
    for digit all the same: _exact_numbers)."""
    try:
        return int(text)
    except ValueError:
        return decimal.Decimal(text)


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
