-- 001: the events table users report from, and the quarantine for what could not be an event.

CREATE TABLE events (
    -- Idempotency: Campaign's event id when the event has one, otherwise 'sha256:' and the hex
    -- digest of the event's canonical JSON. Unique per client and type (see events_key below).
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
    CONSTRAINT events_key UNIQUE (client_id, type, event_key)
);

COMMENT ON TABLE events IS 'One row per Campaign webhook event, stored exactly once.';
COMMENT ON COLUMN events.event_key IS 'Campaign''s event id, or sha256:<hex> of the canonical event when it has none';
COMMENT ON COLUMN events.payload IS 'The event as received, including fields without a column';

CREATE INDEX events_created_at ON events (created_at);
CREATE INDEX events_mailing ON events (mailing_id, type);
CREATE INDEX events_recipient ON events (recipient_id);
CREATE INDEX events_received_at ON events USING brin (received_at);

CREATE TABLE quarantine (
    id                 bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind               text        NOT NULL CHECK (kind IN ('body', 'event')),
    reason             text        NOT NULL,
    content            bytea       NOT NULL,      -- the raw body, or the event re-serialised
    -- The sender retries anything but 200 every 10 s for three days; the same bad content is
    -- kept once and counted, not stored per retry.
    content_sha256     bytea       NOT NULL UNIQUE,
    received_at        timestamptz NOT NULL DEFAULT now(),
    last_received_at   timestamptz NOT NULL DEFAULT now(),
    times_received     integer     NOT NULL DEFAULT 1
);

COMMENT ON TABLE quarantine IS 'Content that could not be stored as an event, with the reason; replayable.';
