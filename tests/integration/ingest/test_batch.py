"""Taking in one batch (receiver/ingest/batch.py): content encodings, the request's one
deadline, and database trouble as `unavailable`, against real PostgreSQL."""

import gzip
import time
import zlib

import pytest

from receiver.deadline import Deadline
from receiver.ingest import batch
from receiver.storage import db

from support import basic, body, event, post, table_locked


def count(query, table="events"):
    return query(f"SELECT count(*) FROM {table}")[0][0]  # noqa: S608 (fixed table names)


def encoded(data: bytes, coding: str) -> bytes:
    if coding == "gzip":
        return gzip.compress(data)
    if coding == "deflate":
        return zlib.compress(data)
    if coding == "raw-deflate":
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        return compressor.compress(data) + compressor.flush()
    raise AssertionError(coding)


@pytest.mark.parametrize(
    ("coding", "header"),
    [("gzip", "gzip"), ("gzip", "x-gzip"), ("deflate", "deflate"), ("raw-deflate", "deflate")],
)
def test_a_compressed_body_is_stored_like_a_plain_one(client, query, coding, header):
    """A gzip body was quarantined as junk and refused for three days."""
    data = body(event(id="zipped-1"), event(id="zipped-2"))
    response = post(client, encoded(data, coding), basic() | {"Content-Encoding": header})
    assert response.status_code == 200, response.json
    assert response.json["stored"] == 2
    assert count(query) == 2
    assert count(query, "quarantine") == 0


def test_two_gzip_members_and_identity_are_undone_too(client, query):
    data = body(event(id="m1"), event(id="m2"))
    two_members = gzip.compress(data[:10]) + gzip.compress(data[10:])
    headers = basic() | {"Content-Encoding": "identity, gzip"}
    response = post(client, two_members, headers)
    assert response.status_code == 200, response.json
    assert count(query) == 2


def test_an_unsupported_encoding_is_415_and_the_body_kept(client, query):
    data = b"\x28\xb5\x2f\xfd not really zstd"
    response = post(client, data, basic() | {"Content-Encoding": "zstd"})
    assert response.status_code == 415
    assert "zstd" in response.json["error"]
    assert query("SELECT kind, content FROM quarantine") == [("body", data)]
    assert count(query) == 0


def test_a_corrupt_gzip_body_is_400_and_kept_as_received(client, query):
    data = gzip.compress(body(event(id="broken")))[:-12]
    response = post(client, data, basic() | {"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert query("SELECT kind, content FROM quarantine") == [("body", data)]


def test_a_body_that_decompresses_past_the_limit_is_413_and_nothing_kept(make_client, query):
    client = make_client(max_body_bytes=64 * 1024)
    bomb = gzip.compress(b"[" + b" " * (10 * 1024 * 1024) + b"]")  # 10 MiB from ~10 kB
    assert len(bomb) < 64 * 1024
    response = post(client, bomb, basic() | {"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert count(query, "quarantine") == 0


def test_a_passed_deadline_is_unavailable_without_waiting(config, query):
    """Every database call of a batch takes what is left of the request's deadline."""
    pool = db.make_pool(config)
    pool.open(wait=True)
    try:
        started = time.monotonic()
        outcome = batch.take(body(event(id="late")), config, pool=pool, deadline=Deadline.after(0))
        elapsed = time.monotonic() - started
    finally:
        pool.close()
    assert outcome.name == "unavailable"
    assert "no time left" in outcome.error
    assert elapsed < 0.5
    assert count(query) == 0


def test_the_lookup_and_the_store_share_one_deadline(config, database_url, query):
    """The lookup waits 0.6 s on a locked `deliveries`, then the store on a locked `events`:
    the store gets what is left of the request's 1 s, not a bound of its own (5.5 s)."""
    pool = db.make_pool(config)  # statement timeout 5 s and deadline 5.5 s: each call alone
    pool.open(wait=True)
    try:
        with (
            table_locked(database_url, "events"),
            table_locked(database_url, "deliveries", release_after=0.6),
        ):
            started = time.monotonic()
            outcome = batch.take(
                body(event(id="shared")), config, pool=pool, deadline=Deadline.after(1.0)
            )
            elapsed = time.monotonic() - started
    finally:
        pool.close()
    assert outcome.name == "unavailable"
    # The store's own deadline was what was left after the lookup (about 0.4 s), not 1 s.
    assert outcome.error.startswith("no answer from the database within 0."), outcome.error
    assert 0.9 < elapsed < 1.5
