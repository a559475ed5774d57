-- 010: what Campaign sends, learned per client (receiver/storage/shapes.py), so that a change in
-- it is noticed: a new event type, a new field, a field whose JSON kind changed, a new value of
-- an enumeration the reports depend on, a type that used to arrive daily and went silent.
--
-- Learned off the request path: a pass (every web worker's minutely upkeep, one at a time, and
-- `receiver maintain`) reads the events stored since its place in the events feed (events.xid,
-- migration 008) and counts what it finds here, in the same transaction as it moves its place,
-- so every stored event is counted once. Small tables: a row per (client, type), per field and
-- JSON kind, per enumeration value; nothing personal is kept (examples are masked).

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
