-- The receiver's whole current schema, in one file to read: every table, index, function,
-- trigger, view and the publication that migrations/001 to 010 leave in a database, with why.
--
-- Hand-written and checked, never applied by the receiver: `receiver migrate` runs the numbered
-- migrations (frozen history; their comments tell how the schema got here), and this file must
-- describe exactly as their result. tests/integration/storage/test_schema.py makes one database
-- each way and compares them by PostgreSQL's catalog (receiver/storage/schema.py: columns,
-- constraints, indexes, functions, triggers, views, comments, the publication, partitions, the
-- ledger's and the place tables' rows). After a new migration, write its end state here and run
--
--     python -m receiver.storage.schema [SERVER_URL]
--
-- until it prints no difference (SERVER_URL: a server it may create scratch databases on;
-- without one it starts an embedded PostgreSQL).
--
-- Not here: the monthly partitions of `events` (events_2026_12, ...), made at run time by
-- `receiver migrate`, `receiver maintain` and every web worker (receiver/storage/partitions.py),
-- each the month's range with the indexes below; and the table events_unpartitioned of an
-- upgrade from 002, emptied and dropped by `receiver migrate`.


-- ---------------------------------------------------------------------------------------------
-- Events
-- ---------------------------------------------------------------------------------------------

-- One row per event, partitioned by month of the event's own time (created_at): a batch of
-- today's events touches the current month's indexes only, and retention drops whole months
-- (`receiver maintain`) instead of deleting rows.
--
-- Stored exactly once: a re-delivered event keeps its `created`, so it lands in the same
-- partition, and events_key makes it a duplicate (the key must include the partition key). It
-- leads with client_id (the column `events` would be distributed by across servers), then type
-- and created_at: within a client and type new events have ever later times, so the key's
-- index grows at its right-hand edge, and "the latest sent event of client X" is one probe.
CREATE TABLE events (
    -- Campaign's event id when the event has one, otherwise 'sha256:' and the hex digest of
    -- the event's canonical JSON.
    event_key          text        NOT NULL,
    event_id           text,                      -- Campaign's `id`, when present
    client_id          bigint      NOT NULL,
    type               text        NOT NULL,      -- open, click, bounce, ... or any newer type
    created_at         timestamptz NOT NULL,      -- the event's `created` (epoch ms)
    received_at        timestamptz NOT NULL DEFAULT now(),
    mailing_id         bigint,
    user_list_id       bigint,
    subscription_id    bigint,
    recipient_id       text,
    mail_id            text,
    media_type         text,                      -- EMAIL, SMS, ...
    category           text,                      -- bounce: softbounce / hardbounce
    reason             text,                      -- bounce: spam-related / other
    threshold_exceeded boolean,                   -- bounce
    link               text,                      -- click: the clicked URL
    device             text,                      -- open / click
    operating_system   text,                      -- open / click
    browser            text,                      -- open / click
    remote_address     text,                      -- open / click
    payload            jsonb       NOT NULL,      -- the whole event as received
    -- The events feed's position (receiver/storage/feed.py): the id of the transaction that
    -- stored the row. A reader returns rows below the oldest transaction still running, so it
    -- resumes with no gap and no repeat. Null on rows stored before 008.
    xid                xid8        DEFAULT pg_current_xact_id(),
    CONSTRAINT events_key UNIQUE (client_id, type, created_at, event_key)
) PARTITION BY RANGE (created_at);

COMMENT ON TABLE events IS 'One row per Campaign webhook event, stored exactly once; a partition per month of created_at.';
COMMENT ON COLUMN events.event_key IS 'Campaign''s event id, or sha256:<hex> of the canonical event when it has none';
COMMENT ON COLUMN events.payload IS 'The event as received, including fields without a column';
COMMENT ON COLUMN events.xid IS 'The transaction that stored the event: its position in the events feed (null: stored before 008)';

-- Any time without a monthly partition (far past, far future, a month not created yet) lands
-- here, so no valid event is ever refused; `receiver maintain` moves such rows into their
-- month's partition when it creates it.
CREATE TABLE events_default PARTITION OF events DEFAULT;

