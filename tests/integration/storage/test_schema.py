"""receiver/storage/schema.sql is the schema the migrations make: a database made from it
describes, by PostgreSQL's catalog, exactly as a migrated one (receiver/storage/schema.py)."""

import psycopg
import pytest

from receiver.storage import schema


def test_a_database_made_from_schema_sql_is_a_migrated_one(database_url, empty_database):
    with psycopg.connect(empty_database, autocommit=True) as conn:
        schema.load(conn)

    found = schema.difference(
        schema.describe_database(database_url), schema.describe_database(empty_database)
    )

    assert not found, (
        "receiver/storage/schema.sql differs from what the migrations make (- migrations, "
        "+ schema.sql); bring it up to date (python -m receiver.storage.schema):\n" + found
    )


# What the description must notice, one change of each kind schema.sql could get wrong.
CHANGES = {
    "column": "ALTER TABLE quarantine ALTER COLUMN reason DROP NOT NULL",
    "column default": "ALTER TABLE deliveries ALTER COLUMN received_at SET DEFAULT 'epoch'",
    "column order": "ALTER TABLE status_changes_seed DROP COLUMN client_id, "
    "ADD COLUMN client_id bigint NOT NULL",
    "constraint": "ALTER TABLE quarantine DROP CONSTRAINT quarantine_resolution_complete",
    "index": "CREATE INDEX quarantine_reason ON quarantine (reason)",
    "function body": "CREATE OR REPLACE FUNCTION status_rank(status text) RETURNS smallint "
    "LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 1::smallint $$",
    "function setting": "ALTER FUNCTION mailing_summaries(bigint, timestamptz, timestamptz) "
    "RESET jit",
    "trigger": "ALTER TABLE events DISABLE TRIGGER events_count_mailings",
    "view": "CREATE OR REPLACE VIEW suppressions_by_day AS SELECT client_id, "
    "date_trunc('day', status_at) AS day, status, count(*) AS recipients FROM recipient_status "
    "GROUP BY client_id, date_trunc('day', status_at), status",
    "comment": "COMMENT ON COLUMN events.payload IS 'the event'",
    "publication": "ALTER PUBLICATION receiver SET (publish = 'insert')",
    "partition": "CREATE TABLE events_1999 PARTITION OF events "
    "FOR VALUES FROM ('1999-01-01') TO ('2000-01-01')",
    "ledger": "DELETE FROM schema_migrations WHERE version = 9",
    "place table": "INSERT INTO recipient_status_backfill (relation) VALUES (NULL)",
    "sequence": "ALTER SEQUENCE quarantine_id_seq CACHE 10",
    "policy": "CREATE POLICY mine ON quarantine USING (kind = 'event')",
    "statistics": "CREATE STATISTICS events_mailing_stats ON client_id, mailing_id FROM events",
    "function privilege": "REVOKE EXECUTE ON FUNCTION status_rank(text) FROM PUBLIC",
}


@pytest.mark.parametrize("change", CHANGES)
def test_the_description_notices_a_change(database_url, change):
    before = schema.describe_database(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(CHANGES[change])

    assert schema.difference(before, schema.describe_database(database_url))
