-- Re-delivered batches, recognised before they are parsed or validated (receiver.storage.deliveries).
--
-- Campaign re-sends a whole batch whenever it did not get our 200 (a timeout, a lost answer, a
-- restart). A row here says: a body with this digest was committed whole, every event of it
-- stored as an event (none quarantined), so answering its re-delivery 200 at once keeps the
-- promise. The row is written by the very statement that stores the batch (same transaction:
-- both or neither), and only for batches without quarantined events, which take the full path
-- again (their quarantine rows count each delivery).
--
-- Numbered 007: 006 is taken by another branch's migration. Rows live four days
-- (receiver.storage.deliveries.LIFETIME, longer than the sender's three-day retry window),
-- deleted by `receiver maintain` and by every worker's hourly upkeep; a body re-sent after
-- that is simply validated again and its events found as duplicates.
CREATE TABLE deliveries (
    digest      bytea       PRIMARY KEY,  -- BLAKE2b-256 of the request body as received
    events      integer     NOT NULL,     -- events in the batch (all stored or duplicates)
    counts      jsonb       NOT NULL,     -- events per type label, for the duplicate metrics
    received_at timestamptz NOT NULL DEFAULT now()
);
-- Deleted by age in insertion order: a BRIN index costs the batch statement almost nothing.
CREATE INDEX deliveries_received_at ON deliveries USING brin (received_at);
