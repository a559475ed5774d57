"""`receiver quarantine`: list, show and replay against real PostgreSQL.

Content is quarantined the way production does it, through POST /webhook; an operator's fix is
an UPDATE of the row's content, and a code change is a row whose content is valid today but was
quarantined with an older reason.
"""

import gzip
import hashlib
import json

import psycopg
import pytest

from receiver.cli import main
from receiver.cli import quarantine as quarantine_cli

from support import body, event, post

MISSING_CREATED = "invalid event: created: Missing data for required field."


@pytest.fixture
def cli(monkeypatch, database_url, capsys):
    """Run `receiver ARGS...` against the test database: (exit status, stdout, stderr)."""
    monkeypatch.setenv("DATABASE_URL", database_url)

    def run(*argv):
        capsys.readouterr()  # drop anything printed before
        status = main(list(argv))
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run


def rows(query):
    return query(
        "SELECT id, kind, reason, content, resolved_at IS NOT NULL, resolution "
        "FROM quarantine ORDER BY id"
    )


def insert_row(query, kind, reason, content: bytes):
    """A row as the webhook would have kept it (same identity digest as
    receiver.storage.quarantine.keep)."""
    digest = hashlib.sha256(kind.encode() + b"\0" + content).digest()
    [(row_id,)] = query(
        "INSERT INTO quarantine (kind, reason, content, content_sha256) "
        "VALUES (%s, %s, %s, %s) RETURNING id",
        (kind, reason, content, digest),
    )
    return row_id


@pytest.fixture
def execute(database_url):
    """Run one statement that returns no rows (an operator's UPDATE)."""

    def run(sql, params=None):
        with psycopg.connect(database_url) as conn:
            conn.execute(sql, params)

    return run


def events(query):
    return query("SELECT event_key, type, created_at, payload FROM events ORDER BY event_key")


@pytest.fixture
def quarantined(client, query):
    """Quarantine an event missing `created`, a non-JSON body (sent twice) and a body `42`."""
    without_created = {k: v for k, v in event(id="no-created").items() if k != "created"}
    assert post(client, body(without_created)).json["quarantined"] == 1
    for _ in range(2):  # the sender retries: one row, counted twice
        assert post(client, b"<xml>not json</xml>").status_code == 400
    assert post(client, b"42").status_code == 400
    ids = {content: row_id for row_id, content in query("SELECT id, content FROM quarantine")}
    [event_id] = [ids[c] for c in ids if c.startswith(b"{")]
    return {"event": event_id, "xml": ids[b"<xml>not json</xml>"], "number": ids[b"42"]}


# --- list and show ---


def test_list_shows_each_row_and_counts_by_reason(cli, quarantined):
    status, out, _ = cli("quarantine", "list")
    assert status == 0
    assert out.startswith("quarantine: 3 unresolved row(s)\n")
    assert f"       1  {MISSING_CREATED}\n" in out
    assert "       1  JSON body is a int, not a list of events or an event\n" in out
    lines = {int(line.split()[0]): line for line in out.splitlines() if line[:8].strip().isdigit()}
    assert set(lines) == set(quarantined.values())
    xml = lines[quarantined["xml"]].split()
    assert xml[1:3] == ["body", "2"]  # kind, times received
    assert xml[7] == "19"  # content size in bytes (after two dates of two words each)
    assert lines[quarantined["event"]].split()[1] == "event"
    assert MISSING_CREATED[:40] in lines[quarantined["event"]]


def test_list_json_lines_carry_the_content_as_text(cli, quarantined):
    status, out, err = cli("quarantine", "list", "--json")
    assert status == 0 and err == ""
    listed = {row["id"]: row for row in map(json.loads, out.splitlines())}
    assert set(listed) == set(quarantined.values())
    xml = listed[quarantined["xml"]]
    assert (xml["kind"], xml["content"], xml["times_received"], xml["size"]) == (
        "body",
        "<xml>not json</xml>",
        2,
        19,
    )
    assert xml["reason"].startswith("not valid JSON")
    assert xml["resolved_at"] is None and xml["resolution"] is None
    assert xml["last_received_at"] >= xml["received_at"]
    stored_event = json.loads(listed[quarantined["event"]]["content"])
    assert stored_event["id"] == "no-created" and "created" not in stored_event


