-- 004: reporting. The status of every recipient (a table, kept current by the batch insert
-- itself: receiver/storage/events.py), and views for campaign reporting and dispatch
-- monitoring over `events`. docs/reporting.md documents every column.
--
-- Events arrive out of order and more than once, so a status is decided by the events' own
-- time (created_at), never by arrival: the latest status-changing event by created_at wins;
-- at the same millisecond the more protective status wins (complained > blocklisted >
-- hardbounced > unsubscribed > subscribed), then the larger event_key (byte order). Both the
-- insert statement and the backfill below use the two functions here, so they cannot disagree.

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

-- The backfill: the statuses decided by the events already stored (and by those 003 has not
-- moved out of the unpartitioned table yet) are filled in after this migration's transaction,
-- in short batches, by `receiver migrate` (receiver/storage/recipient_status.py), with the
-- batch insert's own statement: in one statement here, an upgrade from 002 held 003's locks on
-- `events` for the whole table's scan, and ingest answered 503 until it ended. This row says
-- where the backfill is; `receiver migrate` resumes from it and deletes it once done.
CREATE TABLE recipient_status_backfill (
    relation   text,                      -- the table being read (null: not started)
    next_block bigint NOT NULL DEFAULT 0  -- its first block not read yet
);
INSERT INTO recipient_status_backfill (relation) VALUES (NULL);

-- One row per mailing. Unique counts are distinct recipients; a rate with no `sent` is null.
-- Grouped by recipient first: one hash aggregate instead of a sort per count(DISTINCT).
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
           sum(sent) AS sent, sum(opens) AS opens, count(*) FILTER (WHERE opens > 0) AS unique_opens,
           sum(clicks) AS clicks, count(*) FILTER (WHERE clicks > 0) AS unique_clicks,
           sum(hard_bounces) AS hard_bounces, sum(soft_bounces) AS soft_bounces,
           sum(unsubscribes) AS unsubscribes, sum(spam_complaints) AS spam_complaints,
           min(first_event_at) AS first_event_at, max(last_event_at) AS last_event_at
    FROM (
        SELECT client_id, mailing_id, recipient_id,
               count(*) FILTER (WHERE type = 'sent') AS sent,
               count(*) FILTER (WHERE type = 'open') AS opens,
               count(*) FILTER (WHERE type = 'click') AS clicks,
               count(*) FILTER (WHERE type = 'bounce' AND category = 'hardbounce') AS hard_bounces,
               count(*) FILTER (WHERE type = 'bounce' AND category IS DISTINCT FROM 'hardbounce')
                   AS soft_bounces,
               count(*) FILTER (WHERE type = 'unsubscribe') AS unsubscribes,
               count(*) FILTER (WHERE type = 'spamcomplaint') AS spam_complaints,
               min(created_at) AS first_event_at, max(created_at) AS last_event_at
        FROM events
        WHERE mailing_id IS NOT NULL
        GROUP BY client_id, mailing_id, recipient_id
    ) per_recipient
    GROUP BY client_id, mailing_id
) per_mailing;

COMMENT ON VIEW mailing_summary IS 'One row per (client_id, mailing_id): the funnel and its rates over sent.';

-- The summaries of a client's mailings that sent in [from, to): the mailings are found with
-- the unique key (client_id, type, created_at) first, then summarised through events_mailing.
-- plpgsql so that the list reaches the view as a parameter, which PostgreSQL pushes into its
-- GROUP BY (a subquery in the filter would not be, and would aggregate the whole client).
CREATE FUNCTION mailing_summaries(p_client_id bigint, p_from timestamptz, p_to timestamptz)
RETURNS SETOF mailing_summary LANGUAGE plpgsql STABLE
-- JIT compiled this aggregate for 5.5 s of its 11 s on 20M events (docs/benchmarks.md: Reporting).
SET jit = off AS $$
DECLARE
    mailings bigint[] := ARRAY(
        SELECT DISTINCT mailing_id FROM events
        WHERE client_id = p_client_id AND type = 'sent'
          AND created_at >= p_from AND created_at < p_to AND mailing_id IS NOT NULL);
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
