-- 003: `events` partitioned by month of the event's own time (created_at).
--
-- Why: one table that only grows makes every insert into its indexes a random read once they
-- outgrow memory, and old data can only go with a DELETE that bloats the table. With a
-- partition a month, a batch of today's events touches the current month's indexes only, and
-- retention drops whole months (receiver prune).
--
-- A re-delivered event keeps its `created`, so it lands in the same partition, and the unique
-- key (which must include the partition key) still makes it a duplicate. Two events with the
-- same id and type but a different `created` are now two rows.
--
-- The key leads with client_id, the column `events` would be distributed by across several
-- servers (Citus), then type and created_at: within a client and type, new events have ever
-- later times, so the key's index grows at its right-hand edge instead of taking random
-- insertions, and "the latest sent event of client X" is one index probe.
--
-- Rows without a monthly partition (far past, far future, a month not created yet) go to
-- events_default, so no valid event is ever refused; `receiver maintain` moves them into their
-- month's partition when it creates it.
--
-- This file only swaps the tables, in milliseconds: today's rows stay in events_unpartitioned
-- and `receiver migrate` then moves them in batches of their own transactions, resumably
-- (receiver/storage/partitions.py), while ingest goes on into the new table.

ALTER TABLE events RENAME TO events_unpartitioned;
ALTER TABLE events_unpartitioned RENAME CONSTRAINT events_key TO events_unpartitioned_key;
ALTER INDEX events_created_at RENAME TO events_unpartitioned_created_at;
ALTER INDEX events_mailing RENAME TO events_unpartitioned_mailing;
ALTER INDEX events_recipient RENAME TO events_unpartitioned_recipient;
ALTER INDEX events_received_at RENAME TO events_unpartitioned_received_at;

CREATE TABLE events (
    event_key          text        NOT NULL,
    event_id           text,
    client_id          bigint      NOT NULL,
    type               text        NOT NULL,
    created_at         timestamptz NOT NULL,
    received_at        timestamptz NOT NULL DEFAULT now(),
    mailing_id         bigint,
    user_list_id       bigint,
    subscription_id    bigint,
    recipient_id       text,
    mail_id            text,
    media_type         text,
    category           text,
    reason             text,
    threshold_exceeded boolean,
    link               text,
    device             text,
    operating_system   text,
    browser            text,
    remote_address     text,
    payload            jsonb       NOT NULL,
    CONSTRAINT events_key UNIQUE (client_id, type, created_at, event_key)
) PARTITION BY RANGE (created_at);

COMMENT ON TABLE events IS 'One row per Campaign webhook event, stored exactly once; a partition per month of created_at.';
COMMENT ON COLUMN events.event_key IS 'Campaign''s event id, or sha256:<hex> of the canonical event when it has none';
COMMENT ON COLUMN events.payload IS 'The event as received, including fields without a column';

-- Only the indexes the reports need (each one costs every insert; docs/benchmarks.md prices them):
-- per mailing (summary, links, devices), per recipient (status, history), and by arrival.
CREATE INDEX events_mailing ON events (client_id, mailing_id, type);
CREATE INDEX events_recipient ON events (client_id, recipient_id);
CREATE INDEX events_received_at ON events USING brin (received_at);

CREATE TABLE events_default PARTITION OF events DEFAULT;