def test_list_json_replaces_bytes_that_are_not_utf8(cli, client):
    post(client, b"\xff\xfe not json")
    _, out, _ = cli("quarantine", "list", "--json")
    [row] = map(json.loads, out.splitlines())
    assert row["content"] == "\ufffd\ufffd not json"
    assert row["size"] == 11


def test_list_filters_by_kind_time_and_limit(cli, quarantined):
    _, out, _ = cli("quarantine", "list", "--json", "--kind", "event")
    assert [json.loads(line)["id"] for line in out.splitlines()] == [quarantined["event"]]
    _, out, _ = cli("quarantine", "list", "--json", "--since", "2999-01-01")
    assert out == ""
    _, out, _ = cli("quarantine", "list", "--json", "--since", "2000-01-01T00:00:00+02:00")
    assert len(out.splitlines()) == 3
    _, out, err = cli("quarantine", "list", "--json", "--limit", "2")
    assert len(out.splitlines()) == 2
    assert "first 2 of 3 rows" in err  # never in the JSON lines a script reads
    _, out, _ = cli("quarantine", "list", "--limit", "1")
    assert "quarantine: 3 unresolved row(s)" in out and "first 1 of 3 rows" in out


def test_show_prints_the_full_reason_and_content(cli, quarantined, query):
    status, out, _ = cli("quarantine", "show", str(quarantined["event"]))
    assert status == 0
    [(content,)] = query("SELECT content FROM quarantine WHERE id = %s", (quarantined["event"],))
    assert f"reason:         {MISSING_CREATED}\n" in out
    assert "kind:           event\n" in out
    assert "resolved:       no\n" in out
    assert out.endswith(f"content ({len(content)} bytes):\n{content.decode()}\n")


def test_show_escapes_terminal_control_characters(cli, client):
    post(client, b"\x1b[2Jcleared\r\nsecond line")
    _, out, _ = cli("quarantine", "list", "--json")
    row_id = json.loads(out)["id"]
    _, out, _ = cli("quarantine", "show", str(row_id))
    assert "\x1b" not in out and "\r" not in out
    assert out.endswith("\\x1b[2Jcleared\\r\nsecond line\n")


def test_show_of_an_unknown_id_fails(cli):
    status, _, err = cli("quarantine", "show", "999")
    assert status == 1
    assert "no quarantine row with id 999" in err


# --- replay ---


def test_replay_keeps_what_still_fails_with_todays_reason(cli, quarantined, query, execute):
    before = rows(query)
    execute(
        "UPDATE quarantine SET reason = 'an older wording' WHERE id = %s", (quarantined["number"],)
    )
    status, out, _ = cli("quarantine", "replay")
    assert status == 0
    assert "3 rows examined, 0 events stored, 0 duplicates, 0 rows resolved, 3 still" in out
    assert rows(query) == before  # reasons back to today's wording, nothing resolved
    assert events(query) == []


def test_row_fixed_in_place_is_stored_once_and_resolved(cli, quarantined, query, execute):
    fixed = event(id="no-created", created=1700000000123)
    execute(
        "UPDATE quarantine SET content = %s WHERE id = %s",
        (json.dumps(fixed).encode(), quarantined["event"]),
    )
    status, out, _ = cli("quarantine", "replay")
    assert status == 0
    assert f"#{quarantined['event']} event: 1 stored, 0 duplicates -> resolved" in out
    assert "3 rows examined, 1 events stored, 0 duplicates, 1 rows resolved, 2 still" in out
    [(key, kind, created_at, payload)] = events(query)
    assert (key, kind, payload) == ("no-created", "open", fixed)
    assert created_at.timestamp() == 1700000000.123
    resolved = [row for row in rows(query) if row[4]]
    assert [(r[0], r[2], r[5]) for r in resolved] == [
        (quarantined["event"], MISSING_CREATED, "replayed: 1 stored, 0 duplicates")
    ]

    # Again: the resolved row is not replayed, nothing is stored twice.
    status, out, _ = cli("quarantine", "replay")
    assert status == 0
    assert "2 rows examined, 0 events stored" in out
    status, out, _ = cli("quarantine", "replay", "--id", str(quarantined["event"]))
    assert "already resolved, skipped" in out
    assert len(events(query)) == 1
    assert query("SELECT resolution FROM quarantine WHERE id = %s", (quarantined["event"],)) == [
        ("replayed: 1 stored, 0 duplicates",)
    ]

    # Resolved rows leave the default list and appear with --all.
    _, out, _ = cli("quarantine", "list", "--json")
    assert quarantined["event"] not in [json.loads(line)["id"] for line in out.splitlines()]
    _, out, _ = cli("quarantine", "list", "--all")
    assert "quarantine: 3 row(s)" in out and "[resolved] " in out


