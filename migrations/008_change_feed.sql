-- 008: positions a reader can resume from with no gap and no repeat (receiver/storage/feed.py).
--
-- A cut by time cannot do it: a batch that started before a reader's cut and commits after the
-- reader has read is behind the cut and was not seen, so the next read (from the cut) skips it.
-- Transaction ids can: every row here carries the id of the transaction that wrote it (xid8:
-- 64 bits, never wraps), and a reader only returns rows below the oldest transaction still
-- running, pg_snapshot_xmin(pg_current_snapshot()). Every transaction below that one has ended,
-- so nothing can appear below it any more; that horizon is the reader's next cursor.

-- Catalog-only on every partition: existing rows read as NULL (stored before the feed existed;
-- `receiver export --month` has them), new rows get their transaction's id. The default
-- assigns the id if the transaction has none yet (the insert is its first write anyway).
ALTER TABLE events ADD COLUMN xid xid8;
ALTER TABLE events ALTER COLUMN xid SET DEFAULT pg_current_xact_id();

COMMENT ON COLUMN events.xid IS 'The transaction that stored the event: its position in the events feed (null: stored before 008)';

-- The feed reads in xid order from its cursor: a btree, because a reader far behind must find
-- its place without scanning everything after it. xid only grows, so each insert lands at the
-- index's right-hand edge, like a serial key (docs/benchmarks.md prices it). Partial: rows stored
-- before 008 have no position and cost no index entry.
CREATE INDEX events_xid ON events (xid) WHERE xid IS NOT NULL;

-- Every change of a recipient's status, in the order it happened: the CRM's feed. Written by a
-- trigger on recipient_status (below), so every writer (the batch statement, quarantine replay,
-- an older receiver still running during a deploy, a hand-written statement) logs its changes,
-- in the same transaction as the change.
CREATE TABLE status_changes (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The entry's place in the feed: the writer's transaction id, or the position of the
    -- recipient's previous entry if that is later (see log_status_changes). Ties: by id.
    position          xid8        NOT NULL,
    client_id         bigint      NOT NULL,
    recipient_id      text        NOT NULL,
    status            text        NOT NULL,   -- the status after the change
    previous_status   text,                   -- before it; null: the recipient was new
    status_at         timestamptz NOT NULL,   -- the deciding event's created_at
    status_event_type text        NOT NULL,
    mailing_id        bigint,
    status_event_key  text        COLLATE "C" NOT NULL,
    changed_at        timestamptz NOT NULL    -- when the deciding event arrived
);

COMMENT ON TABLE status_changes IS 'Every change of a recipient''s status, in feed order (position, id); `receiver feed status-changes` reads it.';
COMMENT ON COLUMN status_changes.position IS 'Feed order: at least the writing transaction''s id, and never before the recipient''s previous entry';

CREATE INDEX status_changes_position ON status_changes (position, id);
-- The recipient's latest entry, for the next entry's position; and a recipient's history.
CREATE INDEX status_changes_recipient ON status_changes (client_id, recipient_id, position);

-- Why a position may be later than the writer's own id: batches A (xid 100) and B (xid 101)
-- both change recipient R. B takes R's row first and commits; A waits for B's row lock, then
-- changes R again. A's change is the later one, but 100 < 101 would put it first, and a
-- reader applying the feed in order would end with B's status. Taking the later of its own id
-- and R's previous entry keeps one recipient's entries in the order they happened. It is
-- still safe for readers: while A runs, their horizon is at most 100, so nothing at 101 or
-- after has been passed; the previous entry is visible because A held R's row only after B
-- committed. Which entries: a new recipient, or a status that differs from the one before (a
-- later event with the same status moves status_at, and is no change to report).
CREATE FUNCTION log_status_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO status_changes (position, client_id, recipient_id, status, previous_status,
            status_at, status_event_type, mailing_id, status_event_key, changed_at)
        SELECT greatest(pg_current_xact_id(),
                        (SELECT max(c.position) FROM status_changes c
                         WHERE c.client_id = n.client_id AND c.recipient_id = n.recipient_id)),
               n.client_id, n.recipient_id, n.status, NULL, n.status_at, n.status_event_type,
               n.mailing_id, n.status_event_key, n.changed_at
        FROM inserted_statuses n
        ORDER BY n.client_id, n.recipient_id;
    ELSE
        INSERT INTO status_changes (position, client_id, recipient_id, status, previous_status,
            status_at, status_event_type, mailing_id, status_event_key, changed_at)
        SELECT greatest(pg_current_xact_id(),
                        (SELECT max(c.position) FROM status_changes c
                         WHERE c.client_id = n.client_id AND c.recipient_id = n.recipient_id)),
               n.client_id, n.recipient_id, n.status, o.status, n.status_at,
               n.status_event_type, n.mailing_id, n.status_event_key, n.changed_at
        -- An UPDATE changes a row at most once, so the primary key pairs old and new.
        FROM updated_statuses n JOIN replaced_statuses o USING (client_id, recipient_id)
        WHERE n.status IS DISTINCT FROM o.status
        ORDER BY n.client_id, n.recipient_id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER recipient_status_log_inserts AFTER INSERT ON recipient_status
REFERENCING NEW TABLE AS inserted_statuses
FOR EACH STATEMENT EXECUTE FUNCTION log_status_changes();

CREATE TRIGGER recipient_status_log_updates AFTER UPDATE ON recipient_status
REFERENCING OLD TABLE AS replaced_statuses NEW TABLE AS updated_statuses
FOR EACH STATEMENT EXECUTE FUNCTION log_status_changes();

-- The statuses decided before 008 get one entry each (their current status), written after this
-- migration by `receiver migrate` in short batches (receiver/storage/feed.py, seed_status_changes),
-- so that a reader starting from the beginning gets every recipient's status, then every change.
-- The row here is the seed's place, in (client_id, recipient_id) order; none once done.
CREATE TABLE status_changes_seed (
    client_id    bigint NOT NULL,
    recipient_id text   NOT NULL
);

INSERT INTO status_changes_seed
SELECT -9223372036854775808, '' WHERE EXISTS (SELECT FROM recipient_status);