-- Only the indexes the reports and the feed need (each one costs every insert; docs/benchmarks.md
-- prices them): per mailing (summary, links, devices), per recipient (status, history), by
-- arrival (BRIN: rows arrive in that order), and the feed's order. events_xid is partial: rows
-- stored before 008 have no position and cost no entry.
CREATE INDEX events_mailing ON events (client_id, mailing_id, type);
CREATE INDEX events_recipient ON events (client_id, recipient_id);
CREATE INDEX events_received_at ON events USING brin (received_at);
CREATE INDEX events_xid ON events (xid) WHERE xid IS NOT NULL;


-- ---------------------------------------------------------------------------------------------
-- Quarantine and re-deliveries
-- ---------------------------------------------------------------------------------------------

-- What could not be stored as an event. The sender retries anything but 200 every 10 s for
-- three days: the same bad content is kept once and counted, not stored per retry. Rows are
-- never deleted: `receiver quarantine replay` marks a row resolved once everything in it is
-- stored, and the reason and the content stay as the record of what happened.
CREATE TABLE quarantine (
    id                 bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind               text        NOT NULL CHECK (kind IN ('body', 'event')),
    reason             text        NOT NULL,
    content            bytea       NOT NULL,      -- the raw body, or the event re-serialised
    content_sha256     bytea       NOT NULL UNIQUE,
    received_at        timestamptz NOT NULL DEFAULT now(),
    last_received_at   timestamptz NOT NULL DEFAULT now(),
    times_received     integer     NOT NULL DEFAULT 1,
    resolved_at        timestamptz,
    resolution         text,
    -- Resolved means both: when, and what the replay did (stored / duplicate counts).
    CONSTRAINT quarantine_resolution_complete CHECK ((resolved_at IS NULL) = (resolution IS NULL))
);

COMMENT ON TABLE quarantine IS 'Content that could not be stored as an event, with the reason; replayable.';
COMMENT ON COLUMN quarantine.resolved_at IS 'When a replay stored everything in the row; null while it still needs attention';
COMMENT ON COLUMN quarantine.resolution IS 'What the replay did, e.g. "replayed: 1 stored, 0 duplicates"';

-- `quarantine list` and `quarantine replay` look at unresolved rows; resolved ones pile up.
CREATE INDEX quarantine_unresolved ON quarantine (id) WHERE resolved_at IS NULL;