def test_row_valid_under_todays_code_is_stored_once(cli, query):
    # Quarantined by an older release that knew only four types; valid today.
    content = json.dumps(event("filteredbyblocklist", id="fb-1", mailingId=77)).encode()
    old_reason = "invalid event: type: Must be one of: open, click."
    row_id = insert_row(query, "event", old_reason, content)
    for _ in range(2):
        assert cli("quarantine", "replay")[0] == 0
    assert query("SELECT event_key, type, mailing_id FROM events") == [
        ("fb-1", "filteredbyblocklist", 77)
    ]
    assert query("SELECT resolution FROM quarantine WHERE id = %s", (row_id,)) == [
        ("replayed: 1 stored, 0 duplicates",)
    ]


def test_event_already_stored_is_a_duplicate_not_a_second_row(cli, client, query):
    valid = event(id="seen-before")
    assert post(client, body(valid)).json["stored"] == 1
    row_id = insert_row(query, "event", "an older reason", json.dumps(valid).encode())
    status, out, _ = cli("quarantine", "replay")
    assert status == 0
    assert f"#{row_id} event: 0 stored, 1 duplicates -> resolved" in out
    assert query("SELECT count(*) FROM events") == [(1,)]
    assert query("SELECT resolution FROM quarantine") == [("replayed: 0 stored, 1 duplicates",)]


def test_dry_run_changes_nothing(cli, quarantined, query, execute):
    fixed = json.dumps(event(id="no-created")).encode()
    execute("UPDATE quarantine SET content = %s WHERE id = %s", (fixed, quarantined["event"]))
    execute(
        "UPDATE quarantine SET reason = 'an older wording' WHERE id = %s", (quarantined["number"],)
    )
    everything = "SELECT *, xmin::text FROM quarantine ORDER BY id"  # xmin: not even rewritten
    before = query(everything)
    status, out, _ = cli("quarantine", "replay", "--dry-run")
    assert status == 0
    assert f"#{quarantined['event']} event: 1 to store, 0 duplicates -> would be resolved" in out
    assert "replay --dry-run (nothing changed): 3 rows examined, 1 events would be stored" in out
    assert query(everything) == before
    assert events(query) == []


def test_body_with_two_valid_events_of_three_stores_two_and_keeps_the_row(
    cli, client, query, execute
):
    batch = body(event(id="b-1"), {"type": "open", "clientId": 1}, event(id="b-3"))
    assert post(client, batch + b"}").status_code == 400  # mangled in transit
    [(row_id,)] = query("SELECT id FROM quarantine")
    execute("UPDATE quarantine SET content = %s WHERE id = %s", (batch, row_id))  # operator's fix
    kept = "2 of 3 events valid and stored; not stored: event 2: " + MISSING_CREATED
    for attempt in range(2):
        status, out, _ = cli("quarantine", "replay")
        assert status == 0
        stored = "2 stored, 0 duplicates" if attempt == 0 else "0 stored, 2 duplicates"
        assert f"#{row_id} body: {stored}, 1 not storable -> still quarantined (partially" in out
        assert "1 still quarantined (1 partially replayed)" in out
        assert [e[0] for e in events(query)] == ["b-1", "b-3"]
        assert query("SELECT reason, resolved_at FROM quarantine") == [(kept, None)]

    # The operator fixes the third event too: the row resolves, the first two stay single rows.
    fixed = body(event(id="b-1"), event(id="b-2"), event(id="b-3"))
    execute("UPDATE quarantine SET content = %s WHERE id = %s", (fixed, row_id))
    assert cli("quarantine", "replay")[0] == 0
    assert [e[0] for e in events(query)] == ["b-1", "b-2", "b-3"]
    assert query("SELECT resolution FROM quarantine") == [("replayed: 1 stored, 2 duplicates",)]


