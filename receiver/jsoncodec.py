"""JSON in and out: orjson for speed, the standard library where orjson would lose data.

orjson turns integers beyond 64 bits into floats, silently dropping digits. A body that holds a
run of 19 or more digits is therefore parsed by the standard library, which keeps every digit;
payloads are kept exactly as numbers as they came.
"""

import json
import math
import re

import orjson

UTF8_BOM = b"\xef\xbb\xbf"
_LONG_DIGIT_RUN = re.compile(rb"\d{19,}")
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
        document = _loads_exact(body) if _LONG_DIGIT_RUN.search(body) else orjson.loads(body)
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


def encode(value) -> bytes:
    """Serialise for storage; raise Unstorable for what jsonb cannot hold."""
    try:
        data = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        data = _dumps_exact(value)
    if b"\\u0000" in data and _NUL_ESCAPE.search(data):
        raise Unstorable("contains a NUL character (\\u0000), which PostgreSQL cannot store")
    return data


def canonical(value) -> bytes:
    """Key-sorted compact JSON: equal events give equal bytes, whatever their key order."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return _dumps_exact(value, sort_keys=True)


def _loads_exact(body: bytes):
    # Decoded as UTF-8 explicitly: json.loads would guess UTF-16/32 from bytes, and JSON between
    # systems is UTF-8 (RFC 8259); both parsers must agree on what a body is.
    text = body.decode("utf-8")
    return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)


def _dumps_exact(value, sort_keys=False) -> bytes:
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


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text):
    # 1e400 would become inf, which JSON and jsonb cannot hold (orjson writes it as null).
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def preserve(value) -> bytes | None:
    """Serialise anything parsed from JSON for the quarantine, even what jsonb refuses;
    None when even that fails (nesting beyond the interpreter's recursion limit)."""
    try:
        return orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        pass
    try:
        # ASCII escapes keep unpaired surrogates and huge integers intact.
        return json.dumps(value, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    except RecursionError:
        return None
