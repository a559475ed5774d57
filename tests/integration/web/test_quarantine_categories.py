"""Quarantine categories end to end: bad content posted to the real webhook (real PostgreSQL) is
counted by kind and category in /metrics, and `receiver quarantine list|show` show the same
category for its rows (receiver.storage.quarantine.category)."""

import gzip
import hashlib
import json
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from receiver.cli import main
from receiver.storage import quarantine

from support import basic, body, event, post

METRIC = "receiver_quarantined"


def quarantined_series(client) -> Counter:
    """{(kind, category): value} of receiver_quarantined_total, from /metrics."""
    response = client.get("/metrics")
    assert response.status_code == 200
    values = Counter()
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        if family.name == METRIC:
            for sample in family.samples:
                if sample.name == f"{METRIC}_total":
                    values[sample.labels["kind"], sample.labels["category"]] = sample.value
    return values


@pytest.fixture
def cli(monkeypatch, database_url, capsys):
    """Run `receiver ARGS...` against the test database: (exit status, stdout)."""
    monkeypatch.setenv("DATABASE_URL", database_url)

    def run(*argv):
        capsys.readouterr()
        status = main(list(argv))
        return status, capsys.readouterr().out

    return run


def test_quarantined_content_is_counted_and_listed_by_category(client, cli, query):
    before = quarantined_series(client)
    # Every series is there before anything is quarantined: a rate() over a first refusal works.
    assert set(before) == {(k, c) for k in ("body", "event") for c in quarantine.CATEGORIES}

    for _ in range(2):  # the sender retries a 400: counted each time, kept once
        assert post(client, b"<xml>not json</xml>").status_code == 400
    assert post(client, b"42").status_code == 400
    broken = gzip.compress(body(event(id="g")))[:-4]  # cut short in transit
    assert post(client, broken, headers=basic() | {"Content-Encoding": "gzip"}).status_code == 400
    huge = "".join(f"{i:x}" for i in range(5000))  # too large for a btree entry
    batch = body(
        event(id="fine"),
        {k: v for k, v in event(id="no-created").items() if k != "created"},
        event(id="bad-client", clientId="abc"),
        event(id="poison", recipientId=huge),
    )
    assert post(client, batch).json == {
        "received": 4,
        "stored": 1,
        "duplicates": 0,
        "quarantined": 3,
    }

    after = quarantined_series(client)
    assert {key: after[key] - before[key] for key in after if after[key] != before[key]} == {
        ("body", "not_json"): 2,  # the same body twice
        ("body", "not_a_batch"): 1,
        ("body", "encoding"): 1,
        ("event", "missing_field"): 1,
        ("event", "invalid_value"): 1,
        ("event", "refused_by_database"): 1,
    }

    # A reason no rule knows (an older release's, or one written by hand): listed as `other`.
    content = b'{"hand": "written"}'
    digest = hashlib.sha256(b"event\0" + content).digest()
    query(
        "INSERT INTO quarantine (kind, reason, content, content_sha256) "
        "VALUES ('event', 'an older wording', %s, %s) RETURNING id",
        (content, digest),
    )

    status, out = cli("quarantine", "list", "--json")
    assert status == 0
    listed = Counter((row["kind"], row["category"]) for row in map(json.loads, out.splitlines()))
    assert listed == {
        ("body", "not_json"): 1,
        ("body", "not_a_batch"): 1,
        ("body", "encoding"): 1,
        ("event", "missing_field"): 1,
        ("event", "invalid_value"): 1,
        ("event", "refused_by_database"): 1,
        ("event", "other"): 1,
    }

    status, out = cli("quarantine", "list")
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == "quarantine: 7 unresolved row(s)"
    # Most rows first, then in the table's order; `other` said to be new.
    assert [line for line in lines if line.startswith("  ") and not line.startswith("   ")] == [
        "  encoding: 1",
        "  not_json: 1",
        "  not_a_batch: 1",
        "  missing_field: 1",
        "  invalid_value: 1",
        "  refused_by_database: 1",
        "  other: 1  (not a known kind of refusal: read its reasons)",
    ]
    assert lines[4].startswith("         1  not valid JSON: ")
    assert max(map(len, lines[: lines.index("")])) <= 120
    header = next(line for line in lines if line.lstrip().startswith("id "))
    assert header.split()[-2:] == ["category", "reason"]
    rows = [line.split() for line in lines if line[:8].strip().isdigit()]
    assert Counter(row[8] for row in rows) == Counter(c for _, c in listed.elements())

    status, out = cli("quarantine", "list", "--json", "--category", "other")
    assert [json.loads(line)["reason"] for line in out.splitlines()] == ["an older wording"]
    status, out = cli("quarantine", "list", "--category", "missing_field")
    assert out.startswith("quarantine: 1 unresolved row(s) of category missing_field\n")
    assert "  missing_field: 1\n" in out and "not_json" not in out
    row_id = next(line.split()[0] for line in out.splitlines() if line[:8].strip().isdigit())
    status, out = cli("quarantine", "show", row_id)
    assert status == 0
    assert "category:       missing_field\n" in out
    status, out = cli("quarantine", "list", "--category", "internal")
    assert status == 0 and out == "quarantine: 0 unresolved row(s) of category internal\n"


def test_an_unknown_category_is_refused_by_the_option(cli, capsys):
    assert main(["quarantine", "list", "--category", "nonsense"]) == 2
    assert "'nonsense' is not one of" in capsys.readouterr().err