def test_event_that_is_a_list_stays_an_invalid_event(cli, client, query):
    # [[valid event]]: the item is a list. Replay must not unpack it into a batch of its own.
    assert post(client, body([event(id="nested")])).json["quarantined"] == 1
    status, out, _ = cli("quarantine", "replay")
    assert status == 0
    assert "still quarantined: event is a JSON array, not an object" in out
    assert events(query) == []


def test_event_postgresql_refuses_stays_quarantined(cli, client, query, execute):
    huge = "".join(f"{i:x}" for i in range(5000))  # too large for a btree entry
    assert post(client, body(event(id="poison", recipientId=huge))).json["quarantined"] == 1
    execute("UPDATE quarantine SET reason = 'an older wording'")
    assert cli("quarantine", "replay")[0] == 0
    [(reason, resolved_at)] = query("SELECT reason, resolved_at FROM quarantine")
    assert reason.startswith("refused by PostgreSQL") and resolved_at is None
    assert events(query) == []


def test_replay_of_chosen_ids_only(cli, query):
    first = insert_row(query, "event", "old", json.dumps(event(id="one")).encode())
    second = insert_row(query, "event", "old", json.dumps(event(id="two")).encode())
    status, out, _ = cli("quarantine", "replay", "--id", str(second))
    assert status == 0 and "1 rows examined" in out
    assert query("SELECT event_key FROM events") == [("two",)]
    assert query("SELECT id FROM quarantine WHERE resolved_at IS NULL") == [(first,)]
    status, _, err = cli("quarantine", "replay", "--id", str(first), "--id", "12345")
    assert status == 1 and "no quarantine row with id 12345" in err
    assert query("SELECT event_key FROM events") == [("two",)]  # nothing replayed on a typo


def test_each_row_commits_alone_and_a_lock_timeout_stops_the_replay(
    cli, database_url, query, monkeypatch
):
    first = insert_row(query, "event", "old", json.dumps(event(id="one")).encode())
    second = insert_row(query, "event", "old", json.dumps(event(id="two")).encode())
    monkeypatch.setattr(quarantine_cli, "LOCK_TIMEOUT_MS", 200)
    with psycopg.connect(database_url) as holder:  # another session holds the second row
        holder.execute("SELECT 1 FROM quarantine WHERE id = %s FOR UPDATE", (second,))
        status, out, err = cli("quarantine", "replay")
    assert status == 1
    assert "stopped by a database error" in err and "lock timeout" in err
    assert "1 rows examined, 1 events stored" in out
    # The first row's transaction committed; the second is untouched and replays next time.
    assert query("SELECT id FROM quarantine WHERE resolved_at IS NOT NULL") == [(first,)]
    assert cli("quarantine", "replay")[0] == 0
    assert query("SELECT event_key FROM events ORDER BY 1") == [("one",), ("two",)]


