-- 006: mailing_summary from counts kept at ingest, not from the events (docs/benchmarks.md: Reporting).
--
-- 005 still read every event of every mailing asked for: 2.1M rows for a busy client's month,
-- 2.07 s on 20M events, over the 2 s the report must take. The figures are counts, and counts
-- add up, so they are now kept as the events arrive:
--
-- * mailing_counts: one row of counts per (statement, mailing) that stored events of it, never
--   updated. Insert-only on purpose: one counter row per mailing would be a hot row that every
--   batch of a big send updates, serialising concurrent workers on its row lock. A mailing's
--   summary is the sum of its rows (a few thousand at most; `receiver maintain` rolls them up).
-- * mailing_responders: one row per (client, mailing, open|click, recipient) seen. Inserting with
--   ON CONFLICT DO NOTHING tells which responders are new, and only those add to unique_opens
--   and unique_clicks; a concurrent insert of the same responder waits for the other to commit
--   or roll back, so a recipient is counted once whatever the interleaving. NULLS NOT DISTINCT:
--   the events without a recipient count as one recipient, as in 004.
--
-- Both are kept by a statement-level trigger on `events` over the rows the statement actually
-- inserted (its transition table): a duplicate that ON CONFLICT skipped is not in it, so a
-- re-delivery counts nothing, and every writer (the batch statement, its per-event fallback,
-- quarantine replay, an older receiver still running during a deploy, a hand-written INSERT)
-- keeps the counts right. Same transaction as the events: no 200 before the counts are in.
-- Moving rows between partitions (partitions.py) inserts into the partitions themselves, which
-- does not fire it: those events were counted when they arrived.
--
-- The events stored before this migration are counted afterwards, by `receiver migrate`, one
-- mailing at a time (recount_mailing, below).

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

CREATE TABLE mailing_responders (
    client_id    bigint NOT NULL,
    mailing_id   bigint NOT NULL,
    kind         text   NOT NULL CHECK (kind IN ('open', 'click')),
    recipient_id text,
    CONSTRAINT mailing_responders_key
        UNIQUE NULLS NOT DISTINCT (client_id, mailing_id, kind, recipient_id)
);

COMMENT ON TABLE mailing_responders IS 'Each recipient that opened or clicked a mailing, once: the unique counts of mailing_counts.';

-- The counts of the events in `new_events`, given the responders they added.
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

-- One mailing's counts from its events, replacing what was there: the backfill (`receiver
-- migrate` runs it for every mailing stored before this migration, see below) and the way back
-- should a mailing's counts ever be in doubt (`SELECT recount_mailing(client_id, mailing_id)`).
-- The mailing's advisory lock, exclusive, makes it wait for the transactions whose trigger
-- counted events of the mailing (then it sees their events and replaces their counts), and
-- makes the triggers of later ones wait until it commits (it does not see their events, they
-- count them after): no event counted twice or missed. Batches of other mailings never wait.
-- (1919247222 is "recv" in ASCII: this lock's class in pg_locks.)
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

-- The backfill's place: the last mailing recounted, in (client_id, mailing_id) order. One row
-- while the backfill is to do, none once done. It runs after this migration, one mailing per
-- transaction, so an interruption resumes where it was, and this migration's own transaction
-- stays short (a whole-table recount in it held inserts back for 11 min on 20M events).
-- Until it is done, a mailing stored before it has only the counts of what arrived since.
CREATE TABLE mailing_counts_backfill (
    client_id  bigint NOT NULL,
    mailing_id bigint NOT NULL
);

INSERT INTO mailing_counts_backfill
SELECT -9223372036854775808, -9223372036854775808
WHERE EXISTS (SELECT FROM events WHERE mailing_id IS NOT NULL);

DROP FUNCTION mailing_summaries(bigint, timestamptz, timestamptz);
DROP VIEW mailing_summary;

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

-- As in 005: the mailings found by skipping through events_mailing, then their summaries. The
-- list reaches the view as a parameter, which PostgreSQL pushes into the GROUP BY as an index
-- condition on mailing_counts_mailing.
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