-- Re-delivered batches, recognised before they are parsed or validated
-- (receiver/storage/deliveries.py). A row says: a body with this digest was committed whole,
-- every event of it stored (none quarantined), so its re-delivery is answered 200 at once. It
-- is written by the statement that stores the batch (both or neither). Rows live four days
-- (longer than the sender's three-day retry window), deleted by `receiver maintain` and by
-- every worker's hourly upkeep.
CREATE TABLE deliveries (
    digest      bytea       PRIMARY KEY,  -- BLAKE2b-256 of the request body as received
    events      integer     NOT NULL,     -- events in the batch (all stored or duplicates)
    counts      jsonb       NOT NULL,     -- events per type label, for the duplicate metrics
    received_at timestamptz NOT NULL DEFAULT now()
);
-- Deleted by age in insertion order: a BRIN index costs the batch statement almost nothing.
CREATE INDEX deliveries_received_at ON deliveries USING brin (received_at);


-- ---------------------------------------------------------------------------------------------
-- Recipient status and its change feed
-- ---------------------------------------------------------------------------------------------

-- Events arrive out of order and more than once, so a status is decided by the events' own
-- time (created_at), never by arrival: the latest status-changing event by created_at wins; at
-- the same millisecond the more protective status wins (complained > blocklisted > hardbounced
-- > unsubscribed > subscribed), then the larger event_key (byte order). The batch statement
-- (receiver/storage/events.py) and the backfill (receiver/storage/recipient_status.py) both use
-- these two functions, so they cannot disagree.

-- The status an event sets, or null for an event that changes none (opens, clicks, sent, soft
-- bounces below Campaign's threshold). A soft bounce with thresholdExceeded = true is Campaign
-- giving up on the address: treated as a hard bounce.
CREATE FUNCTION event_status(type text, category text, threshold_exceeded boolean)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN type IN ('singleoptin', 'doubleoptin', 'confirmedoptin') THEN 'subscribed'
        WHEN type = 'unsubscribe' THEN 'unsubscribed'
        WHEN type = 'bounce' AND (category = 'hardbounce' OR threshold_exceeded)
            THEN 'hardbounced'
        WHEN type = 'spamcomplaint' THEN 'complained'
        WHEN type IN ('blocklist', 'filteredbyblocklist') THEN 'blocklisted'
    END
$$;

-- The tie-break between statuses decided at the same millisecond: the more protective wins.
CREATE FUNCTION status_rank(status text)
RETURNS smallint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE status
        WHEN 'subscribed' THEN 1 WHEN 'unsubscribed' THEN 2 WHEN 'hardbounced' THEN 3
        WHEN 'blocklisted' THEN 4 WHEN 'complained' THEN 5
    END::smallint
$$;

-- Kept current by the batch statement itself, in the same transaction as the events.
CREATE TABLE recipient_status (
    client_id         bigint      NOT NULL,
    recipient_id      text        NOT NULL,
    status            text        NOT NULL CHECK (status IN
                          ('subscribed', 'unsubscribed', 'hardbounced', 'complained', 'blocklisted')),
    status_at         timestamptz NOT NULL,   -- the deciding event's created_at
    status_event_type text        NOT NULL,   -- its type (bounce, unsubscribe, doubleoptin, ...)
    mailing_id        bigint,                 -- its mailing, when it has one
    -- "C": the tie-break compares bytes, the same on every server whatever its locale.
    status_event_key  text        COLLATE "C" NOT NULL,
    status_rank       smallint    NOT NULL,
    changed_at        timestamptz NOT NULL,   -- when the deciding event arrived (received_at)
    suppress          boolean     GENERATED ALWAYS AS (status <> 'subscribed') STORED,
    PRIMARY KEY (client_id, recipient_id)
);

COMMENT ON TABLE recipient_status IS 'The current subscription status of each recipient, decided by the latest status-changing event by created_at.';
COMMENT ON COLUMN recipient_status.changed_at IS 'Arrival time of the deciding event: `suppressions --since` reads by it, so a late event is never missed';

-- `receiver report suppressions --since T`, every few minutes: the few rows changed since T.
CREATE INDEX recipient_status_changed_at ON recipient_status (changed_at);

-- Every change of a recipient's status, in the order it happened: the CRM's feed
-- (receiver/storage/feed.py). Written by the triggers below, so every writer (the batch
-- statement, quarantine replay, an older receiver during a deploy, a hand-written statement)
-- logs its changes, in the same transaction as the change.
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
-- changes R again. A's change is the later one, but 100 < 101 would put it first. Taking the
-- later of its own id and R's previous entry keeps one recipient's entries in the order they
-- happened, and is still safe for readers: while A runs, their horizon is at most 100. Which
-- entries: a new recipient, or a status that differs from the one before (a later event with
-- the same status moves status_at, and is no change to report).
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


-- ---------------------------------------------------------------------------------------------
-- Mailing counts, kept at ingest
-- ---------------------------------------------------------------------------------------------

-- mailing_summary is summed from counts kept as events arrive, not from the events themselves
-- (reading every event of a busy client's month is too slow for the report; docs/benchmarks.md:
-- Reporting). One row per (statement, mailing) that stored events of it, never updated:
-- insert-only on purpose, since one counter row per mailing would be a hot row that every
-- batch of a big send updates, serialising the workers on its lock. `receiver maintain` rolls a
-- mailing's rows up into one.
CREATE TABLE mailing_counts (
    client_id       bigint      NOT NULL,
    mailing_id      bigint      NOT NULL,
    sent            bigint      NOT NULL,
    opens           bigint      NOT NULL,
    unique_opens    bigint      NOT NULL,
    clicks          bigint      NOT NULL,
    unique_clicks   bigint      NOT NULL,
    hard_bounces    bigint      NOT NULL,
    soft_bounces    bigint      NOT NULL,
    unsubscribes    bigint      NOT NULL,
    spam_complaints bigint      NOT NULL,
    first_event_at  timestamptz NOT NULL,
    last_event_at   timestamptz NOT NULL
);

CREATE INDEX mailing_counts_mailing ON mailing_counts (client_id, mailing_id);

COMMENT ON TABLE mailing_counts IS 'Counts of stored events per mailing, one insert-only row per statement that stored some; mailing_summary sums them.';

-- One row per (client, mailing, open|click, recipient) seen: inserting with ON CONFLICT DO
-- NOTHING tells which responders are new, and only those add to the unique counts; a
-- concurrent insert of the same responder waits for the other, so a recipient is counted once.
-- NULLS NOT DISTINCT: the events without a recipient count as one recipient.
CREATE TABLE mailing_responders (
    client_id    bigint NOT NULL,
    mailing_id   bigint NOT NULL,
    kind         text   NOT NULL CHECK (kind IN ('open', 'click')),
    recipient_id text,
    CONSTRAINT mailing_responders_key
        UNIQUE NULLS NOT DISTINCT (client_id, mailing_id, kind, recipient_id)
);

COMMENT ON TABLE mailing_responders IS 'Each recipient that opened or clicked a mailing, once: the unique counts of mailing_counts.';

-- The counts of the events a statement actually inserted (its transition table): a duplicate
-- that ON CONFLICT skipped is not in it, so a re-delivery counts nothing, and every writer
-- keeps the counts right, in the same transaction as the events. Moving rows between
-- partitions inserts into the partitions themselves, which does not fire it: those events were
-- counted when they arrived.
CREATE FUNCTION count_mailing_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Shared, so batches never wait for each other; only recount_mailing() of one of these
    -- mailings (exclusive, below) waits for this transaction, or makes it wait.
    PERFORM pg_advisory_xact_lock_shared(1919247222, hashtext(client_id || '/' || mailing_id))
    FROM (SELECT DISTINCT client_id, mailing_id FROM new_events WHERE mailing_id IS NOT NULL) m;
    WITH responders AS (
        -- Sorted, so that two concurrent statements take the key's locks in the same order.
        INSERT INTO mailing_responders (client_id, mailing_id, kind, recipient_id)
        SELECT DISTINCT client_id, mailing_id, type, recipient_id FROM new_events
        WHERE type IN ('open', 'click') AND mailing_id IS NOT NULL
        ORDER BY 1, 2, 3, 4
        ON CONFLICT DO NOTHING
        RETURNING client_id, mailing_id, kind
    ), firsts AS (
        SELECT client_id, mailing_id,
               count(*) FILTER (WHERE kind = 'open') AS unique_opens,
               count(*) FILTER (WHERE kind = 'click') AS unique_clicks
        FROM responders GROUP BY 1, 2
    )
    INSERT INTO mailing_counts
    SELECT e.client_id, e.mailing_id, e.sent, e.opens, coalesce(f.unique_opens, 0), e.clicks,
           coalesce(f.unique_clicks, 0), e.hard_bounces, e.soft_bounces, e.unsubscribes,
           e.spam_complaints, e.first_event_at, e.last_event_at
    FROM (
        SELECT client_id, mailing_id,
               count(*) FILTER (WHERE type = 'sent') AS sent,
               count(*) FILTER (WHERE type = 'open') AS opens,
               count(*) FILTER (WHERE type = 'click') AS clicks,
               count(*) FILTER (WHERE type = 'bounce' AND category = 'hardbounce') AS hard_bounces,
               count(*) FILTER (WHERE type = 'bounce' AND category IS DISTINCT FROM 'hardbounce')
                   AS soft_bounces,
               count(*) FILTER (WHERE type = 'unsubscribe') AS unsubscribes,
               count(*) FILTER (WHERE type = 'spamcomplaint') AS spam_complaints,
               min(created_at) AS first_event_at, max(created_at) AS last_event_at
        FROM new_events WHERE mailing_id IS NOT NULL
        GROUP BY 1, 2
    ) e
    LEFT JOIN firsts f USING (client_id, mailing_id);
    RETURN NULL;
END
$$;

CREATE TRIGGER events_count_mailings AFTER INSERT ON events
REFERENCING NEW TABLE AS new_events
FOR EACH STATEMENT EXECUTE FUNCTION count_mailing_events();

-- One mailing's counts from its events, replacing what was there: the backfill of an upgrade,
-- and the way back should a mailing's counts ever be in doubt (`SELECT recount_mailing(client_id,
-- mailing_id)`). The mailing's advisory lock, exclusive, waits for the transactions whose
-- trigger counted events of the mailing and makes later ones wait until it commits: no event
-- counted twice or missed. (1919247222 is "recv" in ASCII: this lock's class in pg_locks.)
CREATE FUNCTION recount_mailing(p_client_id bigint, p_mailing_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1919247222, hashtext(p_client_id || '/' || p_mailing_id));
    DELETE FROM mailing_responders WHERE client_id = p_client_id AND mailing_id = p_mailing_id;
    DELETE FROM mailing_counts WHERE client_id = p_client_id AND mailing_id = p_mailing_id;
    INSERT INTO mailing_responders (client_id, mailing_id, kind, recipient_id)
    SELECT DISTINCT client_id, mailing_id, type, recipient_id FROM events
    WHERE client_id = p_client_id AND mailing_id = p_mailing_id AND type IN ('open', 'click');
    INSERT INTO mailing_counts
    SELECT client_id, mailing_id,
           count(*) FILTER (WHERE type = 'sent'),
           count(*) FILTER (WHERE type = 'open'),
           (SELECT count(*) FROM mailing_responders r WHERE r.client_id = p_client_id
              AND r.mailing_id = p_mailing_id AND r.kind = 'open'),
           count(*) FILTER (WHERE type = 'click'),
           (SELECT count(*) FROM mailing_responders r WHERE r.client_id = p_client_id
              AND r.mailing_id = p_mailing_id AND r.kind = 'click'),
           count(*) FILTER (WHERE type = 'bounce' AND category = 'hardbounce'),
           count(*) FILTER (WHERE type = 'bounce' AND category IS DISTINCT FROM 'hardbounce'),
           count(*) FILTER (WHERE type = 'unsubscribe'),
           count(*) FILTER (WHERE type = 'spamcomplaint'),
           min(created_at), max(created_at)
    FROM events WHERE client_id = p_client_id AND mailing_id = p_mailing_id
    GROUP BY client_id, mailing_id;
END
$$;


-- ---------------------------------------------------------------------------------------------
-- Reporting (docs/reporting.md documents every column)
-- ---------------------------------------------------------------------------------------------

-- One row per mailing. Unique counts are distinct recipients; a rate with no `sent` is null.
CREATE VIEW mailing_summary AS
SELECT client_id, mailing_id, sent, opens, unique_opens, clicks, unique_clicks,
       hard_bounces, soft_bounces, unsubscribes, spam_complaints,
       round(unique_opens::numeric / nullif(sent, 0), 4) AS open_rate,
       round(unique_clicks::numeric / nullif(sent, 0), 4) AS click_rate,
       round((hard_bounces + soft_bounces)::numeric / nullif(sent, 0), 4) AS bounce_rate,
       round(unsubscribes::numeric / nullif(sent, 0), 4) AS unsubscribe_rate,
       round(spam_complaints::numeric / nullif(sent, 0), 4) AS complaint_rate,
       round(unique_clicks::numeric / nullif(unique_opens, 0), 4) AS click_to_open_rate,
       first_event_at, last_event_at
FROM (
    SELECT client_id, mailing_id,
           sum(sent)::bigint AS sent, sum(opens)::bigint AS opens,
           sum(unique_opens)::bigint AS unique_opens, sum(clicks)::bigint AS clicks,
           sum(unique_clicks)::bigint AS unique_clicks,
           sum(hard_bounces)::bigint AS hard_bounces, sum(soft_bounces)::bigint AS soft_bounces,
           sum(unsubscribes)::bigint AS unsubscribes,
           sum(spam_complaints)::bigint AS spam_complaints,
           min(first_event_at) AS first_event_at, max(last_event_at) AS last_event_at
    FROM mailing_counts
    GROUP BY client_id, mailing_id
) per_mailing;

COMMENT ON VIEW mailing_summary IS 'One row per (client_id, mailing_id): the funnel and its rates over sent.';

-- The summaries of a client's mailings that sent in [from, to): the mailings are found by
-- skipping through events_mailing (a recursive CTE, one probe per mailing), then summarised.
-- plpgsql, so that the list reaches the view as a parameter, which PostgreSQL pushes into its
-- GROUP BY as an index condition on mailing_counts_mailing. JIT off: compiling this aggregate
-- cost more than running it (docs/benchmarks.md: Reporting).
CREATE FUNCTION mailing_summaries(p_client_id bigint, p_from timestamptz, p_to timestamptz)
RETURNS SETOF mailing_summary LANGUAGE plpgsql STABLE
SET jit = off AS $$
DECLARE
    -- Each step: the client's next mailing (by mailing_id) with a `sent` in [from, to).
    mailings bigint[] := ARRAY(
        WITH RECURSIVE sent (mailing_id) AS (
            SELECT (SELECT e.mailing_id FROM events e
                    WHERE e.client_id = p_client_id AND e.mailing_id IS NOT NULL
                      AND e.type = 'sent' AND e.created_at >= p_from AND e.created_at < p_to
                    ORDER BY e.mailing_id LIMIT 1)
            UNION ALL
            SELECT (SELECT e.mailing_id FROM events e
                    WHERE e.client_id = p_client_id AND e.mailing_id > sent.mailing_id
                      AND e.type = 'sent' AND e.created_at >= p_from AND e.created_at < p_to
                    ORDER BY e.mailing_id LIMIT 1)
            FROM sent WHERE sent.mailing_id IS NOT NULL
        )
        SELECT mailing_id FROM sent WHERE mailing_id IS NOT NULL);
BEGIN
    RETURN QUERY SELECT * FROM mailing_summary
                 WHERE client_id = p_client_id AND mailing_id = ANY (mailings)
                 ORDER BY first_event_at DESC, mailing_id;
END
$$;

-- Per mailing: each clicked link, its clicks and distinct clickers.
CREATE VIEW mailing_links AS
SELECT client_id, mailing_id, link, count(*) AS clicks, count(DISTINCT recipient_id) AS unique_clickers
FROM events
WHERE type = 'click' AND mailing_id IS NOT NULL
GROUP BY client_id, mailing_id, link;

COMMENT ON VIEW mailing_links IS 'Per mailing and clicked link: clicks and distinct clickers.';

-- Per mailing: opens by device, operating system and browser (null: the event did not say).
CREATE VIEW mailing_devices AS
SELECT client_id, mailing_id, device, operating_system, browser,
       count(*) AS opens, count(DISTINCT recipient_id) AS unique_openers
FROM events
WHERE type = 'open' AND mailing_id IS NOT NULL
GROUP BY client_id, mailing_id, device, operating_system, browser;

COMMENT ON VIEW mailing_devices IS 'Per mailing: opens by device, operating system and browser.';

-- Dispatch: `sent` per minute of created_at, and how late those events arrived.
CREATE VIEW dispatch_by_minute AS
SELECT client_id, mailing_id, date_trunc('minute', created_at) AS minute, count(*) AS sent,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM received_at - created_at))
           AS delay_p50_s,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM received_at - created_at))
           AS delay_p95_s
FROM events
WHERE type = 'sent'
GROUP BY client_id, mailing_id, date_trunc('minute', created_at);

COMMENT ON VIEW dispatch_by_minute IS 'Sent events per (client, mailing, minute of created_at), with the arrival delay.';

-- The same for [from, to) only. A filter on the view's `minute` cannot reach created_at (it is
-- an expression of it), so it would read every month; this one reads only the months named.
-- LANGUAGE sql and STABLE: inlined into the caller's query, the bounds prune partitions.
CREATE FUNCTION dispatch_between(p_from timestamptz, p_to timestamptz)
RETURNS SETOF dispatch_by_minute LANGUAGE sql STABLE AS $$
    SELECT client_id, mailing_id, date_trunc('minute', created_at), count(*),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM received_at - created_at)),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM received_at - created_at))
    FROM events
    WHERE type = 'sent' AND created_at >= p_from AND created_at < p_to
    GROUP BY client_id, mailing_id, date_trunc('minute', created_at)
$$;

-- Seconds since each client's last `sent`. The unique key leads (client_id, type, created_at),
-- so each max() is one backward index probe per partition; the clients are found by skipping
-- through the same index (a recursive CTE, one probe per client), not by reading `events`.
CREATE VIEW client_last_sent AS
WITH RECURSIVE clients (client_id) AS (
    SELECT min(client_id) FROM events
    UNION ALL
    SELECT (SELECT min(e.client_id) FROM events e WHERE e.client_id > clients.client_id)
    FROM clients WHERE clients.client_id IS NOT NULL
)
SELECT client_id, last_sent_at, extract(epoch FROM now() - last_sent_at) AS seconds_since_last_sent
FROM (SELECT client_id,
             (SELECT max(e.created_at) FROM events e
              WHERE e.client_id = clients.client_id AND e.type = 'sent') AS last_sent_at
      FROM clients WHERE client_id IS NOT NULL) latest;

COMMENT ON VIEW client_last_sent IS 'Per client: the created_at of its latest sent event, and the seconds since.';

-- Suppressions (every status but subscribed) per day of the deciding event, for the dashboard.
CREATE VIEW suppressions_by_day AS
SELECT client_id, date_trunc('day', status_at) AS day, status, count(*) AS recipients
FROM recipient_status
WHERE suppress
GROUP BY client_id, date_trunc('day', status_at), status;

COMMENT ON VIEW suppressions_by_day IS 'Recipients currently suppressed, by the day their status was decided.';


-- ---------------------------------------------------------------------------------------------
-- What Campaign sends (receiver/storage/shapes.py, docs/monitoring.md "Campaign changes")
-- ---------------------------------------------------------------------------------------------

-- Learned per client off the request path: a pass reads the events stored since its place in
-- the events feed and counts what it finds, in the same transaction as it moves its place (each
-- stored event counted once). Nothing personal is kept: examples are masked.
CREATE TABLE event_shapes (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_id     bigint      NOT NULL,
    event_type    text        NOT NULL,
    field         text,                   -- a top-level field; null: the row of the type itself
    kind          text,                   -- the field's JSON kind: string, number, boolean, ...
    value         text,                   -- a value of an enumeration (bounce category, ...)
    events        bigint      NOT NULL,   -- events counted with it
    first_seen_at timestamptz NOT NULL,   -- arrival (received_at) of the first of them
    last_seen_at  timestamptz NOT NULL,   -- ... and of the latest
    -- What its first sight was: null when documented by the vendor or part of the client's
    -- first day (its baseline); otherwise the change, until `receiver report schema --accept`.
    change        text        CHECK (change IN ('new_type', 'new_field', 'kind_changed', 'new_value')),
    reviewed_at   timestamptz,            -- accepted by an operator (change, or a silent type)
    example       jsonb,                  -- one event that showed it, masked (changes, types)
    -- Types: arrived on most days of the two weeks up to last_seen_at (frozen once silent).
    daily         boolean     NOT NULL DEFAULT false,
    CONSTRAINT event_shapes_key UNIQUE NULLS NOT DISTINCT (client_id, event_type, field, kind, value)
);

COMMENT ON TABLE event_shapes IS 'What Campaign sends, per client: event types, top-level fields and their JSON kinds, enumeration values; `receiver report schema` reads it.';
COMMENT ON COLUMN event_shapes.change IS 'new_type, new_field, kind_changed or new_value when first seen after the client''s baseline and undocumented; null otherwise';

-- Events per (client, type) per arrival day (UTC), for `daily`; two weeks and a day are kept.
CREATE TABLE event_type_days (
    client_id  bigint NOT NULL,
    event_type text   NOT NULL,
    day        date   NOT NULL,
    events     bigint NOT NULL,
    PRIMARY KEY (client_id, event_type, day)
);

-- The pass's place in the events feed; no row until the first pass, whose start also ends the
-- baseline of everything stored before it (an upgrade does not report years of history as new).
CREATE TABLE event_shapes_position (
    position      xid8        NOT NULL,   -- events below it (feed order) are counted
    started_at    timestamptz NOT NULL,   -- the first pass
    last_pass_at  timestamptz NOT NULL,   -- the start of the latest pass (one a minute)
    learned_until timestamptz             -- every event that arrived before it is counted
);


-- ---------------------------------------------------------------------------------------------
-- Change data capture (docs/cdc.md)
-- ---------------------------------------------------------------------------------------------

-- For Debezium, Fivetran, Airbyte, Datastream or a PostgreSQL subscriber. Inserts and updates,
-- never deletes: `receiver maintain` moves stray rows out of events_default by DELETE into a
-- table attached afterwards, which a subscriber would see as lost rows (and `events` has no
-- replica identity a delete could be published with). publish_via_partition_root: subscribers
-- see one table, `events`, whatever months exist here. Migration 009 creates it only where the
-- migrating role may, and leaves an existing publication of this name as it is.
CREATE PUBLICATION receiver FOR TABLE events, recipient_status, status_changes
WITH (publish_via_partition_root = true, publish = 'insert, update');

COMMENT ON PUBLICATION receiver IS 'Change data capture of the receiver''s tables (migration 009): inserts and updates, never deletes';


-- ---------------------------------------------------------------------------------------------
-- Upgrade backfills: each table holds the place of a backfill `receiver migrate` runs after
-- the migrations, in short transactions, resuming where an interruption left it. Empty once
-- done, as on every fresh database.
-- ---------------------------------------------------------------------------------------------

-- recipient_status from the events stored before 004 (receiver/storage/recipient_status.py).
CREATE TABLE recipient_status_backfill (
    relation   text,                      -- the table being read (null: not started)
    next_block bigint NOT NULL DEFAULT 0  -- its first block not read yet
);

-- mailing_counts of the mailings stored before 006 (receiver/storage/mailing_counts.py): the
-- last mailing recounted, in (client_id, mailing_id) order.
CREATE TABLE mailing_counts_backfill (
    client_id  bigint NOT NULL,
    mailing_id bigint NOT NULL
);

-- One status_changes entry for each status decided before 008 (receiver/storage/feed.py,
-- seed_status_changes), in (client_id, recipient_id) order.
CREATE TABLE status_changes_seed (
    client_id    bigint NOT NULL,
    recipient_id text   NOT NULL
);


-- ---------------------------------------------------------------------------------------------
-- The ledger of applied migrations (receiver/storage/migrate.py)
-- ---------------------------------------------------------------------------------------------

CREATE TABLE schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO schema_migrations (version, name) VALUES
    (1, 'initial'),
    (2, 'quarantine_resolution'),
    (3, 'partition_events'),
    (4, 'reporting'),
    (5, 'faster_mailing_summaries'),
    (6, 'mailing_counts'),
    (7, 'deliveries'),
    (8, 'change_feed'),
    (9, 'cdc_publication'),
    (10, 'event_shapes');