def test_unreachable_database_is_an_error_exit(cli, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/none")
    status, _, err = cli("quarantine", "list")
    assert status == 2 and "cannot connect to the database at 127.0.0.1:1/none" in err


def test_database_url_is_required(cli, monkeypatch, tmp_path):
    monkeypatch.delenv("DATABASE_URL")
    # No development database to fall back on: an empty state directory of the test's own.
    monkeypatch.setenv("RECEIVER_STATE_DIR", str(tmp_path / "state"))
    status, _, err = cli("quarantine", "replay")
    assert status == 2
    assert "DATABASE_URL is not set" in err


# --- items no parser reads ---

DEEP_REASON = "not valid JSON: nested deeper than 1024 levels"


def deep_event(event_id, depth=1030) -> bytes:
    """An event whose field `x` takes it to `depth` levels: more than orjson's 1,024."""
    levels = depth - 1
    return b'{"type":"open","id":"%s","clientId":1,"created":1,"x":%s%s}' % (
        event_id.encode(),
        b"[" * levels,
        b"]" * levels,
    )


def test_event_nested_too_deeply_stays_until_its_content_is_fixed(cli, client, query, execute):
    deep = deep_event("deep")
    batch = b"[" + body(event(id="ok-1"))[1:-1] + b"," + deep + b"]"
    assert post(client, batch).json == {
        "received": 2,
        "stored": 1,
        "duplicates": 0,
        "quarantined": 1,
    }
    [(row_id, kind, reason, content, resolved, _)] = rows(query)
    assert (kind, reason, bytes(content), resolved) == ("event", DEEP_REASON, deep, False)

    execute("UPDATE quarantine SET reason = 'an older wording' WHERE id = %s", (row_id,))
    status, out, _ = cli("quarantine", "replay")
    assert status == 0
    assert f"#{row_id} event: still quarantined: {DEEP_REASON}" in out
    assert query("SELECT reason, resolved_at FROM quarantine") == [(DEEP_REASON, None)]
    assert [e[0] for e in events(query)] == ["ok-1"]

    # The operator cuts the nesting: the row resolves and the event is stored, once.
    fixed = event(id="deep", x=[[[]]])
    execute(
        "UPDATE quarantine SET content = %s WHERE id = %s", (json.dumps(fixed).encode(), row_id)
    )
    status, out, _ = cli("quarantine", "replay")
    assert status == 0
    assert f"#{row_id} event: 1 stored, 0 duplicates -> resolved" in out
    assert [(e[0], e[3]) for e in events(query)] == [("deep", fixed), ("ok-1", event(id="ok-1"))]
    assert query("SELECT resolution FROM quarantine WHERE id = %s", (row_id,)) == [
        ("replayed: 1 stored, 0 duplicates",)
    ]


def test_body_kept_whole_for_one_deep_event_stores_the_others_on_replay(cli, query, execute):
    # An older release answered 400 and kept the whole body for one event nested too deeply.
    items = [json.dumps(event(id=f"w-{n}")).encode() for n in (1, 2, 3)] + [deep_event("w-4")]
    whole = b"[" + b",".join(items) + b"]"
    row_id = insert_row(query, "body", "not valid JSON: depth limit exceeded", whole)
    kept = f"3 of 4 events valid and stored; not stored: event 4: {DEEP_REASON}"
    status, out, _ = cli("quarantine", "replay")
    assert status == 0
    assert f"#{row_id} body: 3 stored, 0 duplicates, 1 not storable -> still quarantined" in out
    assert [e[0] for e in events(query)] == ["w-1", "w-2", "w-3"]
    assert query("SELECT reason, resolved_at FROM quarantine") == [(kept, None)]

    fixed = whole.replace(deep_event("w-4"), json.dumps(event(id="w-4")).encode())
    execute("UPDATE quarantine SET content = %s WHERE id = %s", (fixed, row_id))
    assert cli("quarantine", "replay")[0] == 0
    assert [e[0] for e in events(query)] == ["w-1", "w-2", "w-3", "w-4"]
    assert query("SELECT resolution FROM quarantine") == [("replayed: 1 stored, 3 duplicates",)]


def test_event_with_an_integer_beyond_4300_digits_is_stored_on_replay(cli, query):
    # Quarantined by an older release, whose parser refused integers of more than 4,300 digits.
    digits = "6" * 4301
    content = json.dumps(event(id="big"))[:-1].encode() + b', "big": ' + digits.encode() + b"}"
    row_id = insert_row(query, "event", "not valid JSON: Exceeds the limit (4300 digits)", content)
    status, out, _ = cli("quarantine", "replay")
    assert status == 0
    assert f"#{row_id} event: 1 stored, 0 duplicates -> resolved" in out
    assert query("SELECT event_key, payload->>'big' FROM events") == [("big", digits)]


def test_a_gzip_body_quarantined_whole_is_stored_on_replay(cli, query):
    # An older release quarantined a gzip body as junk (it did not decompress Content-Encoding).
    compressed = gzip.compress(json.dumps([event(id="z-1"), event(id="z-2")]).encode())
    row_id = insert_row(query, "body", "not valid JSON: unexpected character", compressed)
    status, out, _ = cli("quarantine", "replay")
    assert status == 0
    assert f"#{row_id} body: 2 stored, 0 duplicates -> resolved" in out
    assert [e[0] for e in events(query)] == ["z-1", "z-2"]


def test_a_gzip_body_that_does_not_decompress_stays_with_the_reason(cli, query):
    broken = gzip.compress(json.dumps([event(id="z-3")]).encode())[:-12]
    row_id = insert_row(query, "body", "compressed body is incomplete", broken)
    status, out, _ = cli("quarantine", "replay")
    assert status == 0
    assert f"#{row_id} body" in out and "still quarantined" in out
    assert query("SELECT reason FROM quarantine") == [("compressed body is incomplete",)]
    assert events(query) == []
